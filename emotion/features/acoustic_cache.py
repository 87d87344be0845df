"""Acoustic features computed once per audio file and kept on disk for every later epoch, run and sweep job.

An entry is one array per file and feature set, keyed by the file's content (emotion.data.content) and by
the set's settings, so a moved or renamed file is still found and a changed extractor never serves stale
features:

    <cache_dir>/acoustic/<set>-<settings hash>/<aa>/<audio hash>.npy

Entries are written to a temporary name and renamed, so concurrent jobs never read half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.cpu import worker_init
from emotion.data.audio import AudioSource, Clip, load_audio
from emotion.data.content import content_hashes
from emotion.features.acoustic import FUNCTIONALS, Extractor, frame_extractors
from emotion.files import write_atomically
from emotion.models.grid import FrameGrid
from emotion.settings import ModelSettings
from emotion.signals import GracefulStop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcousticArrays:
    """One wave's features computed in memory (for audio that is not a file): read as AcousticFiles are."""

    frames: np.ndarray
    functionals: np.ndarray | None = None

    def read_frames(self) -> np.ndarray:
        return self.frames

    def read_functionals(self) -> np.ndarray | None:
        return self.functionals


@dataclass(frozen=True)
class AcousticFiles:
    """Where one audio file's features are cached: its frame-level sets, in the order they are concatenated,
    and its functionals (None when the model does not use them)."""

    frames: tuple[Path, ...]
    functionals: Path | None = None

    def read_frames(self) -> np.ndarray:
        """(frames, features) float32: the frame-level sets side by side."""
        arrays = [np.load(entry) for entry in self.frames]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)

    def read_functionals(self) -> np.ndarray | None:
        return None if self.functionals is None else np.load(self.functionals)

    @property
    def all(self) -> tuple[Path, ...]:
        """Every entry, in the order of AcousticCache.extractors."""
        return (*self.frames, *([self.functionals] if self.functionals else []))


class AcousticCache:
    """The frame-level sets `frame_sets` (on `grid`; None when there are none) and, with `functionals`, the
    utterance-level set."""

    def __init__(
        self,
        root: str | Path,
        sample_rate: int,
        grid: FrameGrid | None,
        frame_sets: Sequence[Extractor],
        functionals: Extractor | None = None,
    ):
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.grid = grid
        self.frame_sets = tuple(frame_sets)
        self.functionals = functionals
        self.dirs = {extractor.name: self._dir(extractor) for extractor in self.extractors}

    @classmethod
    def for_model(cls, root: str | Path, sample_rate: int, grid: FrameGrid, model: ModelSettings) -> AcousticCache:
        """The sets the model asks for: `model.acoustic` and `model.functionals`."""
        functionals = FUNCTIONALS if model.functionals else None
        return cls(root, sample_rate, grid, frame_extractors(model.acoustic), functionals)

    @property
    def extractors(self) -> tuple[Extractor, ...]:
        return (*self.frame_sets, *([self.functionals] if self.functionals else []))

    def _dir(self, extractor: Extractor) -> Path:
        settings = json.dumps(extractor.settings(self.sample_rate, self.grid), sort_keys=True)
        digest = hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()
        return self.root / "acoustic" / f"{extractor.name}-{digest}"

    def compute_in_memory(self, wave: np.ndarray) -> AcousticArrays:
        """The features of a decoded wave (at `sample_rate`), exactly as they would be cached for a file."""
        frames = [extractor(wave, self.sample_rate, self.grid) for extractor in self.frame_sets]
        return AcousticArrays(
            frames=frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1),
            functionals=self.functionals(wave, self.sample_rate, self.grid) if self.functionals else None,
        )

    def ensure(
        self, sources: list[AudioSource], workers: int, stop: GracefulStop | None = None
    ) -> dict[AudioSource, AcousticFiles]:
        """The cache files of each audio file or clip, computing the missing ones in `workers` processes."""
        entries = self.entries(sources)
        self.compute(entries, workers, stop)
        return entries

    def entries(self, sources: list[AudioSource]) -> dict[AudioSource, AcousticFiles]:
        """The cache files of each audio file or clip (Item.audio), whether computed yet or not."""
        hashes = content_hashes(sorted({_file(source) for source in sources}), self.root)

        def entry(extractor: Extractor, digest: str) -> Path:
            return self.dirs[extractor.name] / digest[:2] / f"{digest}.npy"

        return {
            path: AcousticFiles(
                frames=tuple(entry(extractor, digest) for extractor in self.frame_sets),
                functionals=entry(self.functionals, digest) if self.functionals else None,
            )
            for path, digest in {source: _digest(source, hashes) for source in sources}.items()
        }

    def compute(
        self, entries: dict[AudioSource, AcousticFiles], workers: int, stop: GracefulStop | None = None
    ) -> None:
        """Compute the missing `entries` in `workers` processes, each file or clip decoded once for all its sets. A
        requested `stop` ends the work between files (what is computed stays) by raising Interrupted."""
        stop = stop or GracefulStop()
        jobs = []
        for source, files in entries.items():
            pairs = zip(self.extractors, files.all, strict=True)
            missing = [(extractor, entry) for extractor, entry in pairs if not entry.is_file()]
            if missing:
                jobs.append((source, missing, self.sample_rate, self.grid))
        if not jobs:
            return
        workers = min(workers, len(jobs))  # a process starts in seconds: none idle
        names = sorted({extractor.name for _, missing, _, _ in jobs for extractor, _ in missing})
        log.info(
            "computing acoustic features (%s) of %d files in %d processes, cached in %s",
            ", ".join(names),
            len(jobs),
            workers,
            self.root / "acoustic",
        )
        if workers > 1:
            # Spawned, not forked: the parent already runs torch's thread pools, which fork can deadlock.
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init
            ) as pool:
                for _ in pool.map(_compute_entries, jobs, chunksize=8):
                    if stop.requested:
                        pool.shutdown(cancel_futures=True)
                        stop.check("the acoustic features computed so far are cached")
        else:
            for job in jobs:
                stop.check("the acoustic features computed so far are cached")
                _compute_entries(job)
        self.log_sizes()

    def log_sizes(self) -> None:
        sizes = {
            name: sum(entry.stat().st_size for entry in folder.rglob("*.npy")) for name, folder in self.dirs.items()
        }
        log.info(
            "acoustic feature cache: %s in %s",
            ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items()),
            self.root / "acoustic",
        )


def _file(source: AudioSource) -> Path:
    return source.path if isinstance(source, Clip) else source


def _digest(source: AudioSource, hashes: dict[Path, str]) -> str:
    """A file's content hash; a clip's, of its file's content and its stretch."""
    if not isinstance(source, Clip):
        return hashes[source]
    stretch = f"{hashes[source.path]}|{source.start_s:.6f}|{source.end_s:.6f}"
    return hashlib.blake2b(stretch.encode(), digest_size=16).hexdigest()


def _compute_entries(job: tuple[AudioSource, list[tuple[Extractor, Path]], int, FrameGrid]) -> None:
    source, missing, sample_rate, grid = job
    wave = load_audio(source, sample_rate)
    for extractor, entry in missing:
        entry.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, extractor(wave, sample_rate, grid))
        write_atomically(entry, buffer.getvalue())
