"""Prosody contours computed once per audio file and kept on disk for every later epoch, run and sweep job.

An entry is keyed by the file's content (BLAKE2 of its bytes) and by the extraction parameters, so a moved
or renamed file is still found and a changed extractor never serves stale contours. Hashing reads every
file, so the hash of each (path, size, mtime) is remembered in an index beside the entries.
Entries and the index are written to a temporary name and renamed, so concurrent jobs never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emotion.data.audio import load_audio
from emotion.data.prosody import (
    ANALYSIS_STEP_S,
    PITCH_CEILING_HZ,
    PITCH_FLOOR_HZ,
    PROSODY_FEATURES,
    FrameGrid,
    prosody_contours,
)

log = logging.getLogger(__name__)

# Bump when prosody_contours changes what it computes: every entry is then recomputed.
EXTRACTOR_VERSION = 1


class ProsodyCache:
    def __init__(self, root: str | Path, sample_rate: int, grid: FrameGrid):
        params = {
            "version": EXTRACTOR_VERSION,
            "features": PROSODY_FEATURES,
            "sample_rate": sample_rate,
            "window": grid.window,
            "hop": grid.hop,
            "pitch_floor": PITCH_FLOOR_HZ,
            "pitch_ceiling": PITCH_CEILING_HZ,
            "step": ANALYSIS_STEP_S,
        }
        digest = hashlib.blake2b(json.dumps(params, sort_keys=True).encode(), digest_size=8).hexdigest()
        self.dir = Path(root) / "prosody" / digest
        self.sample_rate = sample_rate
        self.grid = grid

    def ensure(self, paths: list[Path], workers: int) -> dict[Path, Path]:
        """The cache file of each audio file, computing the missing ones in `workers` processes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        hashes = self._content_hashes(sorted(set(paths)))
        entries = {path: self.dir / digest[:2] / f"{digest}.npy" for path, digest in hashes.items()}
        todo = [(path, entry) for path, entry in entries.items() if not entry.is_file()]
        if todo:
            log.info(
                "computing prosody contours of %d files in %d processes, cached in %s", len(todo), workers, self.dir
            )
            jobs = [(path, entry, self.sample_rate, self.grid) for path, entry in todo]
            if workers > 1:
                # Spawned, not forked: the parent already runs torch's thread pools, which fork can deadlock.
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    list(pool.map(_compute_entry, jobs, chunksize=8))
            else:
                for job in jobs:
                    _compute_entry(job)
        return entries

    def _content_hashes(self, paths: list[Path]) -> dict[Path, str]:
        index_file = self.dir / "content_index.json"
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError):
            index = {}
        hashes, changed = {}, False
        for path in paths:
            stat = path.stat()
            key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in index:
                index[key] = _hash_file(path)
                changed = True
            hashes[path] = index[key]
        if changed:
            # Another job may have added entries since we read the index: keep theirs too.
            with contextlib.suppress(OSError, ValueError):
                index = {**json.loads(index_file.read_text()), **index}
            _write_atomically(index_file, json.dumps(index).encode())
        return hashes


def load_contours(entry: Path) -> np.ndarray:
    return np.load(entry)


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _compute_entry(job: tuple[Path, Path, int, FrameGrid]) -> None:
    path, entry, sample_rate, grid = job
    contours = prosody_contours(load_audio(path, sample_rate), sample_rate, grid)
    entry.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, contours)
    _write_atomically(entry, buffer.getvalue())


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a uniquely named temporary file beside `path`, then rename it: readers see all or nothing,
    and jobs on other machines sharing the cache never write the same temporary file."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)
