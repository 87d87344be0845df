"""Utterances, their labels, and how a corpus splits them into train, validation and test."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np

from emotion.data.audio import AudioSource, Clip
from emotion.settings import ValidationProtocol

DIMENSIONS = ("arousal", "valence", "dominance")
# Speaker ids that name no one (MSP-Podcast's `Unknown`, an empty CSV cell): never counted as one speaker.
UNKNOWN_SPEAKERS = ("", "unknown")


@dataclass(frozen=True)
class Item:
    """One utterance. `labels` follow the corpus's dimensions, on its own scale (NaN where unparseable).

    Cross-validated corpora set `fold` (IEMOCAP: the session); corpora with fixed splits set `split`
    (train, val or test; None for items no split uses). `unusable` says why an item cannot be used, when
    reading the corpus found out already (the audio check reports it with the others). `corpus` names the
    corpus an item comes from where several are trained on together (data=multi); empty otherwise.
    """

    id: str
    path: Path
    speaker: str
    labels: tuple[float, ...]
    fold: int | None = None
    split: str | None = None
    unusable: str | None = None
    corpus: str = ""
    span: tuple[float, float] | None = None  # (start_s, end_s) of `path` when the item is a stretch of it

    @property
    def audio(self) -> AudioSource:
        """What the item's audio is, and what its acoustic features are cached by: its file, or a clip of it."""
        return self.path if self.span is None else Clip(self.path, *self.span)

    @property
    def voice(self) -> tuple[str, str]:
        """Who speaks: a speaker id names one person within one corpus only (two corpora's `spk1` are two)."""
        return self.corpus, self.speaker


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

    @property
    def all(self) -> list[Item]:
        return [*self.train, *self.val, *self.test]

    def without(self, ids: set[str]) -> Splits:
        return Splits(*([item for item in part if item.id not in ids] for part in (self.train, self.val, self.test)))


@dataclass(frozen=True)
class Corpus:
    """A corpus's items in splits, the dimensions they are rated on and the scale. Corpora trained on
    together (data=multi) are one Corpus with `parts`: each item's `corpus` names its part, and the whole
    predicts every dimension some part has, on the common [0, 1] scale."""

    name: str
    splits: Splits
    scale: LabelScale
    dimensions: tuple[str, ...] = DIMENSIONS
    parts: tuple[Corpus, ...] = ()

    def part_of(self, item: Item) -> Corpus:
        """The corpus `item` comes from: one of `parts`, or this one."""
        return next((part for part in self.parts if part.name == item.corpus), self)

    def rated(self, item: Item) -> tuple[str, ...]:
        """The dimensions `item`'s labels are of: its corpus's."""
        return self.part_of(item).dimensions

    def labels(self, items: list[Item]) -> np.ndarray:
        """(items, dimensions): each item's labels mapped from its corpus's scale to [0, 1], in this corpus's
        dimensions; NaN where an item's corpus lacks a dimension (training masks it out of the loss)."""
        if not self.parts:
            return np.stack([self.scale.normalise(item.labels) for item in items]).reshape(len(items), -1)
        rows = np.full((len(items), len(self.dimensions)), np.nan, dtype=np.float32)
        for row, item in enumerate(items):
            part = self.part_of(item)
            columns = [self.dimensions.index(dim) for dim in part.dimensions]
            rows[row, columns] = part.scale.normalise(item.labels)
        return rows

    def on_own_scales(self, items: list[Item], values: np.ndarray) -> np.ndarray:
        """`values` (items, dimensions) on [0, 1], each row mapped to its item's corpus's scale."""
        if not self.parts:
            return self.scale.denormalise(values)
        return np.stack([self.part_of(item).scale.denormalise(row) for item, row in zip(items, values, strict=True)])

    def speaker_keys(self, items: list[Item]) -> set[str]:
        """A short hash per known speaker of `items`, of their corpus's name and the speaker's id: what a
        checkpoint records of the speakers it learned from. The name tells apart `spk1` of two corpora; the
        hash keeps the ids, which may identify people, out of shared checkpoints."""
        voices = {
            (item.corpus or self.name, item.speaker)
            for item in items
            if item.speaker.strip().lower() not in UNKNOWN_SPEAKERS
        }
        return {hashlib.sha256(f"{corpus}\0{speaker}".encode()).hexdigest()[:16] for corpus, speaker in voices}


def cross_validation_splits(
    items: list[Item],
    fold: int,
    corpus: str,
    validation: str = "next_session",
    val_fraction: float = 0.2,
    seed: int = 0,
    exclude_fold: int | None = None,
) -> Splits:
    """Test on fold `fold`; validate on the next fold (`next_session`, k % n + 1) or on a held-out share
    of the training speakers (`speaker_holdout`); train on the rest. `exclude_fold`'s items are in no split
    at all, as if the corpus had no such fold (a nested search's outer fold: its studies never see it)."""
    folds = sorted({item.fold for item in items})
    if exclude_fold is not None:
        if exclude_fold not in folds or exclude_fold == fold:
            raise ValueError(
                f"data.exclude_fold={exclude_fold}: must be one of {corpus}'s folds {folds} other than data.fold={fold}"
            )
        items = [item for item in items if item.fold != exclude_fold]
        folds.remove(exclude_fold)
    if fold not in folds:
        raise ValueError(
            f"data.fold={fold} but {corpus} has folds {folds[0]}–{folds[-1]}: pick one of {folds}, "
            f"e.g. data.fold={folds[0]}."
        )
    test = [item for item in items if item.fold == fold]
    rest = [item for item in items if item.fold != fold]
    if validation == "next_session":
        val_fold = folds[(folds.index(fold) + 1) % len(folds)]
        in_val = [item.fold == val_fold for item in rest]
    elif validation == "speaker_holdout":
        val_speakers = held_out_speakers(rest, val_fraction, seed)
        in_val = [item.speaker in val_speakers for item in rest]
    else:
        raise ValueError(f"data.validation={validation!r} is not one of {get_args(ValidationProtocol)}.")
    return Splits(
        train=[item for item, val in zip(rest, in_val, strict=True) if not val],
        val=[item for item, val in zip(rest, in_val, strict=True) if val],
        test=test,
    )


def held_out_speakers(items: list[Item], fraction: float, seed: int) -> set[str]:
    """A seeded random `fraction` of the speakers (at least one, never all)."""
    speakers = sorted({item.speaker for item in items})
    count = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    rng = np.random.default_rng(seed)
    return set(rng.choice(speakers, size=count, replace=False).tolist())


def speaker_folds(items: list[Item], n_folds: int, seed: int) -> list[Item]:
    """Assign folds 1..n_folds by speaker, so no speaker is in two folds; folds get similar item counts.

    Speakers are taken in a seeded random order, each into the fold with the fewest items so far.
    """
    counts = Counter(item.speaker for item in items)
    if len(counts) < n_folds:
        raise ValueError(f"data.n_folds={n_folds} but the manifest has only {len(counts)} speakers.")
    order = np.random.default_rng(seed).permutation(sorted(counts)).tolist()
    fold_sizes = [0] * n_folds
    fold_of = {}
    for speaker in order:
        smallest = fold_sizes.index(min(fold_sizes))
        fold_of[speaker] = smallest + 1
        fold_sizes[smallest] += counts[speaker]
    return [Item(**{**item.__dict__, "fold": fold_of[item.speaker]}) for item in items]


def fixed_splits(items: list[Item]) -> Splits:
    return Splits(*([item for item in items if item.split == name] for name in ("train", "val", "test")))


def parse_label(text: str | None) -> float:
    """A rating as written in a label file; NaN when empty or not a number, for the audio scan to report."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
