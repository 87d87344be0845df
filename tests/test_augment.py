"""Augmented copies of training audio and evaluation's corruptions: seeded, cached, of the original's length,
at the SNR asked for, and leaving the caller's random generators alone."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from emotion.data import augment
from emotion.data.audio import load_audio, mono_at_rate
from emotion.data.augment import augmented_items, condition_problems, corrupted_items
from emotion.data.corpora import load_corpus
from emotion.data.corpus import Item
from emotion.data.scan import usable_corpus
from emotion.features.acoustic_cache import AcousticCache
from emotion.models.grid import FrameGrid
from emotion.settings import AugmentSettings, JobSettings, SettingsError
from emotion.training.loop import augmented_copies, make_datasets, make_loader
from tests.conftest import CONF, SMALL_DEMO, compose_config

SAMPLE_RATE = 16_000
OPTIONS = sorted(path.stem for path in (CONF / "augment").glob("*.yaml"))
# Two small rooms with short reverberation: simulated in a fraction of a second.
QUICK_ROOMS = ["augment.rooms=2", "augment.rt60_s=[0.3,0.4]"]


def settings(option: str = "noise", *overrides: str) -> AugmentSettings:
    return AugmentSettings.of(compose_config([f"augment={option}", *overrides]).augment)


def voiced(seconds: float, rng: np.random.Generator, silence_s: float = 0.0) -> np.ndarray:
    """A vowel-like signal (harmonics of a gliding F0, syllable-rate loudness) followed by `silence_s` of zeros."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    harmonics = sum(np.sin(h * phase) / h for h in range(1, 12))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    wave = 0.1 * harmonics * syllables * np.hanning(len(t)) ** 0.2
    return np.concatenate([wave, np.zeros(int(silence_s * SAMPLE_RATE))]).astype(np.float32)


@pytest.fixture
def items(tmp_path) -> list[Item]:
    """Three utterances of odd lengths, one of them stored at 22.05 kHz (read back resampled)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "corpus"
    folder.mkdir()
    made = []
    for index, (seconds, rate) in enumerate([(1.0, SAMPLE_RATE), (1.37, SAMPLE_RATE), (0.81, 22_050)]):
        path = folder / f"utt{index}.wav"
        wave = mono_at_rate(voiced(seconds, rng, silence_s=0.4), SAMPLE_RATE, rate)
        sf.write(path, wave, rate, subtype="FLOAT")
        made.append(
            Item(f"spk{index % 2}_utt{index}", path, f"spk{index % 2}", (1.0 + index, 2.5, 3.0), fold=index + 1)
        )
    return made


def audio(item: Item) -> np.ndarray:
    return load_audio(item.path, SAMPLE_RATE)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Signal power over the power of what was added, in dB."""
    return float(
        10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    )


def test_copies_are_items_like_their_originals_with_their_own_ids_and_files(items, tmp_path):
    copies = augmented_items(items, settings("noise", "augment.copies=3"), SAMPLE_RATE, tmp_path / "cache")
    assert [copy.id for copy in copies[:3]] == [f"{items[0].id}~aug{k}" for k in (1, 2, 3)]
    assert len(copies) == 9 and len({copy.path for copy in copies}) == 9
    for index, copy in enumerate(copies):
        original = items[index // 3]
        assert dataclasses.replace(copy, id=original.id, path=original.path) == original  # speaker, labels, fold
        assert copy.path.is_relative_to(tmp_path / "cache" / "augment") and copy.path.suffix == ".wav"


def test_no_copies_when_copies_is_zero_as_with_augment_none(items, tmp_path):
    assert augmented_items(items, settings("none"), SAMPLE_RATE, tmp_path / "cache") == []
    assert augmented_items(items, settings("noise", "augment.copies=0"), SAMPLE_RATE, tmp_path / "cache") == []


def test_a_copy_is_the_same_bytes_for_the_same_seed_whatever_the_order_and_the_other_items(items, tmp_path):
    chosen = settings("noise")
    forward = augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "one")
    backward = augmented_items(items[::-1], chosen, SAMPLE_RATE, tmp_path / "two")
    alone = augmented_items(items[1:2], chosen, SAMPLE_RATE, tmp_path / "three")
    by_id = {copy.id: copy.path.read_bytes() for copy in backward}
    assert {copy.id: copy.path.read_bytes() for copy in forward} == by_id
    assert [copy.path.read_bytes() for copy in alone] == [by_id[f"{items[1].id}~aug{k}"] for k in (1, 2)]


def test_another_k_or_seed_gives_other_audio(items, tmp_path):
    first, second = augmented_items(items[:1], settings("noise"), SAMPLE_RATE, tmp_path / "cache")
    reseeded, _ = augmented_items(items[:1], settings("noise", "augment.seed=1"), SAMPLE_RATE, tmp_path / "cache")
    clean = audio(items[0])
    assert not np.allclose(audio(first), audio(second), atol=1e-4)
    assert not np.allclose(audio(first), audio(reseeded), atol=1e-4)
    assert not np.allclose(audio(first), clean, atol=1e-4)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_keeps_each_copy_exactly_as_long_as_its_original(option, items, tmp_path):
    copies = augmented_items(items, settings(option, *QUICK_ROOMS), SAMPLE_RATE, tmp_path / "cache")
    for copy in copies:
        original = next(item for item in items if copy.id.startswith(f"{item.id}~"))
        assert sf.info(copy.path).samplerate == SAMPLE_RATE and sf.info(copy.path).channels == 1
        assert len(audio(copy)) == len(audio(original))
        assert np.all(np.isfinite(audio(copy)))


def test_noise_copies_are_at_an_snr_inside_the_configured_range(items, tmp_path):
    chosen = settings("noise", "augment.snr_db=[8,12]", "augment.copies=4")
    copies = augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")
    realised = [snr_db(audio(items[index // 4]), audio(copy)) for index, copy in enumerate(copies)]
    assert all(8 - 0.01 <= value <= 12 + 0.01 for value in realised), realised
    assert max(realised) - min(realised) > 0.5  # drawn per copy, not one level for all


@pytest.mark.parametrize("snr", [10, 0, -5])
def test_snr_conditions_add_noise_at_exactly_their_snr(snr, items, tmp_path):
    corrupted = corrupted_items(items, f"snr{snr}", 0, SAMPLE_RATE, tmp_path / "cache")
    assert [item.id for item in corrupted] == [item.id for item in items]
    for clean, noisy in zip(items, corrupted, strict=True):
        assert abs(snr_db(audio(clean), audio(noisy)) - snr) < 0.5


def test_an_utterance_gets_the_same_noise_at_every_snr_only_louder(items, tmp_path):
    clean = audio(items[0])
    noise = {
        snr: audio(corrupted_items(items[:1], f"snr{snr}", 0, SAMPLE_RATE, tmp_path)[0]) - clean for snr in (0, 20)
    }
    np.testing.assert_allclose(noise[20] * 10, noise[0], atol=1e-4)


def test_noise_comes_from_the_noise_folder_when_one_is_given(items, tmp_path):
    noise_dir = tmp_path / "noises" / "deeper"
    noise_dir.mkdir(parents=True)
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE)  # nothing like generated noise
    sf.write(noise_dir / "hum.flac", hum.astype(np.float32), SAMPLE_RATE)
    corrupted = corrupted_items(items[:1], "snr5", 0, SAMPLE_RATE, tmp_path / "cache", noise_dir=tmp_path / "noises")
    added = audio(corrupted[0]) - audio(items[0])
    spectrum = np.abs(np.fft.rfft(added))
    assert abs(np.fft.rfftfreq(len(added), 1 / SAMPLE_RATE)[spectrum.argmax()] - 50) < 2
    assert abs(snr_db(audio(items[0]), audio(corrupted[0])) - 5) < 0.5
    chosen = settings("noise", f"augment.noise_dir={tmp_path / 'noises'}", "augment.snr_db=[3,6]")
    for index, copy in enumerate(augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")):
        assert 3 - 0.01 <= snr_db(audio(items[index // 2]), audio(copy)) <= 6 + 0.01


def tail_to_speech_db(wave: np.ndarray, speech_samples: int) -> float:
    """Energy after the speech's end (its last 0.3 s of silence) relative to the speech's, in dB."""
    tail = wave[speech_samples + int(0.1 * SAMPLE_RATE) :]
    return float(10 * np.log10(np.mean(tail.astype(np.float64) ** 2) / np.mean(wave[:speech_samples] ** 2) + 1e-30))


def test_reverberation_carries_energy_past_the_end_of_speech_at_the_speech_level(items, tmp_path):
    speech = int(1.0 * SAMPLE_RATE)  # items[0]: 1 s of speech, then 0.4 s of silence
    clean = audio(items[0])
    assert tail_to_speech_db(clean, speech) < -100
    for copy in augmented_items(items[:1], settings("reverb", *QUICK_ROOMS), SAMPLE_RATE, tmp_path / "cache"):
        reverberated = audio(copy)
        assert -60 < tail_to_speech_db(reverberated, speech) < -3
        assert abs(10 * np.log10(np.mean(reverberated**2) / np.mean(clean**2))) < 0.1  # the level is kept


def test_impulse_responses_come_from_the_folder_when_one_is_given(items, tmp_path):
    rir_dir = tmp_path / "rirs"
    rir_dir.mkdir()
    decay = np.exp(-np.arange(SAMPLE_RATE // 2) / (0.05 * SAMPLE_RATE)) * np.random.default_rng(1).normal(size=8000)
    sf.write(rir_dir / "hall.wav", decay.astype(np.float32), SAMPLE_RATE)
    (copy, _) = augmented_items(
        items[:1], settings("reverb", f"augment.rir_dir={rir_dir}"), SAMPLE_RATE, tmp_path / "cache"
    )
    assert -60 < tail_to_speech_db(audio(copy), SAMPLE_RATE) < -3
    assert not list((tmp_path / "cache" / "augment").glob("rooms-*"))  # no room was simulated


@pytest.mark.slow
def test_the_reverb_condition_reverberates_every_utterance(items, tmp_path):
    for clean, corrupted in zip(items, corrupted_items(items, "reverb", 0, SAMPLE_RATE, tmp_path), strict=True):
        speech = len(audio(clean)) - int(0.4 * SAMPLE_RATE)
        assert corrupted.id == clean.id and len(audio(corrupted)) == len(audio(clean))
        assert -60 < tail_to_speech_db(audio(corrupted), speech) < -3


@pytest.mark.parametrize("condition", ["codec", "codec32", "telephone"])
def test_channel_conditions_degrade_the_audio_and_keep_its_length(condition, items, tmp_path):
    for clean, corrupted in zip(items, corrupted_items(items, condition, 0, SAMPLE_RATE, tmp_path), strict=True):
        assert len(audio(corrupted)) == len(audio(clean))
        assert 0 < snr_db(audio(clean), audio(corrupted)) < 40  # changed, and still the same speech


def test_the_telephone_condition_removes_what_is_outside_300_to_3400_hz(items, tmp_path):
    (corrupted,) = corrupted_items(items[:1], "telephone", 0, SAMPLE_RATE, tmp_path)
    spectrum = np.abs(np.fft.rfft(audio(corrupted))) ** 2
    frequencies = np.fft.rfftfreq(len(audio(corrupted)), 1 / SAMPLE_RATE)
    outside = spectrum[(frequencies < 200) | (frequencies > 4000)].sum()
    assert outside / spectrum.sum() < 0.01


def test_existing_files_are_reused_and_not_written_again(items, tmp_path, monkeypatch):
    chosen = settings("full", *QUICK_ROOMS)
    copies = augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")
    corrupted = corrupted_items(items, "snr5", 0, SAMPLE_RATE, tmp_path / "cache")
    written = {item.path: item.path.stat().st_mtime_ns for item in [*copies, *corrupted]}

    def no_writing(job):
        raise AssertionError(f"{job[1]} written again")

    monkeypatch.setattr(augment, "_write_versions", no_writing)
    assert augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache") == copies
    assert corrupted_items(items, "snr5", 0, SAMPLE_RATE, tmp_path / "cache") == corrupted
    assert {path: path.stat().st_mtime_ns for path in written} == written


def test_what_changes_the_audio_changes_the_files_and_the_number_of_copies_does_not(items, tmp_path):
    cache = tmp_path / "cache"
    paths = [copy.path for copy in augmented_items(items, settings("noise"), SAMPLE_RATE, cache)]
    more = augmented_items(items, settings("noise", "augment.copies=3"), SAMPLE_RATE, cache)
    assert [copy.path for copy in more if not copy.id.endswith("~aug3")] == paths
    for changed in (["augment.snr_db=[5,21]"], ["augment.seed=7"], ["augment.gain_p=0.5"]):
        other = augmented_items(items, settings("noise", *changed), SAMPLE_RATE, cache)
        assert not {copy.path for copy in other} & set(paths), changed
    assert not {copy.path for copy in augmented_items(items, settings("noise"), 8_000, cache)} & set(paths)
    renamed = [dataclasses.replace(items[0], id="another")]
    assert augmented_items(renamed, settings("noise"), SAMPLE_RATE, cache)[0].path not in paths


def test_a_rewritten_source_file_gets_new_copies(items, tmp_path):
    (first, _) = augmented_items(items[:1], settings("noise"), SAMPLE_RATE, tmp_path / "cache")
    sf.write(items[0].path, 0.5 * audio(items[0]), SAMPLE_RATE, subtype="FLOAT")
    (second, _) = augmented_items(items[:1], settings("noise"), SAMPLE_RATE, tmp_path / "cache")
    assert second.path != first.path and first.path.is_file()
    assert abs(10 * np.log10(np.mean(audio(first) ** 2) / np.mean(audio(second) ** 2)) - 6.02) < 0.1


def test_a_noise_folder_with_another_recording_gives_other_files(items, tmp_path):
    noise_dir = tmp_path / "noises"
    noise_dir.mkdir()
    rng = np.random.default_rng(2)
    sf.write(noise_dir / "a.wav", rng.normal(0, 0.1, SAMPLE_RATE).astype(np.float32), SAMPLE_RATE)
    chosen = settings("noise", f"augment.noise_dir={noise_dir}")
    before = {copy.path for copy in augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")}
    sf.write(noise_dir / "b.wav", rng.normal(0, 0.1, SAMPLE_RATE).astype(np.float32), SAMPLE_RATE)
    after = {copy.path for copy in augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")}
    assert not before & after


def test_the_callers_random_generators_are_where_they_were(items, tmp_path):
    random.seed(123)
    np.random.seed(456)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    augmented_items(items, settings("full", *QUICK_ROOMS), SAMPLE_RATE, tmp_path / "cache")
    corrupted_items(items, "snr0", 0, SAMPLE_RATE, tmp_path / "cache")
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_clean_is_the_very_same_items(items, tmp_path):
    clean = corrupted_items(items, "clean", 0, SAMPLE_RATE, tmp_path / "cache")
    assert len(clean) == len(items) and all(a is b for a, b in zip(clean, items, strict=True))
    assert not (tmp_path / "cache").exists()


def test_a_condition_is_the_same_audio_for_the_same_seed_and_other_audio_for_another(items, tmp_path):
    one, two = (corrupted_items(items, "snr10", 0, SAMPLE_RATE, tmp_path / name) for name in ("one", "two"))
    assert [item.path.read_bytes() for item in one] == [item.path.read_bytes() for item in two]
    reseeded = corrupted_items(items, "snr10", 1, SAMPLE_RATE, tmp_path / "one")
    assert not np.allclose(audio(one[0]), audio(reseeded[0]), atol=1e-4)


def test_an_unknown_condition_is_named_with_the_forms_there_are(items, tmp_path):
    with pytest.raises(ValueError, match=r"evaluate.conditions: 'snr-x' is not a condition; use clean, snrN"):
        corrupted_items(items, "snr-x", 0, SAMPLE_RATE, tmp_path)
    problems = condition_problems(["clean", "snr10", "snr-5", "reverb", "codec", "codec32", "telephone", "loud"])
    assert problems == [f"evaluate.conditions: 'loud' is not a condition; use {augment.CONDITION_FORMS}"]
    assert "MP3 bitrates are 8, 16" in condition_problems(["codec17"])[0]
    assert "named twice" in condition_problems(["snr0", "snr0"])[0]
    assert "must be a list" in condition_problems("snr10")[0]
    assert condition_problems([]) == [] and condition_problems(OmegaConf.create({"c": ["clean", "snr0"]}).c) == []


def test_an_empty_noise_folder_is_named(items, tmp_path):
    (tmp_path / "empty").mkdir()
    chosen = settings("noise", f"augment.noise_dir={tmp_path / 'empty'}")
    with pytest.raises(ValueError, match=r"augment.noise_dir=.*empty.*holds no audio files"):
        augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "cache")


@pytest.mark.slow
def test_copies_written_by_several_processes_are_the_same_bytes(items, tmp_path):
    chosen = settings("full", *QUICK_ROOMS)
    alone = augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "one")
    together = augmented_items(items, chosen, SAMPLE_RATE, tmp_path / "two", workers=2)
    assert [copy.path.read_bytes() for copy in alone] == [copy.path.read_bytes() for copy in together]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_augment_option_composes_with_train_into_its_settings(option):
    job = JobSettings.of(compose_config([f"augment={option}"]))
    assert job.augment.name == option
    assert job.augment.copies == (0 if option == "none" else 2)
    assert set(compose_config([f"augment={option}"]).augment) == {f.name for f in dataclasses.fields(AugmentSettings)}


def test_training_does_not_augment_by_default_and_bad_values_are_named():
    assert JobSettings.of(compose_config()).augment.copies == 0
    with pytest.raises(SettingsError) as error:
        settings("noise", "augment.snr_db=[20,5]", "augment.noise_p=1.5", "augment.copies=-1")
    assert str(error.value).splitlines() == [
        "augment.copies=-1: must be a whole number, 0 or more",
        "augment.noise_p=1.5: must be in [0.0, 1.0]",
        "augment.snr_db=[20, 5]: must be [low, high] in dB with low ≤ high, e.g. [5, 20]",
    ]


@pytest.mark.slow
def test_a_job_trains_on_copies_of_its_training_split_only_and_the_same_seed_gives_the_same_batches(cache_dir):
    def first_batch(*overrides: str):
        settings_ = JobSettings.of(
            compose_config(
                [
                    "experiment=demo",
                    *SMALL_DEMO,
                    "encoder.freeze=false",
                    "augment=noise",
                    "augment.copies=1",
                    *overrides,
                ]
            )
        )
        data = settings_.data
        corpus, durations = usable_corpus(load_corpus(data), data, cache_dir)
        copies = augmented_copies(corpus, durations, settings_, workers=1)
        model_settings, grid = settings_.model, FrameGrid(400, 320)
        cache = AcousticCache.for_model(cache_dir, data.sample_rate, grid, model_settings)
        acoustic = cache.ensure([item.path for item in [*corpus.splits.all, *copies]], workers=1)
        datasets = make_datasets(corpus, durations, acoustic, grid, settings_, copies=copies)
        train = datasets[0]
        train.set_epoch(1)
        loader = make_loader(train, settings_, torch.device("cpu"), workers=0, shuffle=True)
        loader.batch_sampler.set_epoch(1)
        return corpus, datasets, next(iter(loader))

    corpus, (train, val, test), batch = first_batch()
    originals = {item.id: item for item in corpus.splits.train}
    augmented = [item for item in train.items if "~aug" in item.id]
    assert len(augmented) == len(originals) and len(train.items) == 2 * len(originals)
    for copy in augmented:
        original = originals[copy.id.split("~aug")[0]]
        assert copy.path != original.path and (copy.speaker, copy.labels) == (original.speaker, original.labels)
    # Validation and test hear the corpus's own files, never a copy.
    assert val.items == corpus.splits.val and test.items == corpus.splits.test
    _, _, again = first_batch()
    torch.testing.assert_close(again.speech, batch.speech)
    torch.testing.assert_close(again.prosody, batch.prosody)
    _, _, reseeded = first_batch("augment.seed=1")
    assert reseeded.indices.tolist() == batch.indices.tolist()  # the same items, heard through other noise
    copies_in_batch = [i for i, index in enumerate(batch.indices.tolist()) if "~aug" in train.items[index].id]
    assert copies_in_batch and not torch.equal(reseeded.speech[copies_in_batch], batch.speech[copies_in_batch])
