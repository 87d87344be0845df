"""What predict.py writes: the tables, the run's description (`<name>.json`), the pictures."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.data.corpus import LabelScale
from emotion.data.scan import Problem
from emotion.files import write_atomically
from emotion.timeline import Stretch, Timeline, plot_file_name, plot_timeline, write_overview

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFiles:
    """Where predict.py writes, all beside `table`."""

    table: Path

    def beside(self, suffix: str) -> Path:
        return self.table.with_name(self.table.stem + suffix)

    @property
    def description(self) -> Path:
        return self.beside(".json")

    @property
    def skipped(self) -> Path:
        return self.beside(".skipped.csv")

    @property
    def segments(self) -> Path:
        return self.beside(".segments.csv")

    @property
    def windows(self) -> Path:
        return self.beside(".windows.csv")

    @property
    def embeddings(self) -> Path:
        return self.beside(".embeddings.npy")

    @property
    def plots(self) -> Path:
        return self.beside(".plots")

    @property
    def partial(self) -> Path:
        return self.beside(".partial")


@dataclass(frozen=True)
class Summary:
    """An ensemble's predictions on the output scale, per row: its models' mean, and their spread (standard
    deviation) where there are several. NaN where nothing was predicted (a file without speech)."""

    values: np.ndarray  # (rows, dimensions)
    spread: np.ndarray | None  # (rows, dimensions)

    @classmethod
    def of(cls, members: np.ndarray, scale: LabelScale) -> Summary:
        """`members`: (rows, models, dimensions), each model's predictions on [0, 1]."""
        values = scale.denormalise(members.mean(axis=1))
        spread = members.std(axis=1) * (scale.high - scale.low) if members.shape[1] > 1 else None
        return cls(values, spread)

    def header(self, dimensions: tuple[str, ...]) -> list[str]:
        return [*dimensions, *([f"{dim}_std" for dim in dimensions] if self.spread is not None else [])]

    def cells(self, row: int) -> list[str]:
        numbers = [*self.values[row], *(self.spread[row] if self.spread is not None else [])]
        return ["" if np.isnan(number) else f"{number:.4f}" for number in numbers]

    def stretch(self, row: int, start_s: float, end_s: float) -> Stretch:
        spread = None if self.spread is None else tuple(map(float, self.spread[row]))
        return Stretch(start_s, end_s, tuple(map(float, self.values[row])), spread)


@dataclass(frozen=True)
class Stretches:
    """Rows of a windows or segments table: which file each is of (its index in the input), where in it, and
    what was predicted."""

    files: list[int]
    starts_s: list[float]
    ends_s: list[float]
    summary: Summary

    def by_file(self) -> dict[int, list[Stretch]]:
        """Each file's stretches, in row order."""
        grouped: dict[int, list[Stretch]] = {}
        for row, file in enumerate(self.files):
            grouped.setdefault(file, []).append(self.summary.stretch(row, self.starts_s[row], self.ends_s[row]))
        return grouped


def write_stretches(path: Path, names: list[str], dimensions: tuple[str, ...], stretches: Stretches) -> None:
    rows = [
        [names[file], f"{start:.3f}", f"{end:.3f}", *stretches.summary.cells(row)]
        for row, (file, start, end) in enumerate(
            zip(stretches.files, stretches.starts_s, stretches.ends_s, strict=True)
        )
    ]
    write_csv(path, ["path", "start_s", "end_s", *stretches.summary.header(dimensions)], rows)


def write_files(
    path: Path,
    names: list[str],
    seconds: list[float],
    dimensions: tuple[str, ...],
    summary: Summary,
    speech: list[list[tuple[float, float]]] | None,
) -> None:
    """One row per file: its duration and its prediction; with speech detection also how much speech it
    holds in how many segments, and empty predictions when it holds none."""
    header = [
        "path",
        "duration_s",
        *(["speech_s", "segments"] if speech is not None else []),
        *summary.header(dimensions),
    ]
    rows = []
    for row, (name, duration) in enumerate(zip(names, seconds, strict=True)):
        found = [] if speech is None else [f"{sum(end - start for start, end in speech[row]):.3f}", len(speech[row])]
        rows.append([name, f"{duration:.3f}", *found, *summary.cells(row)])
    write_csv(path, header, rows)


def write_embeddings(path: Path, vectors: list[np.ndarray]) -> None:
    """One model: (files, features); an ensemble: (files, models, features), as its models' spaces differ."""
    array = vectors[0] if len(vectors) == 1 else np.stack(vectors, axis=1)
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    write_atomically(path, buffer.getvalue())


def write_skipped(path: Path, problems: list[Problem]) -> None:
    write_csv(path, ["path", "reason"], [[problem.item.id, problem.reason] for problem in problems])


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def write_plots(
    folder: Path,
    names: list[str],
    seconds: list[float],
    dimensions: tuple[str, ...],
    scale: LabelScale,
    files: Summary,
    stretches: Stretches | None,
    speech: list[list[tuple[float, float]]] | None,
) -> None:
    """Each file's dimensions over time (its windows or segments; the whole file as one stretch without
    either), with its detected speech shaded, and index.html listing them all."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, within = [], stretches.by_file() if stretches else {}
    for file, (name, duration) in enumerate(zip(names, seconds, strict=True)):
        has_prediction = not np.isnan(files.values[file]).any()
        drawn = within.get(file, []) if stretches else [files.stretch(file, 0.0, duration)] * has_prediction
        timeline = Timeline(
            name=name,
            duration_s=duration,
            dimensions=dimensions,
            scale=(scale.low, scale.high),
            stretches=drawn,
            speech=None if speech is None else speech[file],
            overall=tuple(map(float, files.values[file])) if has_prediction else None,
        )
        picture = folder / plot_file_name(name, file)
        plot_timeline(timeline, picture)
        values = dict(zip(dimensions, map(float, files.values[file]), strict=True)) if has_prediction else None
        entries.append((name, picture, values))
    write_overview(entries, folder / "index.html")
    log.info("drew %d timelines: %s", len(entries), folder / "index.html")


def written_already(out: OutputFiles, run: dict) -> bool:
    """Whether `out` holds the finished outputs of the same run (what predict.resume=true skips)."""
    try:
        description = json.loads(out.description.read_text())
    except (OSError, ValueError):
        return False
    outputs = [out.table.with_name(name) for name in description.get("outputs", {}).values()]
    return description.get("run") == run and all(path.exists() for path in outputs)


def write_description(out: OutputFiles, description: dict) -> None:
    """`<name>.json`: what made the tables beside it, written last, so that it says they are complete."""
    write_atomically(out.description, json.dumps(description, indent=2))
