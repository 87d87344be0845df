"""predict.plot=true: each recording's predicted dimensions over time as a PNG, and one HTML page over them all.

A timeline is what predict.py knows of one recording: its stretches (fixed windows, or the speech segments a
voice-activity detector found) with a value per dimension and, for an ensemble, the spread across its models;
the detected speech; and the file's summary prediction. The plot draws each value over its stretch of time and
leaves the time between stretches empty: a line across a silence would show an emotion nobody expressed.
"""

from __future__ import annotations

import html
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from emotion.files import write_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Stretch:
    """A window or speech segment and what was predicted for it."""

    start_s: float
    end_s: float
    values: tuple[float, ...]  # one per dimension, on the model's rating scale
    spread: tuple[float, ...] | None  # std across an ensemble's models, same scale; None for one model


@dataclass(frozen=True)
class Timeline:
    """One recording's predictions over time."""

    name: str  # the recording as the user gave it (a path string); shown as the title
    duration_s: float
    dimensions: tuple[str, ...]  # e.g. ("arousal", "valence", "dominance")
    scale: tuple[float, float]  # the rating scale's low, high: the y axis limits
    stretches: list[Stretch]  # in time order; windows with hop < length overlap
    speech: list[tuple[float, float]] | None  # detected speech (start_s, end_s); None when no detection ran
    overall: tuple[float, ...] | None = None  # the file's summary prediction, a dashed line per dimension


DPI = 100
PANEL_HEIGHT_IN = 1.7
MARGINS_HEIGHT_IN = 1.1  # title, legend and time axis
# Short files get a readable width; an hour (~1000 stretches) gets about two pixels per stretch.
NARROWEST_IN, WIDEST_IN, WIDEST_FROM_S = 8.0, 16.0, 3600.0
# Up to two minutes seconds read best; beyond, 754 s means less to a reader than 12:34.
CLOCK_BEYOND_S = 120.0
TICK_STEPS_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200)
MOST_TICKS = 12
# Sample positions rounded to seconds leave slivers between stretches that follow each other; they are no gap.
TOUCHING_S = 1e-3
SPEECH_COLOUR = "0.88"
SPREAD_ALPHA = 0.25
LONGEST_TITLE = 110
NO_SPEECH = "no speech detected"
NOTHING_PREDICTED = "nothing predicted"


def plot_timeline(timeline: Timeline, path: Path) -> None:
    """Write the timeline's figure as a PNG at `path`, whole or not at all."""
    png = io.BytesIO()
    timeline_figure(timeline).savefig(png, format="png", dpi=DPI)
    write_atomically(path, png.getvalue())


def timeline_figure(timeline: Timeline) -> Figure:
    """A panel per dimension over a shared time axis: each stretch's value as a step over its span, ± the
    ensemble's spread as a band, the file's summary as a dashed line, detected speech shaded behind. With
    nothing to draw, one panel that says so.

    The figure is made without pyplot, so no backend is chosen for the process and no figure is left open in
    pyplot's registry: it is freed like any object once the caller drops it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check(timeline)
    empty = not timeline.stretches and timeline.overall is None
    panels = 1 if empty else len(timeline.dimensions)
    size = (_figure_width(timeline.duration_s), MARGINS_HEIGHT_IN + PANEL_HEIGHT_IN * panels)
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # draws and saves with Agg, no display, whatever backend pyplot has chosen
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(_shortened(timeline.name), x=0.01, ha="left", fontsize=11, parse_math=False)
    for ax in axes:
        _shade_speech(ax, timeline.speech or [])
    if empty:
        _say_nothing_to_draw(axes[0], NO_SPEECH if timeline.speech == [] else NOTHING_PREDICTED)
    else:
        _draw_dimensions(axes, timeline)
        _legend(figure, timeline)
    _time_axis(axes[-1], _time_span(timeline))
    return figure


def _check(timeline: Timeline) -> None:
    dimensions = len(timeline.dimensions)
    for stretch in timeline.stretches:
        for what, numbers in (("values", stretch.values), ("spread", stretch.spread)):
            if numbers is not None and len(numbers) != dimensions:
                raise ValueError(
                    f"{timeline.name}: a stretch at {stretch.start_s:g}–{stretch.end_s:g} s has {len(numbers)} "
                    f"{what} but the timeline has {dimensions} dimensions {timeline.dimensions}"
                )
    if timeline.overall is not None and len(timeline.overall) != dimensions:
        raise ValueError(f"{timeline.name}: overall has {len(timeline.overall)} values for {dimensions} dimensions")


def _draw_dimensions(axes: np.ndarray, timeline: Timeline) -> None:
    times, values, spreads = steps(timeline.stretches, len(timeline.dimensions))
    for index, (ax, dimension) in enumerate(zip(axes, timeline.dimensions, strict=True)):
        colour = f"C{index % 10}"
        if not np.all(np.isnan(spreads[:, index])):
            low, high = values[:, index] - spreads[:, index], values[:, index] + spreads[:, index]
            ax.fill_between(times, low, high, color=colour, alpha=SPREAD_ALPHA, linewidth=0, gid="spread")
        ax.plot(times, values[:, index], color=colour, linewidth=1.2, gid="prediction")
        if timeline.overall is not None:
            ax.axhline(timeline.overall[index], color=colour, linestyle="--", linewidth=1, alpha=0.8, gid="overall")
        ax.set_ylim(*timeline.scale)
        ax.set_ylabel(dimension)
        ax.grid(axis="y", color="0.8", linewidth=0.5)


def steps(stretches: list[Stretch], dimensions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The step line through the stretches: times, and per time the values and spreads (NaN where a stretch
    has no spread), each stretch as two points at the ends of its span. A NaN row between two stretches breaks
    the line (and the band) across the gap of no speech between them.

    Where stretches overlap (windows with hop < length), each gives up half of the overlap to its neighbour, so
    that every value is drawn over the middle of its window and the steps follow one another instead of piling
    up; a window 0–3 s followed by 1–4 s and 2–5 s is drawn over 0–2 s, 2–3 s and 3–5 s."""
    lefts = [stretch.start_s for stretch in stretches]
    rights = [stretch.end_s for stretch in stretches]
    for index, (stretch, following) in enumerate(pairwise(stretches)):
        if following.start_s < stretch.end_s:
            rights[index] = lefts[index + 1] = (following.start_s + stretch.end_s) / 2
    gap = [np.nan] * dimensions
    times, values, spreads = [], [], []
    for index, stretch in enumerate(stretches):
        if index and stretch.start_s > stretches[index - 1].end_s + TOUCHING_S:
            times.append(np.nan)
            values.append(gap)
            spreads.append(gap)
        times += [lefts[index], rights[index]]
        values += [stretch.values] * 2
        spreads += [stretch.spread or gap] * 2
    shape = (len(times), dimensions)
    return np.array(times, dtype=float), np.array(values, dtype=float).reshape(shape), np.array(spreads).reshape(shape)


def _shade_speech(ax: Axes, speech: list[tuple[float, float]]) -> None:
    """One collection of full-height rectangles for all spans: an hour holds hundreds of them, and one
    collection draws far faster than a patch each."""
    from matplotlib.collections import PolyCollection

    rectangles = [[(start, 0), (start, 1), (end, 1), (end, 0)] for start, end in speech]
    shading = PolyCollection(
        rectangles, transform=ax.get_xaxis_transform(), facecolor=SPEECH_COLOUR, edgecolor="none", zorder=0
    )
    shading.set_gid("speech")
    ax.add_collection(shading, autolim=False)


def _say_nothing_to_draw(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="0.35")
    ax.set_yticks([])


def _legend(figure: Figure, timeline: Timeline) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color="0.2", linewidth=1.2, label="prediction per stretch")]
    if any(stretch.spread is not None for stretch in timeline.stretches):
        handles.append(Patch(color="0.2", alpha=SPREAD_ALPHA, label="± spread across models"))
    if timeline.overall is not None:
        handles.append(Line2D([], [], color="0.2", linestyle="--", linewidth=1, label="whole file"))
    if timeline.speech:
        handles.append(Patch(color=SPEECH_COLOUR, label="detected speech"))
    figure.legend(handles=handles, loc="outside upper right", ncols=len(handles), fontsize=8, frameon=False)


def _time_span(timeline: Timeline) -> float:
    """The duration, or the last stretch's end should a stretch run past it (a window padded at the end)."""
    ends = [stretch.end_s for stretch in timeline.stretches] + [end for _, end in timeline.speech or []]
    return max([timeline.duration_s, *ends, 1e-3])


def _time_axis(ax: Axes, duration_s: float) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    ax.set_xlim(0, duration_s)
    if duration_s <= CLOCK_BEYOND_S:
        ax.set_xlabel("time (s)")
        return
    with_hours = duration_s >= 3600
    ax.xaxis.set_major_locator(MultipleLocator(tick_step(duration_s)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: clock(seconds, with_hours)))
    ax.set_xlabel("time (h:mm:ss)" if with_hours else "time (m:ss)")


def tick_step(duration_s: float) -> float:
    """The smallest round step in seconds that puts at most MOST_TICKS ticks on the time axis."""
    return next((step for step in TICK_STEPS_S if duration_s / step <= MOST_TICKS), TICK_STEPS_S[-1])


def clock(seconds: float, with_hours: bool = False) -> str:
    """754 -> '12:34'; 3754 with hours -> '1:02:34'."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600) if with_hours else (0, whole)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if with_hours else f"{minutes}:{secs:02d}"


def _figure_width(duration_s: float) -> float:
    share = min(max(duration_s, 0.0) / WIDEST_FROM_S, 1.0)
    return NARROWEST_IN + (WIDEST_IN - NARROWEST_IN) * share


def _shortened(name: str) -> str:
    """A path too long for the title keeps its end, the part that tells recordings apart."""
    return name if len(name) <= LONGEST_TITLE else "…" + name[-(LONGEST_TITLE - 1) :]


def plot_file_name(name: str, index: int) -> str:
    """'0003-interview_01.png' for the recording 'a/b/interview_01.wav' at `index` 3: the index keeps two
    recordings with the same stem in different folders apart, and the stem, reduced to ASCII letters, digits,
    '.', '_' and '-', keeps the name safe in any file system and in a URL."""
    if index < 0:
        raise ValueError(f"plot_file_name: index={index}, but it must be 0 or more (the recording's position)")
    stem = PurePosixPath(re.split(r"[/\\]", name.rstrip("/\\"))[-1]).stem  # Windows paths split too
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).strip("._-")[:80]
    return f"{index:04d}-{safe or 'recording'}.png"


def write_overview(entries: list[tuple[str, Path, dict[str, float] | None]], path: Path) -> None:
    """An HTML page at `path` over the recordings, each entry (name, its plot's PNG, its summary values by
    dimension or None when it had no speech or could not be predicted): a table of the summaries, each name
    linking to the recording's plot further down. Static: no scripts, no resources from elsewhere, images
    addressed relative to the page, so the folder can be moved or sent as it is."""
    dimensions = list(dict.fromkeys(key for _, _, summary in entries for key in summary or {}))
    header = "".join(f"<th>{html.escape(dimension)}</th>" for dimension in dimensions)
    rows = [_summary_row(index, name, summary, dimensions) for index, (name, _, summary) in enumerate(entries)]
    sections = [_section(index, name, png, path.parent) for index, (name, png, _) in enumerate(entries)]
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>Predictions over time</title>',
            f"<style>{OVERVIEW_STYLE}</style></head>",
            "<body>",
            f"<h1>Predictions over time: {len(entries)} recording{'s' if len(entries) != 1 else ''}</h1>",
            f"<table><thead><tr><th>#</th><th>recording</th>{header}</tr></thead>",
            "<tbody>",
            *rows,
            "</tbody></table>",
            *sections,
            "</body></html>",
            "",
        ]
    )
    write_atomically(path, page)


OVERVIEW_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse}"
    "td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}td.value{text-align:right}"
    "section{margin:2em 0}img{max-width:100%;height:auto}.none{color:#777}"
)


def _summary_row(index: int, name: str, summary: dict[str, float] | None, dimensions: list[str]) -> str:
    if summary is None:
        cells = f'<td class="none" colspan="{max(len(dimensions), 1)}">no prediction</td>'
    else:
        cells = "".join(f'<td class="value">{_value_text(summary.get(dimension))}</td>' for dimension in dimensions)
    return f'<tr><td>{index}</td><td><a href="#{_anchor(index)}">{html.escape(name)}</a></td>{cells}</tr>'


def _section(index: int, name: str, png: Path, page_folder: Path) -> str:
    source = quote(Path(os.path.relpath(png, page_folder)).as_posix())
    return (
        f'<section id="{_anchor(index)}"><h2>{html.escape(name)}</h2>'
        f'<img src="{html.escape(source)}" alt="{html.escape(name)}" loading="lazy"></section>'
    )


def _value_text(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def _anchor(index: int) -> str:
    return f"recording-{index}"
