"""Acoustic features: eGeMAPS from openSMILE on the encoder's frame grid, what moves them, and their cache."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import opensmile
import pytest
import soundfile as sf

from emotion.data.audio import load_audio
from emotion.data.demo import SAMPLE_RATE, Expression, make_voices, synthesise
from emotion.features.acoustic import (
    CONTOURS,
    EGEMAPS,
    EGEMAPS_FUNCTIONALS,
    EGEMAPS_LLDS,
    FUNCTIONALS,
    egemaps_frames,
    egemaps_functionals,
)
from emotion.features.acoustic_cache import AcousticCache
from emotion.models.grid import FrameGrid
from tests.trees import speech

GRID = FrameGrid(400, 320)
SR = SAMPLE_RATE


def smile(level):
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level)


LLD_NAMES = smile(opensmile.FeatureLevel.LowLevelDescriptors).feature_names
FUNCTIONAL_NAMES = smile(opensmile.FeatureLevel.Functionals).feature_names


def test_the_sets_have_opensmiles_sizes():
    assert (len(LLD_NAMES), len(FUNCTIONAL_NAMES)) == (EGEMAPS_LLDS, EGEMAPS_FUNCTIONALS) == (25, 88)


def test_egemaps_descriptors_on_the_frame_grid_are_opensmiles_own_at_the_nearest_10_ms_frame():
    wave, _ = speech(seed=3)
    aligned = egemaps_frames(wave, SR, GRID)
    assert aligned.shape == (GRID.count(len(wave)), EGEMAPS_LLDS)
    table = smile(opensmile.FeatureLevel.LowLevelDescriptors).process_signal(wave, SR)
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    assert np.allclose(np.diff(starts), 0.01)  # openSMILE's frames: 20 ms long, every 10 ms
    centres = starts + 0.01
    for frame, centre in enumerate(GRID.centres_s(len(aligned), SR)):
        nearest = int(np.argmin(np.abs(centres - centre)))
        np.testing.assert_array_equal(aligned[frame], table.iloc[nearest].to_numpy(dtype=np.float32))


def test_functionals_are_opensmiles_of_the_whole_utterance():
    wave, _ = speech(seed=4)
    expected = smile(opensmile.FeatureLevel.Functionals).process_signal(wave, SR).to_numpy(dtype=np.float32)[0]
    np.testing.assert_array_equal(egemaps_functionals(wave, SR), expected)


def voice_saying(seed: int = 0, **voice_changes) -> np.ndarray:
    """The same neutral utterance by the first demo voice, with some of its baselines changed."""
    voice = dataclasses.replace(make_voices(0)[1], **voice_changes)
    return synthesise(voice, Expression(0.0, 0.0, 0.0), np.random.default_rng(seed), seconds=2.0)


def median_of(name: str, wave: np.ndarray) -> float:
    frames = egemaps_frames(wave, SR, GRID)[:, LLD_NAMES.index(name)]
    if name.endswith("nz"):  # defined on voiced frames only (0 elsewhere)
        frames = frames[frames != 0]
    return float(np.median(frames))


def test_a_louder_voice_raises_loudness_and_the_equivalent_sound_level_and_keeps_the_pitch():
    wave = voice_saying()
    louder = np.clip(wave * 4, -1, 1)  # +12 dB
    assert median_of("Loudness_sma3", louder) > 2 * median_of("Loudness_sma3", wave)
    leq = FUNCTIONAL_NAMES.index("equivalentSoundLevel_dBp")
    assert egemaps_functionals(louder, SR)[leq] - egemaps_functionals(wave, SR)[leq] == pytest.approx(12, abs=1)
    assert median_of("F0semitoneFrom27.5Hz_sma3nz", louder) == pytest.approx(
        median_of("F0semitoneFrom27.5Hz_sma3nz", wave), abs=0.5
    )


def test_a_voice_an_octave_higher_is_twelve_semitones_higher():
    name = "F0semitoneFrom27.5Hz_sma3nz"  # semitones above 27.5 Hz
    low, high = median_of(name, voice_saying(f0_hz=110.0)), median_of(name, voice_saying(f0_hz=220.0))
    assert low == pytest.approx(12 * np.log2(110 / 27.5), abs=0.5)
    assert high - low == pytest.approx(12, abs=0.5)


def test_a_breathier_voice_has_a_lower_harmonics_to_noise_ratio():
    clear, breathy = voice_saying(breathiness=0.01), voice_saying(breathiness=0.3)
    assert median_of("HNRdBACF_sma3nz", breathy) < median_of("HNRdBACF_sma3nz", clear) - 3  # dB


def write_utterances(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        paths.append(folder / f"{seed}.wav")
        sf.write(paths[-1], speech(seed)[0], SR)
    return paths


def every_set(root, grid=GRID) -> AcousticCache:
    return AcousticCache(root, SR, grid, [EGEMAPS, CONTOURS], FUNCTIONALS)


def test_entries_hold_what_each_set_computes_from_the_file(tmp_path):
    paths = write_utterances(tmp_path / "audio", 3)
    entries = every_set(tmp_path / "cache").ensure(paths, workers=2)
    for path in paths:
        wave = load_audio(path, SR)
        expected = np.concatenate([EGEMAPS(wave, SR, GRID), CONTOURS(wave, SR, GRID)], axis=1)
        np.testing.assert_array_equal(entries[path].read_frames(), expected)
        np.testing.assert_array_equal(entries[path].read_functionals(), FUNCTIONALS(wave, SR, GRID))


def test_a_second_run_computes_nothing_and_a_copied_file_reuses_the_entry(tmp_path, monkeypatch):
    paths = write_utterances(tmp_path / "audio", 3)
    first = every_set(tmp_path / "cache").ensure(paths, workers=1)
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copy(paths[0], copy)

    def fail(*_):
        raise AssertionError("recomputed a cached entry")

    monkeypatch.setattr("emotion.features.acoustic_cache._compute_entries", fail)
    second = every_set(tmp_path / "cache").ensure([*paths, copy], workers=1)
    assert {p: second[p] for p in paths} == first
    assert second[copy] == first[paths[0]]  # same content, same entries


def test_changed_content_or_grid_get_new_entries_and_functionals_do_not_depend_on_the_grid(tmp_path):
    paths = write_utterances(tmp_path / "audio", 1)
    cache = every_set(tmp_path / "cache")
    before = cache.ensure(paths, workers=1)[paths[0]]
    sf.write(paths[0], speech(99)[0], SR)  # new content, same path
    changed = cache.ensure(paths, workers=1)[paths[0]]
    assert changed.frames != before.frames and changed.functionals != before.functionals
    other_grid = every_set(tmp_path / "cache", FrameGrid(400, 160)).ensure(paths, workers=1)[paths[0]]
    assert all(a.parent.parent != b.parent.parent for a, b in zip(other_grid.frames, changed.frames, strict=True))
    assert other_grid.functionals == changed.functionals
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no temporary files left behind
