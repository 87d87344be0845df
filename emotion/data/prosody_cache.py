"""Prosody contours computed once per audio file and kept on disk for every later epoch, run and sweep job.

An entry is keyed by the file's content (emotion.data.content) and by the extraction parameters, so a moved
or renamed file is still found and a changed extractor never serves stale contours. Entries are written to a
temporary name and renamed, so concurrent jobs never read half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emotion.data.audio import load_audio
from emotion.data.content import content_hashes
from emotion.data.prosody import (
    ANALYSIS_STEP_S,
    PITCH_CEILING_HZ,
    PITCH_FLOOR_HZ,
    PROSODY_FEATURES,
    FrameGrid,
    prosody_contours,
)
from emotion.files import write_atomically
from emotion.signals import GracefulStop, ignore_stop_signals

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
        self.root = Path(root)
        self.dir = self.root / "prosody" / digest
        self.sample_rate = sample_rate
        self.grid = grid

    def ensure(self, paths: list[Path], workers: int, stop: GracefulStop | None = None) -> dict[Path, Path]:
        """The cache file of each audio file, computing the missing ones in `workers` processes."""
        entries = self.entries(paths)
        self.compute(entries, workers, stop)
        return entries

    def entries(self, paths: list[Path]) -> dict[Path, Path]:
        """The cache file of each audio file, whether computed yet or not."""
        self.dir.mkdir(parents=True, exist_ok=True)
        hashes = content_hashes(sorted(set(paths)), self.root)
        return {path: self.dir / digest[:2] / f"{digest}.npy" for path, digest in hashes.items()}

    def compute(self, entries: dict[Path, Path], workers: int, stop: GracefulStop | None = None) -> None:
        """Compute the missing `entries` in `workers` processes. A requested `stop` ends the work between
        files (what is computed stays) by raising Interrupted."""
        stop = stop or GracefulStop()
        todo = [(path, entry) for path, entry in entries.items() if not entry.is_file()]
        if not todo:
            return
        log.info("computing prosody contours of %d files in %d processes, cached in %s", len(todo), workers, self.dir)
        jobs = [(path, entry, self.sample_rate, self.grid) for path, entry in todo]
        if workers > 1:
            # Spawned, not forked: the parent already runs torch's thread pools, which fork can deadlock.
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=ignore_stop_signals
            ) as pool:
                for _ in pool.map(_compute_entry, jobs, chunksize=8):
                    if stop.requested:
                        pool.shutdown(cancel_futures=True)
                        stop.check("the prosody contours computed so far are cached")
        else:
            for job in jobs:
                stop.check("the prosody contours computed so far are cached")
                _compute_entry(job)


def load_contours(entry: Path) -> np.ndarray:
    return np.load(entry)


def _compute_entry(job: tuple[Path, Path, int, FrameGrid]) -> None:
    path, entry, sample_rate, grid = job
    contours = prosody_contours(load_audio(path, sample_rate), sample_rate, grid)
    entry.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, contours)
    write_atomically(entry, buffer.getvalue())
