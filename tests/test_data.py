"""Audio decoding, prosody contours, the fold protocol and batches."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion.data.audio import load_audio, random_crop
from emotion.data.corpus import Item, LabelScale, leave_one_session_out
from emotion.data.dataset import UtteranceDataset, collate
from emotion.data.prosody import PROSODY_FEATURES, FrameGrid, prosody_contours

GRID = FrameGrid(window=400, hop=320)
F0, F0_RE_MEDIAN, VOICING, INTENSITY = (PROSODY_FEATURES.index(name) for name in PROSODY_FEATURES)
SR = 16000


def tone(freq_hz, seconds, sr=SR, amplitude=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_stereo_48khz_int16_loads_as_the_16khz_mono_signal(tmp_path):
    mono = tone(220, 1.0, sr=48000)
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], axis=1), 48000, subtype="PCM_16")
    loaded = load_audio(tmp_path / "stereo.wav", SR)
    expected = tone(220, 1.0)
    assert loaded.dtype == np.float32 and loaded.shape == expected.shape
    np.testing.assert_allclose(loaded[200:-200], expected[200:-200], atol=2e-3)


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


def items_in_sessions(n_sessions=5):
    return [
        Item(id=f"s{s}{sex}{i}", path=None, speaker=f"s{s}{sex}", fold=s, labels=(3.0, 3.0, 3.0))
        for s in range(1, n_sessions + 1)
        for sex in "FM"
        for i in range(3)
    ]


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_fold_k_tests_session_k_validates_on_the_next_and_trains_on_the_rest(fold):
    splits = leave_one_session_out(items_in_sessions(), fold, "demo")
    next_session = fold % 5 + 1
    assert {item.fold for item in splits.test} == {fold}
    assert {item.fold for item in splits.val} == {next_session}
    assert {item.fold for item in splits.train} == set(range(1, 6)) - {fold, next_session}
    assert not {item.speaker for item in splits.train} & {item.speaker for item in splits.test}


def test_a_fold_outside_the_corpus_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"data.fold=6 but demo has folds 1–5.*data.fold=1"):
        leave_one_session_out(items_in_sessions(), 6, "demo")


def test_label_scale_round_trips():
    scale = LabelScale(1.0, 5.0)
    np.testing.assert_allclose(scale.normalise([1.0, 3.0, 5.0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(scale.denormalise(scale.normalise([1.7, 4.2])), [1.7, 4.2], rtol=1e-6)


def test_random_crop_is_bounded_and_reproducible():
    wave = np.arange(100, dtype=np.float32)
    crop = random_crop(wave, 30, np.random.default_rng(0))
    assert len(crop) == 30 and np.all(np.diff(crop) == 1)
    np.testing.assert_array_equal(crop, random_crop(wave, 30, np.random.default_rng(0)))
    assert random_crop(wave, 200, np.random.default_rng(0)) is wave


def test_batches_pad_audio_and_contours_and_keep_lengths(tmp_path):
    items = []
    for i, seconds in enumerate((1.0, 1.5)):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(150, seconds), SR)
        items.append(Item(id=str(i), path=path, speaker="x", fold=1, labels=(1.0, 3.0, 5.0)))
    dataset = UtteranceDataset(items, LabelScale(1, 5), GRID, SR)
    batch = collate([dataset[0], dataset[1]])
    assert batch.waves.shape == (2, 24000)
    assert batch.wave_lengths.tolist() == [16000, 24000]
    assert batch.prosody.shape == (2, GRID.count(24000), len(PROSODY_FEATURES))
    assert not batch.waves[0, 16000:].any() and not batch.prosody[0, GRID.count(16000) :].any()
    torch.testing.assert_close(batch.labels, torch.tensor([[0.0, 0.5, 1.0]] * 2))
