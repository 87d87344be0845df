"""Utterances, their labels and the cross-validation folds that split them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIMENSIONS = ("arousal", "valence", "dominance")


@dataclass(frozen=True)
class Item:
    """One utterance; `labels` follow DIMENSIONS, on the corpus's own scale."""

    id: str
    path: Path
    speaker: str
    fold: int
    labels: tuple[float, ...]


@dataclass(frozen=True)
class LabelScale:
    """A corpus's rating scale. Training sees labels mapped to [0, 1]; people see the corpus's scale."""

    low: float
    high: float

    def normalise(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float32) - self.low) / (self.high - self.low)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values) * (self.high - self.low) + self.low


@dataclass(frozen=True)
class Splits:
    train: list[Item]
    val: list[Item]
    test: list[Item]


def read_manifest(path: str | Path) -> list[Item]:
    """Items of a CSV manifest (`id, path, speaker, fold, arousal, valence, dominance`).

    Audio paths are relative to the manifest's folder.
    """
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        Item(
            id=row.get("id") or Path(row["path"]).stem,
            path=path.parent / row["path"],
            speaker=row["speaker"],
            fold=int(row["fold"]),
            labels=tuple(float(row[name]) for name in DIMENSIONS),
        )
        for row in rows
    ]


def leave_one_session_out(items: list[Item], fold: int, corpus: str) -> Splits:
    """Test on session `fold`, validate on the next one (k % n + 1), train on the rest."""
    sessions = sorted({item.fold for item in items})
    if fold not in sessions:
        raise ValueError(
            f"data.fold={fold} but {corpus} has folds {sessions[0]}–{sessions[-1]}: "
            f"pick one of {sessions}, e.g. data.fold={sessions[0]}."
        )
    val_fold = sessions[(sessions.index(fold) + 1) % len(sessions)]
    return Splits(
        train=[item for item in items if item.fold not in (fold, val_fold)],
        val=[item for item in items if item.fold == val_fold],
        test=[item for item in items if item.fold == fold],
    )
