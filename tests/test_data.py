"""Audio decoding, prosody contours and batches."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import soxr
import torch
from scipy.signal import butter, sosfiltfilt

from emotion.data.audio import Clip, load_audio
from emotion.data.corpus import Item, LabelScale
from emotion.features.acoustic import CONTOURS, EGEMAPS_FUNCTIONALS, FUNCTIONALS, PROSODY_FEATURES, prosody_contours
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.dataset import UtteranceDataset, collate
from emotion.models.grid import FrameGrid
from tests.trees import speech

GRID = FrameGrid(window=400, hop=320)
F0, F0_RE_MEDIAN, VOICING, INTENSITY = (PROSODY_FEATURES.index(name) for name in PROSODY_FEATURES)
SR = 16000


def tone(freq_hz, seconds, sr=SR, amplitude=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def in_band_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Relative RMS difference below 7 kHz: resampling filters may only touch the band next to Nyquist."""
    lowpass = butter(8, 7000, fs=SR, output="sos")
    actual, expected = sosfiltfilt(lowpass, actual), sosfiltfilt(lowpass, expected)
    return float(np.sqrt(np.mean((actual - expected) ** 2) / np.mean(expected**2)))


def test_a_48khz_stereo_int16_file_loads_as_its_16khz_mono_original(tmp_path):
    original, _ = speech(seed=1)
    upsampled = soxr.resample(original, SR, 48000, quality="VHQ")
    sf.write(tmp_path / "stereo.wav", np.stack([upsampled, upsampled], axis=1), 48000, subtype="PCM_16")
    loaded = load_audio(tmp_path / "stereo.wav", SR)
    assert loaded.dtype == np.float32 and len(loaded) == len(original)
    assert in_band_error(loaded, original) < 0.01


def test_a_22050hz_float_file_loads_as_its_16khz_original(tmp_path):
    original, _ = speech(seed=2)
    sf.write(tmp_path / "float.wav", soxr.resample(original, SR, 22050, quality="VHQ"), 22050, subtype="FLOAT")
    loaded = load_audio(tmp_path / "float.wav", SR)
    assert abs(len(loaded) - len(original)) <= 1
    n = min(len(loaded), len(original))
    assert in_band_error(loaded[:n], original[:n]) < 0.01


def test_a_stretch_or_clip_is_read_alone_and_equals_that_part_of_the_whole_file(tmp_path):
    original, _ = speech(seed=3)
    sf.write(tmp_path / "same_rate.wav", original, SR, subtype="FLOAT")
    sf.write(tmp_path / "other_rate.wav", soxr.resample(original, SR, 44100, quality="VHQ"), 44100, subtype="FLOAT")
    start, length = 5000, 8000
    for name in ("same_rate.wav", "other_rate.wav"):
        whole = load_audio(tmp_path / name, SR)
        stretch = load_audio(tmp_path / name, SR, start, length)
        clip = load_audio(Clip(tmp_path / name, start / SR, (start + length) / SR), SR)
        inner = load_audio(Clip(tmp_path / name, 0.1, 2.0), SR, start=1000, length=2000)  # a stretch of a clip
        assert len(stretch) == len(clip) == length and len(inner) == 2000
        if name == "same_rate.wav":  # the very samples
            np.testing.assert_array_equal(stretch, whole[start : start + length])
            np.testing.assert_array_equal(clip, stretch)
            np.testing.assert_array_equal(inner, whole[2600:4600])
        else:  # resampled on the whole file's sample grid, with a margin of context: the same to float rounding
            np.testing.assert_allclose(stretch, whole[start : start + length], atol=1e-5)
            np.testing.assert_allclose(clip, whole[start : start + length], atol=1e-5)
    # A stretch running past the end of the file stops there.
    assert len(load_audio(tmp_path / "same_rate.wav", SR, len(original) - 100, 1000)) == 100


def test_a_200hz_tone_is_one_octave_above_100hz_voiced_on_every_frame():
    wave = tone(200, 1.0)
    contours = prosody_contours(wave, SR, GRID)
    assert contours.shape == (GRID.count(len(wave)), len(PROSODY_FEATURES))
    inner = contours[3:-3]
    np.testing.assert_allclose(inner[:, F0], 1.0, atol=0.01)  # 12·log2(200/100) semitones, one unit per octave
    np.testing.assert_allclose(inner[:, F0_RE_MEDIAN], 0.0, atol=0.01)  # a flat contour
    assert (inner[:, VOICING] == 1).all()
    louder = prosody_contours(tone(200, 1.0, amplitude=0.6), SR, GRID)
    np.testing.assert_allclose(louder[3:-3, INTENSITY] - inner[:, INTENSITY], 20 * np.log10(2) / 20, atol=0.01)


def test_a_glide_rises_around_its_own_median():
    f0 = np.geomspace(150, 300, SR)  # one octave in one second: log2(f0 / 150) = t
    glide = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / SR)).astype(np.float32)
    contours = prosody_contours(glide, SR, GRID)
    times = GRID.centres_s(len(contours), SR)
    inner = slice(3, -3)
    np.testing.assert_allclose(contours[inner, F0_RE_MEDIAN], times[inner] - 0.5, atol=0.03)
    np.testing.assert_allclose(contours[inner, F0], np.log2(150 / 100) + times[inner], atol=0.03)


def test_silence_is_unvoiced_and_too_short_audio_gives_flat_contours():
    silence = prosody_contours(np.zeros(SR, dtype=np.float32), SR, GRID)
    assert not silence[:, [F0, F0_RE_MEDIAN, VOICING]].any()
    short = prosody_contours(tone(200, 0.05), SR, GRID)
    assert short.shape == (GRID.count(800), len(PROSODY_FEATURES)) and not short.any()


def test_label_scale_round_trips():
    scale = LabelScale(1.0, 5.0)
    np.testing.assert_allclose(scale.normalise([1.0, 3.0, 5.0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(scale.denormalise(scale.normalise([1.7, 4.2])), [1.7, 4.2], rtol=1e-6)


def write_tones(tmp_path, seconds_list, functionals=None):
    items = []
    for i, seconds in enumerate(seconds_list):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(150 + 50 * i, seconds), SR)
        items.append(Item(id=str(i), path=path, speaker="x", labels=(1.0, 3.0, 5.0), fold=1))
    cache = AcousticCache(tmp_path / "cache", SR, GRID, [CONTOURS], functionals)
    entries = cache.ensure([item.path for item in items], workers=1)
    return items, [entries[item.path] for item in items]


def unit_labels(items: list[Item]) -> np.ndarray:
    """The items' labels on [0, 1], rated 1–5, as Corpus.labels gives them to a dataset."""
    return np.stack([LabelScale(1, 5).normalise(item.labels) for item in items])


def test_batches_pad_audio_and_contours_keep_lengths_and_carry_each_utterances_functionals(tmp_path):
    items, acoustic = write_tones(tmp_path, (1.0, 1.5), functionals=FUNCTIONALS)
    dataset = UtteranceDataset(items, [1.0, 1.5], acoustic, unit_labels(items), GRID, SR, chunk_seconds=60.0)
    batch = collate([dataset[0], dataset[1]])
    assert batch.speech.shape == (2, 24000)
    assert batch.speech_lengths.tolist() == [16000, 24000]
    assert batch.prosody.shape == (2, GRID.count(24000), len(PROSODY_FEATURES))
    assert not batch.speech[0, 16000:].any() and not batch.prosody[0, GRID.count(16000) :].any()
    torch.testing.assert_close(batch.labels, torch.tensor([[0.0, 0.5, 1.0]] * 2))
    assert batch.functionals.shape == (2, EGEMAPS_FUNCTIONALS)
    torch.testing.assert_close(batch.functionals[1], torch.from_numpy(acoustic[1].read_functionals()))


def test_training_crops_start_on_the_frame_grid_and_carry_the_matching_contours(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)  # every sample pair unique
    sf.write(tmp_path / "noise.wav", noise, SR, subtype="FLOAT")
    items = [Item(id="noise", path=tmp_path / "noise.wav", speaker="x", labels=(1.0, 3.0, 5.0), fold=1)]
    prosody = list(AcousticCache(tmp_path / "cache", SR, GRID, [CONTOURS]).ensure([items[0].path], 1).values())
    full = prosody[0].read_frames()

    def crop(epoch):
        dataset = UtteranceDataset(
            items, [3.0], prosody, unit_labels(items), GRID, SR, chunk_seconds=60.0, crop_seconds=1.0, seed=7
        )
        dataset.set_epoch(epoch)
        return dataset[0]

    starts = set()
    for epoch in range(6):
        example = crop(epoch)
        start = int(np.flatnonzero((noise[:-1] == example["speech"][0]) & (noise[1:] == example["speech"][1]))[0])
        assert start % GRID.hop == 0
        np.testing.assert_array_equal(example["speech"], noise[start : start + SR])
        first_frame = start // GRID.hop
        np.testing.assert_array_equal(example["prosody"], full[first_frame : first_frame + GRID.count(SR)])
        starts.add(start)
    assert len(starts) > 1  # crops move between epochs
    np.testing.assert_array_equal(crop(3)["speech"], crop(3)["speech"])  # and depend only on (seed, epoch, index)


def test_evaluation_chunks_only_utterances_longer_than_the_cap(tmp_path):
    items, prosody = write_tones(tmp_path, (1.0, 2.5))
    dataset = UtteranceDataset(items, [1.0, 2.5], prosody, unit_labels(items), GRID, SR, chunk_seconds=1.0)
    assert [(s.item, s.start) for s in dataset.segments] == [(0, 0), (1, 0), (1, 13440), (1, 26880)]
    chunks = [dataset[i]["speech"] for i in (1, 2, 3)]
    np.testing.assert_array_equal(np.concatenate(chunks), load_audio(items[1].path, SR))
    assert all(start % GRID.hop == 0 for start in (13440, 26880))
