"""Prosody contours are computed once per file content and parameters, then read back."""

from __future__ import annotations

import shutil

import numpy as np
import soundfile as sf

from emotion.data.audio import load_audio
from emotion.data.prosody import FrameGrid, prosody_contours
from emotion.data.prosody_cache import ProsodyCache
from tests.trees import speech

GRID = FrameGrid(400, 320)


def write_utterances(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        paths.append(folder / f"{seed}.wav")
        sf.write(paths[-1], speech(seed)[0], 16000)
    return paths


def test_entries_hold_the_contours_of_the_file(tmp_path):
    paths = write_utterances(tmp_path / "audio", 3)
    entries = ProsodyCache(tmp_path / "cache", 16000, GRID).ensure(paths, workers=2)
    for path in paths:
        expected = prosody_contours(load_audio(path, 16000), 16000, GRID)
        np.testing.assert_array_equal(np.load(entries[path]), expected)


def test_a_second_run_computes_nothing_and_a_copied_file_reuses_the_entry(tmp_path, monkeypatch):
    paths = write_utterances(tmp_path / "audio", 3)
    cache = ProsodyCache(tmp_path / "cache", 16000, GRID)
    first = cache.ensure(paths, workers=1)
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copy(paths[0], copy)

    def fail(*_):
        raise AssertionError("recomputed a cached entry")

    monkeypatch.setattr("emotion.data.prosody_cache._compute_entry", fail)
    second = ProsodyCache(tmp_path / "cache", 16000, GRID).ensure([*paths, copy], workers=1)
    assert {p: second[p] for p in paths} == first
    assert second[copy] == first[paths[0]]  # same content, same entry


def test_changed_content_or_parameters_get_new_entries(tmp_path):
    paths = write_utterances(tmp_path / "audio", 1)
    cache = ProsodyCache(tmp_path / "cache", 16000, GRID)
    before = cache.ensure(paths, workers=1)[paths[0]]
    sf.write(paths[0], speech(99)[0], 16000)  # new content, same path
    assert cache.ensure(paths, workers=1)[paths[0]] != before
    other_grid = ProsodyCache(tmp_path / "cache", 16000, FrameGrid(400, 160)).ensure(paths, workers=1)[paths[0]]
    assert other_grid.parent.parent != before.parent.parent
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no temporary files left behind
