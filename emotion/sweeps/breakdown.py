"""A configuration's test scores broken down: per corpus (jobs on several corpora, data=multi) and per condition
(evaluate.py under evaluate.conditions), mean ± std over the configuration's runs; and the robustness plot,
CCC against SNR for each configuration."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from emotion.sweeps.jobs import Row
from emotion.sweeps.markdown import number, table_line

SCORES = (("ccc_v", "CCC-V"), ("ccc_a", "CCC-A"), ("ccc_d", "CCC-D"))
# What metrics.json breaks `test` down by: its key, and how the table names the parts.
BREAKDOWNS = (("by_corpus", "corpus", lambda entry: entry["test"]), ("conditions", "condition", lambda entry: entry))
SNR = re.compile(r"snr(-?\d+)$")


def breakdown(row: Row, key: str, scores_of: Callable[[dict], dict]) -> dict[str, dict[str, list[float]]]:
    """Per part (a corpus, a condition) of the row's completed runs, per score key, each run's value."""
    parts: dict[str, dict[str, list[float]]] = {}
    for job in row.done:
        for part, entry in (job.metrics.get(key) or {}).items():
            for score, value in scores_of(entry).items():
                if value is not None:
                    parts.setdefault(part, {}).setdefault(score, []).append(value)
    return parts


def breakdown_lines(rows: list[Row], labels: list[str]) -> list[str]:
    """summary.md's tables of the scores by corpus and by condition (none when no run has them)."""
    lines = []
    for key, what, scores_of in BREAKDOWNS:
        found = [(label, breakdown(row, key, scores_of)) for row, label in zip(rows, labels, strict=True)]
        found = [(label, parts) for label, parts in found if parts]
        if not found:
            continue
        lines += ["", f"**By {what}**: test CCC mean ± std over each row's runs.", ""]
        header = ["", what, *(name for _, name in SCORES), "runs"]
        lines += [table_line(header), "|" + "---|" * len(header)]
        for label, parts in found:
            for part, scores in parts.items():
                cells = [_mean_std(scores.get(score, [])) for score, _ in SCORES]
                lines.append(table_line([label, part, *cells, str(max(map(len, scores.values())))]))
    return lines


def plot_robustness(rows: list[Row], labels: list[str], path: Path) -> bool:
    """CCC against SNR for each row that was scored under snrN conditions; returns whether there was any."""
    curves = []
    for row, label in zip(rows, labels, strict=True):
        parts = breakdown(row, "conditions", lambda entry: entry)
        curves.append((label, {part: {key: statistics.fmean(v) for key, v in s.items()} for part, s in parts.items()}))
    return plot_snr_curves(curves, path, "test CCC (mean over runs)")


def plot_snr_curves(curves: list[tuple[str, dict[str, dict]]], path: Path, title: str) -> bool:
    """One panel per dimension, CCC against the SNR of the snrN conditions (clean at the right) for each
    (label, {condition: scores}) curve; returns whether any curve has an snrN condition."""
    curves = [(label, scores) for label, scores in curves if any(SNR.match(name) for name in scores)]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({int(match.group(1)) for _, scores in curves for name in scores if (match := SNR.match(name))})
    clean_at = levels[-1] + max(5, (levels[-1] - levels[0]) // 3)
    keys = [(key, name) for key, name in SCORES if any(s.get(key) is not None for _, c in curves for s in c.values())]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), sharey=True, squeeze=False)
    for ax, (key, name) in zip(axes[0], keys, strict=True):
        for label, scores in curves:
            points = [(int(m.group(1)), s.get(key)) for c, s in scores.items() if (m := SNR.match(c))]
            if "clean" in scores:
                points.append((clean_at, scores["clean"].get(key)))
            points = sorted((level, value) for level, value in points if value is not None)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xticks([*levels, clean_at], [*map(str, levels), "clean"])
        ax.set_xlabel("SNR (dB)")
        ax.set_title(name)
    axes[0][0].set_ylabel(title)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{number(statistics.fmean(values), 3)} ± {number(spread, 3)}"
