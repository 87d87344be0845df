"""A sweep's job folders read back: each job's overrides, fold, seed and metrics, grouped into configurations.

A configuration is a job's overrides other than the fold and the seed: its runs are its (fold, seed) jobs.
Read from the files every job writes (`.hydra/` and metrics.json), so that a partial sweep, or one whose
jobs are still running, reads as far as it got.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from emotion.training.outputs import read_metrics

FOLD_KEY = "data.fold"
EXCLUDED_FOLD_KEY = "data.exclude_fold"  # the fold a nested search's study leaves out (emotion.sweeps.studies)
SEED_KEY = "trainer.seed"
DONE = ("completed", "evaluated")  # trained jobs, and evaluate.py's runs: both have test scores


@dataclass(frozen=True)
class Job:
    folder: Path
    overrides: dict[str, str]  # as typed, e.g. {"data.fold": "1", "model.d_hidden": "384"}
    metrics: dict | None  # None while the job runs (or if it was killed before writing one, or it is unreadable)
    seed: str | None = None  # trainer.seed as the job ran with it (None for evaluate.py's runs)

    @property
    def fold(self) -> str | None:
        return self.overrides.get(FOLD_KEY)

    @property
    def run(self) -> tuple[str | None, str | None]:
        """Which run of its configuration the job is: (fold, seed)."""
        return self.fold, self.seed

    @property
    def status(self) -> str:
        return self.metrics["status"] if self.metrics else "not finished"


@dataclass
class Row:
    """A configuration and its jobs (one per fold and seed)."""

    overrides: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    def finished(self, *statuses: str) -> list[Job]:
        return [job for job in self.jobs if job.metrics and job.metrics["status"] in statuses]

    @property
    def done(self) -> list[Job]:
        return self.finished(*DONE)


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep, with the overrides that name it (those that change results)."""
    jobs = []
    # At any depth: sweeps made before values' `/` stopped nesting folders have jobs further down.
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        overrides = job_overrides(folder)
        jobs.append(Job(folder, overrides, read_metrics(folder / "metrics.json"), _seed(folder, overrides)))
    return jobs


def job_overrides(folder: Path) -> dict[str, str]:
    """The overrides a job folder was made with, less those that change no result (Hydra's exclude_keys)."""
    hydra = _read_yaml(folder / ".hydra" / "hydra.yaml")["hydra"]
    ignored = set(hydra["job"]["config"]["override_dirname"]["exclude_keys"])
    typed = _read_yaml(folder / ".hydra" / "overrides.yaml") or []
    overrides = dict(item.split("=", 1) for item in typed)
    return {key: value for key, value in overrides.items() if key not in ignored}


def _read_yaml(path: Path):
    """A job's .hydra file as plain data, with libyaml's parser: the table reads every job's files after
    every job, and OmegaConf's own loading takes ten times as long."""
    with open(path) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _seed(folder: Path, overrides: dict[str, str]) -> str | None:
    """The seed a job trained with: its override, else its config's (a sweep need not sweep seeds)."""
    if SEED_KEY in overrides:
        return overrides[SEED_KEY]
    config = folder / ".hydra" / "config.yaml"
    seed = (_read_yaml(config).get("trainer") or {}).get("seed") if config.is_file() else None
    return None if seed is None else str(seed)


def configuration(overrides: dict[str, str]) -> dict[str, str]:
    """What makes a row of the table: the overrides other than the fold and the seed."""
    return {key: value for key, value in overrides.items() if key not in (FOLD_KEY, SEED_KEY)}


def group_rows(jobs: list[Job]) -> list[Row]:
    """One row per configuration, in the order the configurations first appear."""
    rows: dict[tuple, Row] = {}
    for job in jobs:
        config = configuration(job.overrides)
        rows.setdefault(tuple(sorted(config.items())), Row(config)).jobs.append(job)
    return list(rows.values())


def expected_runs(sweep_dir: Path, jobs: list[Job]) -> list[tuple[str | None, str | None]]:
    """The (fold, seed) runs the sweep asks of every configuration (from multirun.yaml), else those seen."""
    multirun = read_multirun(sweep_dir)
    folds = _swept_values(multirun, FOLD_KEY) or sorted({job.fold for job in jobs}, key=str)
    seeds = _swept_values(multirun, SEED_KEY) or sorted({job.seed for job in jobs}, key=str)
    return list(itertools.product(folds or [None], seeds or [None]))


def read_multirun(sweep_dir: Path) -> dict:
    """The sweep's multirun.yaml (its config as launched) as plain data; empty when there is none."""
    try:
        return _read_yaml(sweep_dir / "multirun.yaml") or {}
    except OSError:
        return {}


def _swept_values(multirun: dict, key: str) -> list[str] | None:
    """The values `key` takes in the sweep's command line or named sweep; None when it is not set there."""
    hydra = multirun.get("hydra") or {}
    task = (hydra.get("overrides") or {}).get("task") or []
    params = (hydra.get("sweeper") or {}).get("params") or {}
    for text in [*task, *(f"{name}={value}" for name, value in params.items())]:
        if text.split("=", 1)[0].lstrip("+~") != key:
            continue  # parsed only when it is the key: a named sweep's other values may be interpolations
        override = OverridesParser.create().parse_overrides([text])[0]
        if override.key_or_group == key:
            if override.is_sweep_override():
                return [str(value) for value in override.sweep_string_iterator()]
            return [str(override.value())]
    return None
