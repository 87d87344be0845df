"""The comparison table of a sweep: one row per configuration, CCC mean ± std over its folds. An
evaluate.py sweep's runs (status `evaluated`) make rows too: one per checkpoint and corpus.

    python -m emotion.report multirun/<sweep name>

Reads every job folder's metrics.json and .hydra/ files (so it works on a partial sweep, and while jobs are
still running) and writes summary.csv, summary.md and summary.png into the sweep folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from emotion.files import locked, write_atomically

FOLD_KEY = "data.fold"
SCORES = (("ccc_v", "CCC-V"), ("ccc_a", "CCC-A"), ("ccc_d", "CCC-D"))  # valence first: the headline


@dataclass(frozen=True)
class Job:
    folder: Path
    overrides: dict[str, str]  # as typed, e.g. {"data.fold": "1", "model.d_hidden": "384"}
    metrics: dict | None  # None while the job runs (or if it was killed before writing one)


@dataclass
class Row:
    """A configuration: the overrides other than the fold, and its jobs (one per fold)."""

    overrides: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    def finished(self, *statuses: str) -> list[Job]:
        return [job for job in self.jobs if job.metrics and job.metrics["status"] in statuses]


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep, with the overrides that name it (those that change results)."""
    jobs = []
    # At any depth: sweeps made before values' `/` stopped nesting folders have jobs further down.
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        jobs.append(Job(folder, job_overrides(folder), metrics))
    return jobs


def job_overrides(folder: Path) -> dict[str, str]:
    """The overrides a job folder was made with, less those that change no result (Hydra's exclude_keys)."""
    hydra = OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra
    ignored = set(hydra.job.config.override_dirname.exclude_keys)
    overrides = dict(
        item.split("=", 1) for item in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    )
    return {key: value for key, value in overrides.items() if key not in ignored}


def configuration(overrides: dict[str, str]) -> dict[str, str]:
    """What makes a row of the table: the overrides other than the fold."""
    return {key: value for key, value in overrides.items() if key != FOLD_KEY}


def group_rows(jobs: list[Job]) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for job in jobs:
        config = configuration(job.overrides)
        rows.setdefault(tuple(sorted(config.items())), Row(config)).jobs.append(job)
    return list(rows.values())


def expected_folds(sweep_dir: Path, jobs: list[Job]) -> int:
    """How many folds the sweep asked for (from multirun.yaml), else how many it has seen."""
    try:
        multirun = OmegaConf.load(sweep_dir / "multirun.yaml")
        task = list(multirun.hydra.overrides.task)
        params = multirun.hydra.sweeper.params or {}
    except (OSError, AttributeError):
        task, params = [], {}
    for text in [*task, *(f"{key}={value}" for key, value in params.items())]:
        override = OverridesParser.create().parse_overrides([text])[0]
        if override.key_or_group == FOLD_KEY:
            return len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    return max(1, len({job.overrides.get(FOLD_KEY) for job in jobs}))


def summarise(sweep_dir: Path) -> tuple[list[str], list[dict]]:
    """Column names and one record per configuration, in the order the configurations first appear."""
    jobs = collect_jobs(sweep_dir)
    rows = group_rows(jobs)
    folds = expected_folds(sweep_dir, jobs)
    config_keys = sorted({key for row in rows for key in row.overrides})
    records = []
    for row in rows:
        # Trained jobs, and evaluate.py's runs of trained models: both have test scores.
        done, failed = row.finished("completed", "evaluated"), row.finished("failed")
        timed = [job.metrics["sec_per_epoch"] for job in done if job.metrics["sec_per_epoch"] is not None]
        record = {"profile": _first(done + failed, "profile"), **{k: row.overrides.get(k, "") for k in config_keys}}
        for key, _ in SCORES:
            values = [job.metrics["test"][key] for job in done if job.metrics["test"][key] is not None]
            record[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
            record[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
            record[f"{key}_folds"] = values
        record.update(
            folds_done=len(done),
            folds_failed=len(failed),
            folds_expected=folds,
            peak_mem_gb=max((job.metrics["peak_mem_gb"] for job in done), default=math.nan),
            min_per_epoch=statistics.fmean(seconds / 60 for seconds in timed) if timed else math.nan,
            params_m=(done[0].metrics["params"]["total"] / 1e6) if done else math.nan,
        )
        records.append(record)
    columns = ["profile", *config_keys, "params_m", "peak_mem_gb", "min_per_epoch"]
    columns += [f"{key}_{stat}" for key, _ in SCORES for stat in ("mean", "std")]
    columns += ["folds_done", "folds_failed", "folds_expected"]
    return columns, records


def _first(jobs: list[Job], key: str) -> str:
    return next((str(job.metrics[key]) for job in jobs if job.metrics.get(key) is not None), "")


def write_summary(sweep_dir: str | Path) -> Path:
    """Write summary.csv, summary.md and summary.png; returns the path of summary.md."""
    sweep_dir = Path(sweep_dir)
    with locked(sweep_dir / ".summary.lock"):
        columns, records = summarise(sweep_dir)
        write_atomically(sweep_dir / "summary.csv", _csv_text(columns, records))
        write_atomically(sweep_dir / "summary.md", _markdown(columns, records))
        _plot(records, sweep_dir / "summary.png")
    return sweep_dir / "summary.md"


def _csv_text(columns: list[str], records: list[dict]) -> str:
    with tempfile.SpooledTemporaryFile(mode="w+", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        f.seek(0)
        return f.read()


def _markdown(columns: list[str], records: list[dict]) -> str:
    config_keys = [c for c in columns if c not in ("profile", "params_m", "peak_mem_gb", "min_per_epoch")]
    config_keys = [c for c in config_keys if not c.startswith(("ccc_", "folds_"))]
    header = [
        "profile",
        *config_keys,
        "params (M)",
        "peak mem (GB)",
        "min/epoch",
        *(name for _, name in SCORES),
        "folds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        folds = f"{r['folds_done']}/{r['folds_expected']}" + (
            f" ({r['folds_failed']} failed)" if r["folds_failed"] else ""
        )
        cells = [r["profile"], *(r[k] for k in config_keys), _num(r["params_m"], 2), _num(r["peak_mem_gb"], 1)]
        cells += [_num(r["min_per_epoch"], 2), *(_mean_std(r, key) for key, _ in SCORES), folds]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(record: dict, key: str) -> str:
    mean, std = record[f"{key}_mean"], record[f"{key}_std"]
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _num(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _plot(records: list[dict], path: Path) -> None:
    """CCC per configuration: a bar for the mean, a dot for each fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_label(r) for r in records]
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4 + 1.2 * len(records), 4), sharey=True, squeeze=False)
    for ax, (key, name) in zip(axes[0], SCORES, strict=True):
        for x, record in enumerate(records):
            ax.bar(x, 0 if math.isnan(record[f"{key}_mean"]) else record[f"{key}_mean"], color="#9ecae1")
            ax.plot([x] * len(record[f"{key}_folds"]), record[f"{key}_folds"], "o", color="#08519c", markersize=4)
        ax.set_title(name)
        ax.set_xticks(range(len(records)), labels, rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="grey", linewidth=0.5)
    axes[0][0].set_ylabel("test CCC (dots: folds)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _label(record: dict) -> str:
    """`standard mamba_n_layers=2 d_hidden=384`: each value with the last part of its key."""
    settings = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in record.items() if "." in k and v != ""]
    return " ".join([record["profile"], *settings])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. multirun/capacity")
    args = parser.parse_args()
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    summary = write_summary(args.sweep_dir)
    print(summary.read_text(), end="")
    print(f"\nwrote {summary}, {summary.with_suffix('.csv')} and {summary.with_suffix('.png')}")


if __name__ == "__main__":
    main()
