"""The synthetic demo corpus: its shape, its determinism, its cache, and emotions that drive its acoustics."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from emotion.data.audio import load_audio
from emotion.data.corpora import load_corpus
from emotion.data.demo import SAMPLE_RATE, STUDIOS, ensure_demo_corpus, rate
from emotion.features.acoustic import PROSODY_FEATURES, prosody_contours
from emotion.models.grid import FrameGrid
from tests.conftest import compose_config, data_settings

F0, VOICING = PROSODY_FEATURES.index("f0_semitones"), PROSODY_FEATURES.index("voicing")


def read_rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def full_corpus(cache_dir):
    """The corpus `data=demo` uses, in the tests' shared cache."""
    data = compose_config(["data=demo"]).data
    manifest = ensure_demo_corpus(data.root, seed=data.seed, utterances_per_voice=data.utterances_per_voice)
    return manifest, read_rows(manifest)


@pytest.mark.slow
def test_the_corpus_has_ten_voices_in_five_sessions_and_enough_utterances(full_corpus):
    _, rows = full_corpus
    assert len(rows) >= 300
    voices_per_session = Counter(session for session, _ in {(row["fold"], row["speaker"]) for row in rows})
    assert voices_per_session == {str(session): 2 for session in range(1, 6)}
    assert len({row["speaker"] for row in rows}) == 10


@pytest.mark.slow
def test_utterances_are_one_to_four_seconds_of_16khz_audio_with_labels_on_1_to_5(full_corpus):
    manifest, rows = full_corpus
    for row in rows:
        info = sf.info(manifest.parent / row["path"])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert 1.0 <= info.duration <= 4.0
        assert all(1.0 <= float(row[dim]) <= 5.0 for dim in ("arousal", "valence", "dominance"))


@pytest.mark.slow
def test_labels_spread_over_the_scale_and_dominance_follows_arousal_in_part(full_corpus):
    _, rows = full_corpus
    labels = np.array([[float(row[dim]) for dim in ("arousal", "valence", "dominance")] for row in rows])
    assert (labels.std(axis=0) > 0.6).all()
    correlation = np.corrcoef(labels.T)
    assert 0.4 < correlation[0, 2] < 0.8
    assert abs(correlation[0, 1]) < 0.2


def within_voice_correlation(rows, manifest, feature, dimension):
    """Mean over voices of the correlation between a per-utterance acoustic feature and a label."""
    by_voice = {}
    for row in rows:
        by_voice.setdefault(row["speaker"], []).append(row)
    correlations = []
    for voice_rows in by_voice.values():
        values = [feature(load_audio(manifest.parent / row["path"], SAMPLE_RATE)) for row in voice_rows]
        correlations.append(np.corrcoef(values, [float(row[dimension]) for row in voice_rows])[0, 1])
    return float(np.mean(correlations))


def median_f0(wave):
    contours = prosody_contours(wave, SAMPLE_RATE, FrameGrid(400, 320))
    return float(np.median(contours[contours[:, VOICING] > 0, F0]))


def level_db(wave):
    return float(10 * np.log10(np.mean(wave**2)))


def f0_slope(wave):
    contours = prosody_contours(wave, SAMPLE_RATE, FrameGrid(400, 320))
    voiced = np.flatnonzero(contours[:, VOICING] > 0)
    return float(np.polyfit(voiced * 0.02, contours[voiced, F0], 1)[0])


@pytest.mark.slow
def test_arousal_raises_pitch_and_loudness_and_valence_bends_the_contour_upwards(full_corpus):
    manifest, rows = full_corpus
    assert within_voice_correlation(rows, manifest, median_f0, "arousal") > 0.5
    assert within_voice_correlation(rows, manifest, level_db, "arousal") > 0.5
    assert within_voice_correlation(rows, manifest, f0_slope, "valence") > 0.3


def digest(manifest):
    h = hashlib.sha256(manifest.read_bytes())
    for row in read_rows(manifest):
        h.update((manifest.parent / row["path"]).read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_from_the_seed(tmp_path):
    first = ensure_demo_corpus(tmp_path / "a", seed=3, utterances_per_voice=2)
    second = ensure_demo_corpus(tmp_path / "b", seed=3, utterances_per_voice=2)
    other = ensure_demo_corpus(tmp_path / "c", seed=4, utterances_per_voice=2)
    assert digest(first) == digest(second)
    assert digest(first) != digest(other)


def test_an_incomplete_corpus_is_regenerated_and_a_complete_one_reused(tmp_path):
    manifest = ensure_demo_corpus(tmp_path / "demo", seed=0, utterances_per_voice=2)
    original = digest(manifest)
    first_wav = manifest.parent / read_rows(manifest)[0]["path"]
    mtime = first_wav.stat().st_mtime_ns
    assert ensure_demo_corpus(tmp_path / "demo", seed=0, utterances_per_voice=2) == manifest
    assert first_wav.stat().st_mtime_ns == mtime  # reused, not rewritten

    first_wav.unlink()
    ensure_demo_corpus(tmp_path / "demo", seed=0, utterances_per_voice=2)
    assert digest(manifest) == original
    assert not list(tmp_path.glob("demo.tmp-*"))


def test_a_folder_that_holds_something_else_is_never_replaced(tmp_path):
    precious = tmp_path / "IEMOCAP_full_release"
    (precious / "Session1").mkdir(parents=True)
    (precious / "Session1" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds files but no demo corpus.*data=iemocap"):
        ensure_demo_corpus(precious, seed=0, utterances_per_voice=2)
    assert (precious / "Session1" / "notes.txt").read_text() == "keep me"


def test_a_demo_corpus_of_another_generator_version_is_replaced(tmp_path):
    manifest = ensure_demo_corpus(tmp_path / "demo", seed=0, utterances_per_voice=2)
    (manifest.parent / "generator.json").write_text('{"version": 0}')
    ensure_demo_corpus(tmp_path / "demo", seed=0, utterances_per_voice=2)
    assert '"version": 0' not in (manifest.parent / "generator.json").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]  # no staging or stale folders left


def small_studio_corpus(studio_option: str, cache_dir):
    """data=<studio_option> with 4 utterances per voice, in the tests' shared cache: its manifest and rows."""
    data = data_settings([f"data={studio_option}", "data.utterances_per_voice=4"])
    manifest = ensure_demo_corpus(data.root, data.seed, data.utterances_per_voice, data.studio)
    return manifest, read_rows(manifest)


def median_level_db(manifest, rows) -> float:
    """Median level of the corpus's utterances, at the model's sample rate."""
    return float(np.median([level_db(load_audio(manifest.parent / row["path"], SAMPLE_RATE)) for row in rows]))


def high_band_share(manifest, rows) -> float:
    """Median share of each utterance's energy above 4 kHz."""
    shares = []
    for row in rows:
        spectrum = np.abs(np.fft.rfft(load_audio(manifest.parent / row["path"], SAMPLE_RATE))) ** 2
        frequencies = np.fft.rfftfreq(2 * (len(spectrum) - 1), 1 / SAMPLE_RATE)
        shares.append(spectrum[frequencies > 4000].sum() / spectrum.sum())
    return float(np.median(shares))


def test_the_second_studio_records_other_voices_quieter_and_band_limited_and_rates_them_on_1_to_7(cache_dir):
    first_manifest, first = small_studio_corpus("demo", cache_dir)
    second_manifest, second = small_studio_corpus("demo_b", cache_dir)

    assert list(second[0]) == ["id", "path", "speaker", "fold", "arousal", "valence"]  # no dominance rated
    assert not {row["speaker"] for row in first} & {row["speaker"] for row in second}
    assert sf.info(second_manifest.parent / second[0]["path"]).samplerate == 22_050
    labels = np.array([[float(row["arousal"]), float(row["valence"])] for row in second])
    assert labels.min() >= 1.0 and labels.max() <= 7.0 and (labels > 5.0).any()  # beyond the first's scale
    assert median_level_db(second_manifest, second) < median_level_db(first_manifest, first) - 6  # 12 dB quieter
    assert high_band_share(second_manifest, second) < 0.2 * high_band_share(first_manifest, first)


def test_the_second_studio_is_a_corpus_of_its_own_name_scale_and_dimensions(cache_dir):
    corpus = load_corpus(data_settings(["data=demo_b", "data.utterances_per_voice=4", "data.fold=2"]))
    assert (corpus.name, corpus.dimensions) == ("demo-b", ("arousal", "valence"))
    assert (corpus.scale.low, corpus.scale.high) == (1, 7)
    assert {item.fold for item in corpus.splits.test} == {2}


def test_a_studio_rates_the_expressed_emotion_by_the_affine_map_between_scales():
    second = STUDIOS["b"]
    assert [rate(value, second) for value in (1.0, 3.0, 5.0, 2.5)] == [1.0, 4.0, 7.0, 3.25]
    assert [rate(value, STUDIOS["a"]) for value in (1.0, 3.17, 5.0)] == [1.0, 3.17, 5.0]


def test_the_first_studios_corpus_is_unchanged_by_the_second(cache_dir):
    """Its generator record names no studio, so that corpora generated before the second existed stay valid."""
    manifest, _ = small_studio_corpus("demo", cache_dir)
    assert "studio" not in json.loads((manifest.parent / "generator.json").read_text())
