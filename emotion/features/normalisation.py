"""Acoustic features standardised: with statistics of the training split, or each speaker's or corpus's own.

eGeMAPS mixes hertz, decibels and ratios, so every feature is brought to zero mean and unit variance with
the mean and standard deviation of the fold's training items; validation and test never contribute (they
would leak into the choices validation makes and the scores test reports). The model keeps the statistics
as buffers, so its checkpoint applies the same standardisation in evaluation and prediction.

`data.normalise` may first standardise each group of items with the group's own statistics, from its audio
alone, never its labels (OwnStatistics):
- `speaker`: each speaker, from all of the speaker's items whatever their split. It removes voice differences
  (a high or a loud voice) that speaker-independent folds must otherwise learn to ignore; a new speaker needs
  a sample of their audio (several utterances) before predictions mean the same.
- `corpus`: each corpus, from its training split (a corpus met only in evaluation: from the evaluated audio).
  It removes what a corpus's microphones, rooms, gain and language shift in every feature, and costs a new
  corpus a sample of its audio, not of each speaker's.
- `training`: none; the training split's statistics alone, as the model stores them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from emotion.data.audio import AudioSource
from emotion.data.corpus import Item
from emotion.features.acoustic_cache import AcousticFiles

# Below this, a feature is constant in the data (e.g. an unused formant): it standardises to 0.
MIN_STD = 1e-6


@dataclass(frozen=True)
class Moments:
    """Per-feature mean and standard deviation."""

    mean: np.ndarray
    std: np.ndarray

    def standardise(self, values: np.ndarray) -> np.ndarray:
        """(values - mean) / std along the last axis; NaN (openSMILE's "not computable") becomes 0, the mean."""
        return np.nan_to_num((values - self.mean) / self.std, nan=0.0).astype(np.float32)


def moments(arrays: Iterable[np.ndarray]) -> Moments:
    """Mean and standard deviation of each column over the rows of all `arrays` (NaN left out)."""
    count = total = squares = 0.0
    for array in arrays:
        rows = np.asarray(array, dtype=np.float64).reshape(-1, array.shape[-1])
        finite = np.isfinite(rows)
        rows = np.where(finite, rows, 0.0)
        count = count + finite.sum(axis=0)
        total = total + rows.sum(axis=0)
        squares = squares + (rows**2).sum(axis=0)
    count = np.maximum(count, 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return Moments(mean.astype(np.float32), np.where(std < MIN_STD, 1.0, std).astype(np.float32))


@dataclass(frozen=True)
class AcousticStatistics:
    """Statistics of the frame-level features and of the functionals (None for a kind the model lacks)."""

    frames: Moments | None
    functionals: Moments | None


def acoustic_statistics(
    items: list[Item], acoustic: dict[AudioSource, AcousticFiles], own: OwnStatistics | None = None
) -> AcousticStatistics:
    """Statistics over every frame and every utterance of `items` (`acoustic`: their cached features, by
    path), after each group's own standardisation when `own` is given."""
    first = acoustic[items[0].audio]
    return AcousticStatistics(
        frames=moments(_features(items, acoustic, own, "frames")) if first.frames else None,
        functionals=moments(_features(items, acoustic, own, "functionals")) if first.functionals else None,
    )


@dataclass(frozen=True)
class OwnStatistics:
    """Each group's own statistics: each speaker's or each corpus's (`unit`)."""

    unit: Literal["speaker", "corpus"]
    by_group: dict[Hashable, AcousticStatistics]

    def group(self, item: Item) -> Hashable:
        return item.voice if self.unit == "speaker" else item.corpus

    def frames(self, item: Item, values: np.ndarray) -> np.ndarray:
        return self.by_group[self.group(item)].frames.standardise(values)

    def functionals(self, item: Item, values: np.ndarray) -> np.ndarray:
        return self.by_group[self.group(item)].functionals.standardise(values)


def resolved_normalisation(asked: str, trained_with: str, trained_on_it: bool) -> str:
    """The normalisation `asked` (evaluate.normalise, predict.normalise, data.test_normalise) of a model
    trained with `trained_with`, for audio of a corpus it trained on or not: `auto` is as in training, except
    that a corpus it did not train on gets its own statistics where training used the training split's
    (they describe the training corpus's microphones, rooms and language, not this one's)."""
    if asked != "auto":
        return asked
    return "corpus" if trained_with == "training" and not trained_on_it else trained_with


def own_statistics(
    normalise: str, items: list[Item], acoustic: dict[AudioSource, AcousticFiles], sample: list[Item] | None = None
) -> OwnStatistics | None:
    """The groups' own statistics `normalise` (data.normalise) asks for, for `items`: each speaker's from all
    their items, each corpus's from its items in `sample` (the training split; default: `items` itself).
    None for `training`, which has none."""
    if normalise == "training":
        return None
    unit = OwnStatistics(normalise, {})
    groups: dict[Hashable, list[Item]] = defaultdict(list)
    for item in items if normalise == "speaker" or sample is None else sample:
        groups[unit.group(item)].append(item)
    return OwnStatistics(normalise, {group: acoustic_statistics(own, acoustic) for group, own in groups.items()})


def functionals_matrix(
    items: list[Item], acoustic: dict[AudioSource, AcousticFiles], own: OwnStatistics | None = None
) -> np.ndarray:
    """(items, features): each item's functionals, standardised by its group's own statistics if asked."""
    return np.concatenate(list(_features(items, acoustic, own, "functionals")))


def _features(items: list[Item], acoustic: dict[AudioSource, AcousticFiles], own: OwnStatistics | None, kind: str):
    """Each item's frames (frames, features) or functionals (1, features), standardised by its group if asked."""
    for item in items:
        entry = acoustic[item.audio]
        values = entry.read_frames() if kind == "frames" else entry.read_functionals()[None]
        yield values if own is None else getattr(own, kind)(item, values)
