"""Pruning a search's trials, between the search (which decides) and its jobs (which stop).

The search reads each job's history.csv after every epoch; when it prunes a trial it leaves a marker file
in the folders of the trial's running jobs. A job checks for the marker between optimizer steps and ends
`pruned`, with its history, checkpoints and metrics.json on disk. Files, not messages: the jobs may run in
this process, in the GPU pool's processes or on SLURM nodes, and every one of them sees its own folder.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

PRUNE_MARKER = ".prune"
WORST_CCC = -1.0


def request_prune(folder: Path, why: str) -> None:
    (folder / PRUNE_MARKER).write_text(json.dumps({"why": why, "at": time.time()}) + "\n")


class PruneWatch:
    """Whether the job in `folder` was pruned, looked up at most every `every_seconds` (a stat call, but
    between every step of a fast job)."""

    def __init__(self, folder: Path, every_seconds: float = 1.0):
        self.marker = folder / PRUNE_MARKER
        self.every_seconds = every_seconds
        self.why: str | None = None  # once pruned: what the search said
        self._next_look = 0.0

    @property
    def requested(self) -> bool:
        return self.why is not None

    def check(self, force: bool = False) -> bool:
        """Whether the job was pruned (looking again if `force`, or when it is time to)."""
        now = time.monotonic()
        if self.requested or (not force and now < self._next_look):
            return self.requested
        self._next_look = now + self.every_seconds
        try:
            self.why = json.loads(self.marker.read_text())["why"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError):  # being written
            self.why = "pruned by its search"
        return self.requested


def best_so_far(history: Path, score: str) -> list[float]:
    """Per epoch of the job's history.csv, its best validation `score` (e.g. val_ccc_mean) up to that
    epoch: what its best checkpoint would score if it stopped there. Empty before the first epoch ends."""
    try:
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    curve, best = [], WORST_CCC  # an epoch without a score (NaN) counts as the worst there is
    for row in rows:
        value = float(row[score] or "nan")  # empty: a dimension the corpus has no labels of
        best = max(best, WORST_CCC if math.isnan(value) else value)
        curve.append(best)
    return curve


def fold_means(curves: list[list[float]], ended: list[bool]) -> list[float]:
    """The trial's value at each epoch: the mean over the folds given (those that have started) of their
    best-so-far scores, at every epoch all of them have reached. A fold that ended (early stopping, last
    epoch) keeps its last value, so that once all folds are given and ended, the last value is the trial's
    own (the mean of the folds' best validation scores)."""
    if not curves or any(not curve for curve in curves):
        return []
    running = [len(curve) for curve, done in zip(curves, ended, strict=True) if not done]
    epochs = min(running) if running else max(len(curve) for curve in curves)
    return [sum(curve[min(epoch, len(curve) - 1)] for curve in curves) / len(curves) for epoch in range(epochs)]
