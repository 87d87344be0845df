"""The cross-corpus matrix of a sweep (sweep=crosscorpus): for each model configuration (the neural model, the
classic baseline, ...), the corpora it trained on as rows and the corpora it was tested on as columns.

A cell holds, per dimension, the test CCC averaged over the cell's runs (folds × seeds), and the pooled CCC
over all of its runs' predictions with a 95% percentile interval that resamples speakers (with all their
utterances), so that it says how far the number would move with other speakers of the same corpus. In-corpus
cells (a model tested on a corpus it trained on, its job's own test split) are the diagonal; the others come
from the jobs' tests on data.test_corpora (cross/<corpus>/ in each job's folder).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.files import write_atomically
from emotion.scores import ccc
from emotion.sweeps.jobs import Job, collect_jobs, configuration
from emotion.sweeps.markdown import number, table_line
from emotion.training.outputs import CROSS_FOLDER

DIMENSIONS = {"ccc_a": "arousal", "ccc_v": "valence", "ccc_d": "dominance"}
# Keys a cell's runs may differ in: they are its repetitions, not other models.
REPEATS = ("data.fold", "trainer.seed", "data.corpora")


@dataclass(frozen=True)
class Run:
    """One job's test on one corpus: its scores, and its predictions (per dimension: speakers, true, predicted)."""

    scores: dict[str, float | None]
    predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Cell:
    runs: int
    mean: dict[str, float | None]  # per score key: over the runs that have it
    pooled: dict[str, float]  # per dimension key
    low: dict[str, float]
    high: dict[str, float]


@dataclass(frozen=True)
class Matrix:
    model: str  # the configuration, as its overrides other than the corpora, folds and seeds say it
    trained: list[str]  # row labels, in the sweep's order
    tested: list[str]  # column labels
    cells: dict[tuple[str, str], Cell]


def cross_matrices(sweep_dir: Path, resamples: int = 1000, seed: int = 0) -> list[Matrix]:
    """One matrix per model configuration of the sweep's completed jobs that tested on other corpora (none when
    no job did)."""
    runs: dict[str, dict[tuple[str, str], list[Run]]] = defaultdict(lambda: defaultdict(list))
    order: dict[str, tuple[list[str], list[str]]] = {}
    jobs = [job for job in collect_jobs(sweep_dir) if job.status == "completed" and job.metrics.get("cross")]
    configurations = [configuration(job.overrides) for job in jobs]
    varying = sorted({key for config in configurations for key in config if key not in REPEATS} - _same(configurations))
    for job, config in zip(jobs, configurations, strict=True):
        model = " ".join(f"{key}={config[key]}" for key in varying if key in config) or job.metrics["profile"]
        trained = _trained_on(job)
        rows, columns = order.setdefault(model, ([], []))
        rows += [trained] if trained not in rows else []
        for tested, run in _tests(job):
            columns += [tested] if tested not in columns else []
            runs[model][trained, tested].append(run)
    return [
        Matrix(model, *order[model], {key: _cell(found, resamples, seed) for key, found in cells.items()})
        for model, cells in runs.items()
    ]


def _same(configurations: list[dict[str, str]]) -> set[str]:
    """The keys every configuration sets to one value: the sweep's, not a model's."""
    first = configurations[0] if configurations else {}
    return {key for key, value in first.items() if all(config.get(key) == value for config in configurations)}


def _trained_on(job: Job) -> str:
    """The corpora the job trained on, as its metrics name them (a job of data=multi, as sweep=crosscorpus runs
    them; another job is named by its data= override, and has no in-corpus cell)."""
    by_corpus = job.metrics.get("by_corpus")
    return " + ".join(by_corpus) if by_corpus else str(job.overrides.get("data", job.metrics.get("profile")))


def _tests(job: Job) -> list[tuple[str, Run]]:
    """The job's tests: on each corpus it trained on (its own test split, by corpus), and on each other."""
    found = []
    own = _read_predictions(job.folder / "predictions.csv")
    for name, scores in (job.metrics.get("by_corpus") or {}).items():
        found.append((name, Run(scores["test"], _of_corpus(own, name))))
    for name, record in job.metrics["cross"].items():
        other = _read_predictions(job.folder / CROSS_FOLDER / name / "predictions.csv")
        found.append((name, Run(record["test"], _of_corpus(other, None))))
    return found


def _read_predictions(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _of_corpus(rows: list[dict], corpus: str | None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per dimension key, (speakers, true, predicted) of the rows of `corpus` (None: all) that rate it."""
    rows = [row for row in rows if corpus is None or row.get("corpus") == corpus]
    predictions = {}
    for key, dim in DIMENSIONS.items():
        rated = [row for row in rows if row.get(f"{dim}_true", "") != ""]
        if rated:
            predictions[key] = (
                np.array([row["speaker"] for row in rated]),
                np.array([float(row[f"{dim}_true"]) for row in rated]),
                np.array([float(row[f"{dim}_pred"]) for row in rated]),
            )
    return predictions


def _cell(runs: list[Run], resamples: int, seed: int) -> Cell:
    mean = {}
    for key in (*DIMENSIONS, "ccc_mean"):
        values = [run.scores[key] for run in runs if run.scores.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    pooled, low, high = {}, {}, {}
    for key in DIMENSIONS:
        parts = [run.predictions[key] for run in runs if key in run.predictions]
        if parts:
            speakers, true, pred = (np.concatenate(column) for column in zip(*parts, strict=True))
            pooled[key], low[key], high[key] = speaker_bootstrap(speakers, true, pred, resamples, seed)
    return Cell(len(runs), mean, pooled, low, high)


def speaker_bootstrap(
    speakers: np.ndarray, true: np.ndarray, pred: np.ndarray, resamples: int, seed: int
) -> tuple[float, float, float]:
    """CCC over all predictions, and its percentile 95% interval over resamples of the speakers (each drawn
    with all of their utterances; NaN without two speakers or resamples)."""
    observed = float(ccc(pred, true))
    names, speaker_of = np.unique(speakers, return_inverse=True)
    if len(names) < 2 or resamples <= 0:
        return observed, np.nan, np.nan
    # Here, not at the top: every job imports the report (and so this module) before its config is checked.
    from emotion.sweeps.comparison import speaker_counts

    rng = np.random.default_rng(seed)
    counts = speaker_counts(rng.integers(0, len(names), size=(resamples, len(names))), len(names))
    resampled = ccc(pred, true, weights=counts[:, speaker_of])
    low, high = np.percentile(resampled, [2.5, 97.5])
    return observed, float(low), float(high)


def write_matrices(sweep_dir: Path, resamples: int = 1000, seed: int = 0) -> list[Matrix]:
    """crosscorpus.md, crosscorpus.csv and crosscorpus.png in `sweep_dir`, when its jobs tested on other corpora."""
    matrices = cross_matrices(sweep_dir, resamples, seed)
    if matrices:
        write_atomically(sweep_dir / "crosscorpus.md", markdown(matrices))
        write_atomically(sweep_dir / "crosscorpus.csv", csv_text(matrices))
        plot(matrices, sweep_dir / "crosscorpus.png")
    return matrices


def markdown(matrices: list[Matrix]) -> str:
    lines = [
        "# Cross-corpus",
        "",
        "Rows: the corpora a model trained on; columns: the corpora its test split was scored on (in-corpus: the "
        "training corpus's own test split). A cell: test CCC per dimension, mean over its runs (folds × seeds), "
        "and [the 95% interval of the pooled CCC over those runs' predictions, resampling speakers]. Corpora rate "
        "on their own scales, mapped to [0, 1]: their ratings need not be the same construct.",
    ]
    for matrix in matrices:
        lines += ["", f"## {matrix.model}", ""]
        lines.append(table_line(["trained on \\ tested on", *matrix.tested]))
        lines.append(table_line(["---"] * (len(matrix.tested) + 1)))
        for trained in matrix.trained:
            cells = [matrix.cells.get((trained, tested)) for tested in matrix.tested]
            lines.append(
                table_line(
                    [
                        trained,
                        *(_cell_text(cell, trained, tested) for cell, tested in zip(cells, matrix.tested, strict=True)),
                    ]
                )
            )
    return "\n".join(lines) + "\n"


def _cell_text(cell: Cell | None, trained: str, tested: str) -> str:
    if cell is None:
        return "–"
    parts = []
    for key in DIMENSIONS:
        if cell.mean.get(key) is None:
            continue
        interval = f" [{number(cell.low[key], 2)}, {number(cell.high[key], 2)}]" if key in cell.low else ""
        parts.append(f"{key[-1].upper()} {number(cell.mean[key], 3)}{interval}")
    in_corpus = " (in-corpus)" if tested in trained.split(" + ") else ""
    return " · ".join(parts) + in_corpus + f" ({cell.runs} run{'s' if cell.runs != 1 else ''})"


def csv_text(matrices: list[Matrix]) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["model", "trained_on", "tested_on", "in_corpus", "score", "runs", "mean", "pooled", "low", "high"])
    for matrix in matrices:
        for (trained, tested), cell in matrix.cells.items():
            for key in (*DIMENSIONS, "ccc_mean"):
                if cell.mean.get(key) is None:
                    continue
                pooled = [cell.pooled.get(key), cell.low.get(key), cell.high.get(key)]
                in_corpus = tested in trained.split(" + ")
                writer.writerow([matrix.model, trained, tested, in_corpus, key, cell.runs, cell.mean[key], *pooled])
    return text.getvalue()


def plot(matrices: list[Matrix], path: Path) -> None:
    """A heatmap per model configuration and dimension: mean test CCC, trained on (rows) × tested on (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        key for key in DIMENSIONS if any(cell.mean.get(key) is not None for m in matrices for cell in m.cells.values())
    ]
    figure, axes = plt.subplots(
        len(matrices), len(keys), figsize=(3.2 * len(keys) + 1, 2.6 * len(matrices) + 0.6), squeeze=False
    )
    for row, matrix in enumerate(matrices):
        for column, key in enumerate(keys):
            values = np.array(
                [
                    [_value(matrix.cells.get((trained, tested)), key) for tested in matrix.tested]
                    for trained in matrix.trained
                ]
            )
            ax = axes[row, column]
            image = ax.imshow(values, vmin=-0.2, vmax=1.0, cmap="viridis")
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
            ax.set_xticks(range(len(matrix.tested)), matrix.tested, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(len(matrix.trained)), matrix.trained, fontsize=8)
            ax.set_title(f"{matrix.model}: CCC-{key[-1].upper()}", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.supxlabel("tested on")
    figure.supylabel("trained on")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _value(cell: Cell | None, key: str) -> float:
    return np.nan if cell is None or cell.mean.get(key) is None else cell.mean[key]
