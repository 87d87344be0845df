"""One pass over every item before training: is the audio there, readable, long enough, and its labels finite?

A long job should not die at hour three on the one corrupt file among ten thousand, so all of them are
looked at first (headers only), and every problem is reported in one message.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile as sf

from emotion.data.corpus import Corpus, Item
from emotion.settings import DataSettings

log = logging.getLogger(__name__)

# libsndfile releases the GIL while it reads headers, so threads overlap the file system's latency.
SCAN_THREADS = 16


@dataclass(frozen=True)
class Problem:
    item: Item
    reason: str


class BadItemsError(ValueError):
    pass


def scan_items(
    items: list[Item], rated: Callable[[Item], tuple[str, ...]], min_seconds: float
) -> tuple[dict[str, float], list[Problem]]:
    """Durations in seconds of the usable items (by id), and a problem for each unusable one. `rated`: the
    dimensions an item's labels are of (its corpus's)."""
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        results = list(pool.map(lambda item: _check(item, rated(item), min_seconds), items))
    durations = {item.id: result for item, result in zip(items, results, strict=True) if isinstance(result, float)}
    problems = [Problem(item, result) for item, result in zip(items, results, strict=True) if isinstance(result, str)]
    return durations, problems


def _check(item: Item, dimensions: tuple[str, ...], min_seconds: float) -> float | str:
    """The duration, or why the item cannot be used."""
    if item.unusable:
        return item.unusable
    bad_labels = [
        f"{dim}={value}" for dim, value in zip(dimensions, item.labels, strict=True) if not math.isfinite(value)
    ]
    if bad_labels:
        return f"label not a finite number: {', '.join(bad_labels)}"
    if not item.path.is_file():
        return "missing file"
    try:
        info = sf.info(str(item.path))
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        return f"unreadable: {err}"
    if info.frames == 0:
        return "empty: no samples"
    duration = info.frames / info.samplerate
    if duration < min_seconds:
        return f"too short: {duration:.3f} s, below data.min_seconds={min_seconds}"
    return duration


def report(problems: list[Problem], total: int, skipped_file: Path | None = None) -> str:
    lines = [f"{len(problems)} of {total} utterances cannot be used:"]
    lines += [f"  {p.item.id}  {p.item.path}  {p.reason}" for p in problems]
    if skipped_file is None:
        lines.append(
            "Fix or remove them, or set data.on_bad_audio=skip to train without them "
            "(the run directory then lists them in skipped_items.csv)."
        )
    else:
        lines.append(f"Training without them; they are listed in {skipped_file}.")
    return "\n".join(lines)


def write_skipped(path: Path, problems: list[Problem]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "path", "reason"])
        writer.writerows([p.item.id, str(p.item.path), p.reason] for p in problems)


def usable_corpus(corpus: Corpus, data: DataSettings, out_dir: Path) -> tuple[Corpus, dict[str, float]]:
    """The corpus less its unusable items (with `data.on_bad_audio=skip`), and each usable item's duration.

    With `data.on_bad_audio=error` any problem stops the job here, before a model is built.
    """
    durations, problems = check_items(corpus.splits.all, corpus, data.min_seconds, data.on_bad_audio, out_dir)
    if problems:
        corpus = replace(corpus, splits=corpus.splits.without({p.item.id for p in problems}))
    _require_every_split(corpus, data)
    return corpus, durations


def check_items(
    items: list[Item], corpus: Corpus, min_seconds: float, on_bad_audio: str, out_dir: Path
) -> tuple[dict[str, float], list[Problem]]:
    """Each usable item's duration, and the problems of the others: with `on_bad_audio=error` any problem
    stops the job here; with `skip` they are listed in out_dir/skipped_items.csv and logged."""
    durations, problems = scan_items(items, corpus.rated, min_seconds)
    if problems and on_bad_audio == "error":
        raise BadItemsError(f"{corpus.name}: " + report(problems, len(items)))
    if problems:
        skipped_file = out_dir / "skipped_items.csv"
        write_skipped(skipped_file, problems)
        log.warning(report(problems, len(items), skipped_file))
    return durations, problems


def _require_every_split(corpus: Corpus, data: DataSettings) -> None:
    empty = [name for name in ("train", "val", "test") if not getattr(corpus.splits, name)]
    if empty:
        raise ValueError(
            f"{corpus.name}, data.fold={data.fold}, data.validation={data.validation}: no usable items in the "
            f"{' and '.join(empty)} split(s). Each needs at least one; check the folds or split column."
        )
