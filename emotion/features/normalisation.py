"""Acoustic features standardised with statistics of the training split only.

eGeMAPS mixes hertz, decibels and ratios, so every feature is brought to zero mean and unit variance with
the mean and standard deviation of the fold's training items; validation and test never contribute (they
would leak into the choices validation makes and the scores test reports). The model keeps the statistics
as buffers, so its checkpoint applies the same standardisation in evaluation and prediction.

Optionally (`data.speaker_norm=true`) each speaker's features are first standardised with that speaker's
own statistics, computed from all of the speaker's items, whatever their split, without their labels. It
removes voice differences (a high or a loud voice) that speaker-independent folds must otherwise learn to
ignore; the price is that a new speaker needs a sample of their audio before predictions mean the same.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    items: list[Item], acoustic: dict[Path, AcousticFiles], speakers: SpeakerStatistics | None = None
) -> AcousticStatistics:
    """Statistics over every frame and every utterance of `items` (`acoustic`: their cached features, by
    path), after each speaker's own standardisation when `speakers` is given."""
    first = acoustic[items[0].path]
    return AcousticStatistics(
        frames=moments(_features(items, acoustic, speakers, "frames")) if first.frames else None,
        functionals=moments(_features(items, acoustic, speakers, "functionals")) if first.functionals else None,
    )


@dataclass(frozen=True)
class SpeakerStatistics:
    """Each speaker's own statistics."""

    by_speaker: dict[str, AcousticStatistics]

    def frames(self, speaker: str, values: np.ndarray) -> np.ndarray:
        return self.by_speaker[speaker].frames.standardise(values)

    def functionals(self, speaker: str, values: np.ndarray) -> np.ndarray:
        return self.by_speaker[speaker].functionals.standardise(values)


def per_speaker_statistics(items: list[Item], acoustic: dict[Path, AcousticFiles]) -> SpeakerStatistics:
    """The statistics of every speaker of `items`, each from all of that speaker's items."""
    by_speaker: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_speaker[item.speaker].append(item)
    return SpeakerStatistics({speaker: acoustic_statistics(own, acoustic) for speaker, own in by_speaker.items()})


def functionals_matrix(
    items: list[Item], acoustic: dict[Path, AcousticFiles], speakers: SpeakerStatistics | None = None
) -> np.ndarray:
    """(items, features): each item's functionals, standardised by its speaker's own statistics if asked."""
    return np.concatenate(list(_features(items, acoustic, speakers, "functionals")))


def _features(items: list[Item], acoustic: dict[Path, AcousticFiles], speakers: SpeakerStatistics | None, kind: str):
    """Each item's frames (frames, features) or functionals (1, features), standardised per speaker if asked."""
    for item in items:
        entry = acoustic[item.path]
        values = entry.read_frames() if kind == "frames" else entry.read_functionals()[None]
        yield values if speakers is None else getattr(speakers, kind)(item.speaker, values)
