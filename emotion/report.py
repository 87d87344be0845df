"""The comparison table of a sweep: one row per configuration, over its runs (folds × seeds), and the nested
estimate that a paper reports.

    python -m emotion.report multirun/<sweep name> [--select val_ccc_v] [--reference model.d_hidden=256] [--wandb]

Reads every job folder's metrics.json, predictions.csv and .hydra/ files (so it works on a partial sweep,
and while jobs are still running) and writes summary.csv, summary.md, summary.png and nested.csv into the
sweep folder. Validation decides, test only reports:
- the headline is nested: each test fold's configuration is the one its own validation score chooses
  (emotion.sweeps.nested), so no choice saw the labels it is scored on;
- rows are ranked by their mean validation score over folds (`report.select`), a view; the best is marked;
- every row is compared with a reference row (`report.reference`, default the marked one) by a paired t-test
  over folds, Holm-adjusted over the rows, and a paired bootstrap over speakers of pooled CCC.
An evaluate.py sweep's runs (status `evaluated`) make rows too: one per checkpoint and corpus. The settings
are the sweep's own `report.*` (its multirun.yaml) unless the command line says otherwise.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import math
import os
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from emotion.files import locked, write_atomically
from emotion.selection import SELECTABLE, score_key
from emotion.settings import ReportSettings
from emotion.sweeps.breakdown import breakdown_lines, plot_robustness
from emotion.sweeps.folders import register_resolver, study_storage
from emotion.sweeps.jobs import Row, collect_jobs, expected_runs, group_rows, read_multirun
from emotion.sweeps.markdown import number, table_line
from emotion.sweeps.matrix import write_matrices
from emotion.sweeps.search_report import SearchRecord, plot_search, read_search, search_markdown

log = logging.getLogger(__name__)
# Job processes of the GPU pool and SLURM import this module (SweepSummary) before naming their folders.
register_resolver()

if TYPE_CHECKING:
    from emotion.sweeps.comparison import Difference, RowResults
    from emotion.sweeps.nested import NestedEstimate

SCORES = (("ccc_v", "CCC-V"), ("ccc_a", "CCC-A"), ("ccc_d", "CCC-D"))  # valence first: the headline

# The report's settings, each documented there: the `report` config group, which conf/train.yaml and
# conf/evaluate.yaml compose, and from which the report command fills what a sweep's multirun.yaml lacks.
DEFAULT_SETTINGS_FILE = Path(__file__).resolve().parents[1] / "conf" / "report" / "default.yaml"


def default_settings(**changes) -> ReportSettings:
    """conf/report/default.yaml's settings, with `changes` instead."""
    return ReportSettings.of({**_default_settings(), **changes})


def sweep_settings(sweep_dir: Path, **given) -> ReportSettings:
    """The settings the sweep ran with (its multirun.yaml's report.*), with `given` ones (not None) instead;
    the defaults for those that neither names (a sweep from before a setting existed)."""
    known = {setting.name for setting in fields(ReportSettings)}
    own = {key: value for key, value in (read_multirun(sweep_dir).get("report") or {}).items() if key in known}
    return default_settings(**{**own, **{key: value for key, value in given.items() if value is not None}})


@cache
def _default_settings() -> dict:
    return OmegaConf.to_container(OmegaConf.load(DEFAULT_SETTINGS_FILE))


@dataclass(frozen=True)
class RowScore:
    """A row's test score on one dimension (CCC-V, …), over its runs."""

    mean: float  # over the row's runs (folds × seeds)
    std: float  # their sample std; NaN below two runs
    seed_std: float  # with more than one seed: the std over seeds of the mean over folds (how far a rerun moves it)
    pooled: float  # CCC over all of a seed's test predictions together, mean over the seeds that have every fold
    runs: list[float]  # each run's, the plot's dots


@dataclass(frozen=True)
class Comparison:
    """A row minus the reference on one test score: over the folds both have, by a paired t-test whose p-value
    is Holm-adjusted over the rows compared with the reference (one family per score), and pooled, with a
    paired speaker-bootstrap interval."""

    difference: Difference  # emotion.sweeps.comparison.compare's: folds, mean, p_value, pooled, low, high
    holm_p: float  # difference.p_value adjusted


@dataclass(frozen=True)
class RowRecord:
    """One configuration's row of the table (a line of summary.csv): what its runs scored and cost, which are
    missing, and how the row was ranked, chosen and compared."""

    row_index: int  # in the sweep's rows (group_rows' order): how a nested choice names it (FoldChoice.row_index)
    profile: str
    config: dict[str, str]  # its value of each of the sweep's config keys; "" where it has none
    params_m: float
    peak_mem_gb: float
    min_per_epoch: float
    validation: float  # report.select of each run's best validation epoch, mean over the row's runs
    scores: dict[str, RowScore]  # per score of SCORES (ccc_v, …)
    runs_done: int
    runs_failed: int
    runs_expected: int
    complete: bool  # every expected run has a result
    missing: str  # the expected runs without one, and why
    seen: str  # why its test scores are no test; empty when nothing says so
    selected: bool = False  # the ★ row
    reference: bool = False  # the row every other is compared with
    comparison: dict[str, Comparison] = field(default_factory=dict)  # per score, with the reference; empty for it
    trials: str = ""  # in a search: the trials that ran its configuration

    def label(self, keys: list[str]) -> str:
        return configuration_label(self.profile, self.config, keys)


@dataclass(frozen=True)
class Summary:
    """What the report writes: the rows, the nested estimate and the search, with the settings they were
    ranked, chosen and compared by."""

    records: list[RowRecord]  # one per configuration, ranked: best mean validation first
    config_keys: list[str]  # the overrides that tell configurations apart, sorted
    settings: ReportSettings  # what ranked, chose and compared the rows
    nested: NestedEstimate | None  # the headline; its choices' rows are `record_of(choice.row_index)`
    search: SearchRecord | None  # the sweep's search; None for a grid
    kept_by: str  # the report.select the sweep's jobs kept their best epochs by
    rows: list[Row] = field(default_factory=list)  # the sweep's configurations and their jobs, by row_index

    @property
    def columns(self) -> list[str]:
        """summary.csv's header."""
        return list(_csv_columns(self))

    def record_of(self, row_index: int) -> RowRecord:
        return next(record for record in self.records if record.row_index == row_index)


def summarise(sweep_dir: Path, settings: ReportSettings | None = None) -> tuple[list[str], list[RowRecord]]:
    """summary.csv's column names and one record per configuration, best validation first."""
    summary = summarise_sweep(sweep_dir, settings)
    return summary.columns, summary.records


def summarise_sweep(sweep_dir: Path, settings: ReportSettings | None = None) -> Summary:
    """The whole summary: ranked records, the nested estimate and the sweep's search. Without `settings`,
    the sweep's own."""
    # On first use: the sweep callback imports this module in every job before its config is checked, and
    # the tests and the bootstrap bring scipy.
    from emotion.sweeps.comparison import RowResults
    from emotion.sweeps.nested import nested_estimate

    own = sweep_settings(sweep_dir)  # what the sweep's jobs ran with
    settings = settings or own
    search = read_search(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    rows = group_rows(jobs)
    sweep_runs = expected_runs(sweep_dir, jobs)
    expected = [_expected(row, sweep_runs, search) for row in rows]
    config_keys = sorted({key for row in rows for key in row.overrides})
    results = [
        RowResults.of(row.done, score_key(settings.select), list(dict.fromkeys(fold for fold, _ in runs)))
        for row, runs in zip(rows, expected, strict=True)
    ]
    records = [
        _record(i, row, result, runs, config_keys)
        for i, (row, result, runs) in enumerate(zip(rows, results, expected, strict=True))
    ]
    # A search's studies mark their own best trials; its rows mix studies and folds: nothing to mark here.
    selected_index = None if search is not None else _select(records)
    reference_index = _reference_index(rows, settings.reference, selected_index)
    comparisons = _comparisons(results, reference_index, settings) if reference_index is not None else {}
    records = [
        replace(
            record,
            selected=i == selected_index,
            reference=i == reference_index,
            comparison=comparisons.get(i, {}),
            trials=_trials(row, search),
        )
        for i, (record, row) in enumerate(zip(records, rows, strict=True))
    ]
    eligible = [_candidate(record, row, search) for record, row in zip(records, rows, strict=True)]
    nested = nested_estimate(results, eligible, [score for score, _ in SCORES])
    ranked = sorted(records, key=_rank)
    return Summary(ranked, config_keys, settings, nested, search, kept_by=own.select, rows=rows)


# summary.csv's columns of a row's test score on each dimension (ccc_v_mean, …): the RowScore fields so named.
SCORE_COLUMNS = ("mean", "std", "seed_std", "pooled")
# Its columns of a row's comparison with the reference on each dimension (ccc_v_diff, …), and their values.
COMPARISON_COLUMNS: dict[str, Callable[[Comparison], object]] = {
    "diff": lambda comparison: comparison.difference.mean,
    "diff_p": lambda comparison: comparison.difference.p_value,
    "diff_p_holm": lambda comparison: comparison.holm_p,
    "diff_folds": lambda comparison: comparison.difference.folds,
    "pooled_diff": lambda comparison: comparison.difference.pooled,
    "pooled_diff_low": lambda comparison: comparison.difference.low,
    "pooled_diff_high": lambda comparison: comparison.difference.high,
}


def _csv_columns(summary: Summary) -> dict[str, Callable[[RowRecord], object]]:
    """summary.csv's columns, in order, each with its value in a row's record. A row without a comparison
    (the reference, or every row when there is none) leaves the comparison's columns empty."""

    def attribute(name: str) -> Callable[[RowRecord], object]:
        return lambda record: getattr(record, name)

    def config(key: str) -> Callable[[RowRecord], object]:
        return lambda record: record.config[key]

    def score_column(score: str, name: str) -> Callable[[RowRecord], object]:
        return lambda record: getattr(record.scores[score], name)

    def compared(score: str, value: Callable[[Comparison], object]) -> Callable[[RowRecord], object]:
        return lambda record: value(record.comparison[score]) if score in record.comparison else ""

    columns = {"trials": attribute("trials")} if summary.search is not None else {}
    columns |= {"profile": attribute("profile"), **{key: config(key) for key in summary.config_keys}}
    columns |= {name: attribute(name) for name in ("params_m", "peak_mem_gb", "min_per_epoch", "selected")}
    columns[summary.settings.select] = attribute("validation")
    columns |= {f"{score}_{name}": score_column(score, name) for score, _ in SCORES for name in SCORE_COLUMNS}
    columns["reference"] = attribute("reference")
    columns |= {
        f"{score}_{name}": compared(score, value) for score, _ in SCORES for name, value in COMPARISON_COLUMNS.items()
    }
    completeness = ("runs_done", "runs_failed", "runs_expected", "complete", "missing", "seen")
    return columns | {name: attribute(name) for name in completeness}


def _expected(row: Row, sweep_runs: list[tuple], search: SearchRecord | None) -> list[tuple]:
    """The (fold, seed) runs a row should have: the sweep's; in a search, its study's folds (a study's choice
    on its test fold: the folds it ran)."""
    if search is None:
        return sweep_runs
    study = search.study_of(row.overrides)
    seeds = list(dict.fromkeys(seed for _, seed in sweep_runs)) or [None]
    folds = [None if fold == "null" else fold for fold in study.folds] if study else [job.fold for job in row.jobs]
    return [(fold, seed) for fold in dict.fromkeys(folds) for seed in seeds]


def _candidate(record: RowRecord, row: Row, search: SearchRecord | None) -> bool:
    """Whether a row may be chosen for the nested estimate. Not a row whose test was seen in training. In a
    search on a cross-validated corpus, only the jobs training each study's choice on its test fold: the
    configurations of its trials were proposed by a sampler that saw every fold its jobs trained on."""
    if record.seen:
        return False
    return search is None or search.fixed_splits or all(job.folder.name in search.outer_jobs for job in row.jobs)


def _rank(record: RowRecord) -> tuple[bool, bool, float]:
    """Rows with all their runs first, rows whose test was seen in training last, each group by validation,
    best first; no validation score last."""
    score = record.validation
    return not record.complete, bool(record.seen), -score if not math.isnan(score) else math.inf


def _select(records: list[RowRecord]) -> int | None:
    """The row with the best validation score among those with all their runs (all rows, while none has),
    whose test items no model of theirs trained on: a row of one lucky run must not beat rows that had every
    chance to be unlucky."""
    candidates = [i for i, r in enumerate(records) if not math.isnan(r.validation) and not r.seen]
    complete = [i for i in candidates if records[i].complete]
    return max(complete or candidates, key=lambda i: records[i].validation, default=None)


def _trials(row: Row, search: SearchRecord | None) -> str:
    """In a search, which trials ran the row's configuration: `0 3`."""
    return " ".join(map(str, search.trials_of(row.overrides))) if search is not None else ""


def _record(index: int, row: Row, results: RowResults, expected: list[tuple], config_keys: list[str]) -> RowRecord:
    """A row's record before it is ranked, chosen and compared."""
    done = row.done
    validation = list(results.validation.values())
    timed = [job.metrics["sec_per_epoch"] for job in done if job.metrics.get("sec_per_epoch") is not None]
    return RowRecord(
        row_index=index,
        profile=_first(row.jobs, "profile"),
        config={key: row.overrides.get(key, "") for key in config_keys},
        params_m=(done[0].metrics["params"]["total"] / 1e6) if done else math.nan,
        peak_mem_gb=max((job.metrics["peak_mem_gb"] for job in done), default=math.nan),
        min_per_epoch=statistics.fmean(seconds / 60 for seconds in timed) if timed else math.nan,
        validation=statistics.fmean(validation) if validation else math.nan,
        scores={score: _row_score(results, score) for score, _ in SCORES},
        runs_done=len(done),
        runs_failed=len(row.finished("failed")),
        runs_expected=len(expected),
        # Every expected run has a result; runs beyond them (an earlier, wider sweep's) count too.
        complete=set(expected) <= {job.run for job in done},
        missing=_missing(row, expected),
        seen=_seen(done),
    )


def _row_score(results: RowResults, score: str) -> RowScore:
    from emotion.sweeps.comparison import pooled_ccc

    values = results.values(score)
    runs = list(values.values())
    return RowScore(
        mean=statistics.fmean(runs) if runs else math.nan,
        std=statistics.stdev(runs) if len(runs) > 1 else math.nan,
        seed_std=_seed_std(values),
        pooled=pooled_ccc(results.predictions, score, results.folds),
        runs=runs,
    )


def _seen(jobs) -> str:
    """Why a row's test scores are no test: an evaluated model trained or validated on the evaluated speakers
    (evaluate.py's `seen_in_training`), or a job started (model.init_from) from a model that saw its test
    speakers. Empty when nothing says so."""
    reasons = []
    for job in jobs:
        reasons += (job.metrics.get("data") or {}).get("seen_in_training") or []
        start = job.metrics.get("init_from") or {}
        if start.get("seen_test_speakers"):
            reasons.append(
                f"started (model.init_from) from a model that trained or validated on {start['seen_test_speakers']} "
                "of its test speakers"
            )
    return "; ".join(dict.fromkeys(reasons))


def _seed_std(values: dict[tuple, float]) -> float:
    """With more than one seed: the std over seeds of the mean over folds (how far a rerun moves it)."""
    by_seed: dict = {}
    for (_, seed), value in values.items():
        by_seed.setdefault(seed, []).append(value)
    if len(by_seed) < 2:
        return math.nan
    return statistics.stdev(statistics.fmean(folds) for folds in by_seed.values())


def _missing(row: Row, expected: list[tuple]) -> str:
    """The expected runs without a result, and why: `fold 2 seed 1 (failed); fold 3 seed 0 (not run)`."""
    by_run = {job.run: job for job in row.jobs}
    done = {job.run for job in row.done}
    # A search's pruned trial leaves its other folds unrun on purpose.
    not_run = "not run: its trial was pruned" if row.finished("pruned") else "not run"
    missing = []
    for run in expected:
        if run in done:
            continue
        job = by_run.get(run)
        why = not_run if job is None else ("running or killed" if job.metrics is None else _ended(job))
        fold, seed = run
        missing.append(
            " ".join(
                part for part in (f"fold {fold}" if fold else "", f"seed {seed}" if seed else "", f"({why})") if part
            )
        )
    return "; ".join(missing)


def _ended(job) -> str:
    if job.status == "pruned":
        epochs = job.metrics.get("epochs") or 0
        return f"pruned after {epochs} epoch{'s' if epochs != 1 else ''}"
    return job.status


def _reference_index(rows: list[Row], reference: str | None, selected_index: int | None) -> int | None:
    """The row named by `report.reference` (its overrides, e.g. `model.d_hidden=256 model.dropout=0.1`),
    else the selected one."""
    if reference is None:
        return selected_index
    items = reference.split()  # by whitespace only: values may hold commas, as in layers=[6,12,18,24]
    if not items or not all("=" in item for item in items):
        raise ValueError(f"report.reference={reference!r}: give key=value overrides, e.g. model.d_hidden=256")
    wanted = dict(item.split("=", 1) for item in items)
    matches = [i for i, row in enumerate(rows) if all(row.overrides.get(k) == v for k, v in wanted.items())]
    if len(matches) != 1:
        known = "; ".join(" ".join(f"{k}={v}" for k, v in row.overrides.items()) or "(no overrides)" for row in rows)
        raise ValueError(f"report.reference={reference!r} names {len(matches)} rows, not one; the rows are: {known}")
    return matches[0]


def _comparisons(
    results: list[RowResults], reference_index: int, settings: ReportSettings
) -> dict[int, dict[str, Comparison]]:
    """Each other row against the reference, per score; the p-values of one score are one Holm family."""
    from emotion.sweeps.comparison import compare, holm

    others = [i for i in range(len(results)) if i != reference_index]
    comparisons: dict[int, dict[str, Comparison]] = {i: {} for i in others}
    for score, _ in SCORES:
        differences = [
            compare(results[i], results[reference_index], score, settings.bootstrap, settings.seed) for i in others
        ]
        adjusted = holm([difference.p_value for difference in differences])
        for i, difference, holm_p in zip(others, differences, adjusted, strict=True):
            comparisons[i][score] = Comparison(difference, holm_p)
    return comparisons


def _first(jobs, key: str) -> str:
    return next((str(job.metrics[key]) for job in jobs if job.metrics and job.metrics.get(key) is not None), "")


def write_summary(sweep_dir: str | Path, settings: ReportSettings | None = None) -> Path:
    """Write summary.csv, summary.md, summary.png and nested.csv (search.png for a search); returns the path
    of summary.md. Without `settings`, the sweep's own."""
    sweep_dir = Path(sweep_dir)
    with locked(sweep_dir / ".summary.lock"):
        summary = summarise_sweep(sweep_dir, settings)
        text = _markdown(summary)
        if summary.search is not None:
            text = "\n".join(_search_lines(summary, sweep_dir)) + "\n\n" + text
            plot_search(summary.search, sweep_dir / "search.png", SELECTABLE[summary.settings.select])
        write_atomically(sweep_dir / "summary.csv", _csv_text(*_summary_table(summary)))
        write_atomically(sweep_dir / "nested.csv", _csv_text(*_nested_table(summary)))
        keys = _varying(summary.config_keys, summary.records)
        labels = [summary.record_of(index).label(keys) for index in range(len(summary.rows))]
        text += "\n".join(breakdown_lines(summary.rows, labels)) + "\n"
        if plot_robustness(summary.rows, labels, sweep_dir / "robustness.png"):
            text += "\nCCC against SNR for each row: robustness.png.\n"
        write_atomically(sweep_dir / "summary.md", text)
        _plot(summary.records, summary.config_keys, sweep_dir / "summary.png")
        write_matrices(sweep_dir, summary.settings.bootstrap, summary.settings.seed)  # jobs tested on other corpora
    return sweep_dir / "summary.md"


def _search_lines(summary: Summary, sweep_dir: Path) -> list[str]:
    """The search's studies, each with the clean test score of its choice: the nested estimate's choice for
    the study's test fold (or, with fixed splits, for the test set), which only the study's choice can be."""

    def tested(study) -> str | None:
        fold = study.test_fold if not summary.search.fixed_splits else None
        choice = next((c for c in summary.nested.choices if c.fold == fold), None) if summary.nested else None
        if choice is None or (study.test_fold is None and not summary.search.fixed_splits):
            return None
        return ", ".join(f"{name} {number(choice.test.get(score, math.nan), 3)}" for score, name in SCORES)

    heading = SELECTABLE[summary.settings.select]
    return search_markdown(summary.search, heading, tested, study_storage(sweep_dir))


def _summary_table(summary: Summary) -> tuple[list[str], list[list]]:
    """summary.csv: a line per row, in the columns _csv_columns names, best validation first."""
    columns = _csv_columns(summary)
    return list(columns), [[value(record) for value in columns.values()] for record in summary.records]


def _csv_text(header: list[str], lines: list[list]) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(lines)
    return text.getvalue()


def _varying(keys: list[str], records: list[RowRecord]) -> list[str]:
    """The keys whose values differ between rows: the others say nothing about any one row."""
    return [key for key in keys if len({record.config[key] for record in records}) > 1]


def _nested_table(summary: Summary) -> tuple[list[str], list[list]]:
    """nested.csv: per test fold, the configuration its validation chose, with its scores on the fold."""
    keys = summary.config_keys
    header = ["fold", "profile", *keys, summary.settings.select, *(score for score, _ in SCORES), "candidates"]
    lines = []
    for choice in summary.nested.choices if summary.nested else []:
        record = summary.record_of(choice.row_index)
        lines.append(
            [
                "" if choice.fold is None else choice.fold,
                record.profile,
                *(record.config[key] for key in keys),
                choice.validation,
                *(choice.test.get(score, math.nan) for score, _ in SCORES),
                choice.candidates,
            ]
        )
    return header, lines


def _markdown(summary: Summary) -> str:
    records, settings = summary.records, summary.settings
    all_keys = summary.config_keys
    keys = _varying(all_keys, records)
    common = [f"{key}={records[0].config[key]}" for key in all_keys if key not in keys and records[0].config[key] != ""]
    heading = SELECTABLE[settings.select]
    lines = _nested_lines(summary, keys, heading)
    if summary.kept_by != settings.select:
        lines += [
            f"Ranked and chosen by {heading}, but the jobs kept their best epochs by {SELECTABLE[summary.kept_by]} "
            f"(the sweep's report.select): each run's {heading} is the one at that epoch, not its best.",
            "",
        ]
    header = ["", "profile", *keys, "params (M)", "peak mem (GB)", "min/epoch", heading]
    header += [*(name for _, name in SCORES), *(f"pooled {name}" for _, name in SCORES), "runs"]
    if summary.search is not None:
        lines += [f"**Every configuration the search trained**, by {heading} (its studies' trials are above):", ""]
    elif len(records) > 1:
        lines += [f"**Configurations ranked by {heading}**, mean over each row's runs (a view; see its legend):", ""]
    lines += [table_line(header), "|" + "---|" * len(header)]
    for r in records:
        runs = f"{r.runs_done}/{r.runs_expected}" + (f" ({r.runs_failed} failed)" if r.runs_failed else "")
        mark = "★" if r.selected else ("⚠" if r.seen else "")
        cells = [mark, r.profile, *(r.config[k] for k in keys), number(r.params_m, 2)]
        cells += [number(r.peak_mem_gb, 1), number(r.min_per_epoch, 2), number(r.validation, 3)]
        cells += [*(_mean_std(r.scores[score]) for score, _ in SCORES)]
        cells += [*(number(r.scores[score].pooled, 3) for score, _ in SCORES)]
        lines.append(table_line([*cells, runs]))
    lines += ["", *_legend(heading, marked=summary.search is None)]
    if common:
        lines += ["", f"Every row: {' '.join(common)}."]
    seen = [f"- {r.label(keys)}: {r.seen}" for r in records if r.seen]
    if seen:
        lines += ["", "⚠ Not a test (left out of every choice):", *seen]
    missing = [f"- {r.label(keys)}: {r.missing}" for r in records if r.missing]
    if missing:
        lines += ["", "Runs without a result:", *missing]
    reference = next((r for r in records if r.reference), None)
    if reference is not None and len(records) > 1:
        lines += ["", *_comparison(records, reference, keys, settings)]
    return "\n".join(lines) + "\n"


def _nested_lines(summary: Summary, keys: list[str], heading: str) -> list[str]:
    """The headline, when there is a choice to make: the nested estimate and each fold's choice."""
    nested = summary.nested
    if nested is None or len(summary.records) < 2:
        return []
    fixed_splits = nested.folds == [None]
    unit = "the test set" if fixed_splits else f"{len(nested.folds)} fold{'s' if len(nested.folds) > 1 else ''}"
    header = ["estimate", "folds", *(name for _, name in SCORES), *(f"pooled {name}" for _, name in SCORES)]
    cells = ["nested" if not fixed_splits else "chosen by validation", ", ".join(map(str, nested.folds))]
    cells += [_spread(nested.mean[score], nested.std[score]) for score, _ in SCORES]
    cells += [number(nested.pooled[score], 3) for score, _ in SCORES]
    chosen_how = (
        "the configuration its study chose without it (the search above)"
        if summary.search is not None
        else f"the configuration with the best {heading} on that fold's own validation split (whose speakers are "
        "never the fold's test speakers)"
    )
    lines = [
        "**Nested cross-validation: each fold's configuration was chosen without its test speakers.** For each "
        f"test fold, {chosen_how}, and its test CCC on the fold; mean ± std over {unit}, and pooled: CCC over the "
        "chosen runs' test predictions of every fold together (mean over seeds). Report these numbers.",
        "",
        table_line(header),
        "|" + "---|" * len(header),
        table_line(cells),
        "",
        table_line(["test fold", "chosen configuration", heading, *(name for _, name in SCORES), "candidates"]),
        "|" + "---|" * (4 + len(SCORES)),
    ]
    for choice in nested.choices:
        label = summary.record_of(choice.row_index).label(keys)
        fold = "test set" if choice.fold is None else choice.fold
        scores = [number(choice.test.get(score, math.nan), 3) for score, _ in SCORES]
        lines.append(table_line([fold, label, number(choice.validation, 3), *scores, choice.candidates]))
    return [*lines, ""]


def _spread(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _legend(heading: str, marked: bool) -> list[str]:
    ranking = (
        f"Rows are ranked by {heading} (each run's best validation epoch, mean over the row's runs), those with "
        "all their runs first"
    )
    if marked:
        ranking += (
            "; ★ marks the best of them. A view, not an estimate: one configuration chosen by validation averaged "
            "over folds has, with data.validation=next_session, had fold k+1's test session (fold k's validation) "
            "in the choice, so the ★ row's test scores lean optimistic; the nested estimate above does not"
        )
    return [
        f"{ranking}. Test scores never choose anything.",
        "CCC-V/A/D: test CCC, mean ± std over the row's runs (folds × seeds); `seeds ± s`: the std over seeds of "
        "the mean over folds, how far a rerun moves the headline. Pooled: CCC over all of a seed's test "
        "predictions together (every fold's), mean over the seeds that have every fold; not the same number as "
        "the mean over folds.",
    ]


def _comparison(records: list[RowRecord], reference: RowRecord, keys: list[str], settings: ReportSettings) -> list[str]:
    header = ["profile", *keys, "folds paired"]
    header += [f"Δ {name} (p, Holm p)" for _, name in SCORES] + [f"Δ pooled {name} [95% CI]" for _, name in SCORES]
    others = len(records) - 1
    lines = [
        f"Compared with {reference.label(keys)} (the reference): Δ is the row's test CCC minus the reference's, "
        "per fold with each fold's seeds averaged first, mean over the folds both have; p: a paired t-test over "
        f"those folds (n = folds: the runs of one fold share its test speakers); Holm p: adjusted for the {others} "
        f"row{'s' if others > 1 else ''} compared with the reference (Holm, per dimension). Δ pooled: the "
        "difference of pooled CCC, with a paired bootstrap 95% interval that resamples speakers, each with all "
        f"their utterances ({settings.bootstrap} resamples, seed {settings.seed}).",
        "",
        table_line(header),
        "|" + "---|" * len(header),
    ]
    headline = SCORES[0][0]  # `folds paired`: those the headline score (valence) pairs
    for r in records:
        if r.reference:
            continue
        cells = [r.profile, *(r.config[k] for k in keys), r.comparison[headline].difference.folds]
        cells += [_tested(r.comparison[score]) for score, _ in SCORES]
        cells += [_interval(r.comparison[score]) for score, _ in SCORES]
        lines.append(table_line(cells))
    return lines


def _tested(comparison: Comparison) -> str:
    """`+0.012 (0.210, 0.420)`: the difference over folds, its p-value and its Holm-adjusted one."""
    difference = comparison.difference
    return f"{_signed(difference.mean)} ({number(difference.p_value, 3)}, {number(comparison.holm_p, 3)})"


def _interval(comparison: Comparison) -> str:
    difference = comparison.difference
    pooled = _signed(difference.pooled)
    return pooled if math.isnan(difference.low) else f"{pooled} [{difference.low:+.3f}, {difference.high:+.3f}]"


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.3f}"


def _mean_std(score: RowScore) -> str:
    text = _spread(score.mean, score.std)
    return text if text == "–" or math.isnan(score.seed_std) else f"{text} (seeds ± {score.seed_std:.3f})"


def _plot(records: list[RowRecord], config_keys: list[str], path: Path) -> None:
    """Per dimension: a bar for each row's mean test CCC, a dot per run; below, each row's pooled-CCC
    difference from the reference with its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _varying(config_keys, records)
    # Wrapped and shortened: a search's configurations name many keys, and the axes must keep their room.
    labels = [textwrap.fill(textwrap.shorten(("★ " if r.selected else "") + r.label(keys), 90), 30) for r in records]
    compared = len(records) > 1 and any(r.reference for r in records)
    n_rows = 2 if compared else 1
    fig, axes = plt.subplots(
        n_rows,
        len(SCORES),
        figsize=(3 * len(SCORES) + 0.8 * len(records), 4 * n_rows),
        sharey="row",
        squeeze=False,
        layout="constrained",  # long row labels: tight_layout gives up on them
    )
    for column, (score, name) in enumerate(SCORES):
        ax = axes[0][column]
        for x, record in enumerate(records):
            row_score = record.scores[score]
            ax.bar(x, 0 if math.isnan(row_score.mean) else row_score.mean, color="#9ecae1")
            ax.plot([x] * len(row_score.runs), row_score.runs, "o", color="#08519c", markersize=4)
        ax.set_title(name)
        ax.axhline(0, color="grey", linewidth=0.5)
        if compared:
            _plot_differences(axes[1][column], records, score)
        for column_ax in axes[:, column]:
            column_ax.set_xticks(range(len(records)), labels, rotation=30, ha="right", fontsize=7)
    axes[0][0].set_ylabel("test CCC (dots: runs)")
    if compared:
        axes[1][0].set_ylabel("Δ pooled CCC vs reference (95% CI)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _plot_differences(ax, records: list[RowRecord], score: str) -> None:
    for x, record in enumerate(records):
        comparison = record.comparison.get(score)
        if comparison is None or math.isnan(comparison.difference.pooled):
            continue
        difference, low, high = comparison.difference.pooled, comparison.difference.low, comparison.difference.high
        error = None if math.isnan(low) else [[difference - low], [high - difference]]
        ax.errorbar(x, difference, yerr=error, fmt="o", color="#a50f15", capsize=4)
    ax.axhline(0, color="grey", linewidth=0.5)


def configuration_label(profile: str, config: dict[str, str], keys: list[str]) -> str:
    """`standard mamba_n_layers=2 d_hidden=384`: the profile and each of `keys` with the last part of its name."""
    values = [f"{key.rsplit('.', 1)[-1]}={config[key]}" for key in keys if config[key] != ""]
    return " ".join([profile, *values])


def log_to_wandb(sweep_dir: Path, group: str, project: str, entity: str | None = None, mode: str = "offline") -> None:
    """A run of job type `summary` in the sweep's group: the table and the nested estimate's choices as W&B
    Tables, the plot as an image, so that the dashboard shows mean ± std per configuration beside the sweep's
    runs. Run after write_summary."""
    import wandb

    tables = {}
    for name in ("summary", "nested"):
        with open(sweep_dir / f"{name}.csv", newline="") as f:
            header, *lines = csv.reader(f)
        tables[f"{name}_table"] = wandb.Table(columns=header, data=lines)
    run = wandb.init(
        project=project,
        entity=entity,
        mode=mode,
        dir=str(sweep_dir),
        group=group,
        job_type="summary",
        name=f"{group} summary",
        # One summary run per sweep folder: a later report updates it instead of adding another.
        id=hashlib.sha1(f"{sweep_dir.resolve()} summary".encode()).hexdigest()[:16],
        resume="allow",
    )
    images = {"summary_plot": wandb.Image(str(sweep_dir / "summary.png"))}
    if (sweep_dir / "crosscorpus.csv").is_file():
        with open(sweep_dir / "crosscorpus.csv", newline="") as f:
            header, *lines = csv.reader(f)
        tables["crosscorpus_table"] = wandb.Table(columns=header, data=lines)
        images["crosscorpus_plot"] = wandb.Image(str(sweep_dir / "crosscorpus.png"))
    run.log({**tables, **images})
    run.finish()


class SweepSummary(Callback):
    """Rewrites the sweep's summary after every job and once more at the end.

    After every job, not only at the end: Hydra skips `on_multirun_end` when a job failed, and with the GPU
    pool or SLURM the jobs end in other processes, so each one brings the table up to date itself.
    """

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            summary_md = self._write(config)
            if summary_md:
                log.info("comparison table updated: %s", _where(summary_md))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        summary_md = self._write(config)
        if not summary_md:
            return
        log.info("sweep summary:\n%s\nwritten to %s", summary_md.read_text(), _where(summary_md))
        logger = config.get("logger")
        if logger is not None and logger.backend == "wandb":
            try:
                log_to_wandb(summary_md.parent, logger.group or config.name, logger.project, logger.entity, logger.mode)
            except Exception:  # the table on disk is written; the dashboard's copy must not fail the sweep
                log.exception("could not log the summary of %s to W&B", summary_md.parent)

    @staticmethod
    def _write(config: DictConfig) -> Path | None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            return write_summary(sweep_dir, ReportSettings.of(config.report))
        except Exception:  # a broken summary must not fail a job that trained fine
            log.exception("could not write the summary of %s", sweep_dir)
            return None


def _where(summary_md: Path) -> str:
    return f"{summary_md} (also {summary_md.with_suffix('.csv').name} and {summary_md.with_suffix('.png').name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. multirun/capacity")
    # Not given: the sweep's own report.* (its multirun.yaml), else conf/report/default.yaml's.
    parser.add_argument("--select", choices=list(SELECTABLE), help="the validation score that ranks and chooses")
    parser.add_argument("--reference", help="overrides naming the row others are compared with, e.g. model=baseline")
    parser.add_argument("--bootstrap", type=int, help="resamples of the paired speaker bootstrap")
    parser.add_argument("--seed", type=int, help="of the bootstrap")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plot as a W&B summary run")
    parser.add_argument("--project", default="emotion", help="W&B project (with --wandb)")
    parser.add_argument("--entity", help="W&B entity (with --wandb)")
    parser.add_argument("--mode", default="offline", choices=("offline", "online"), help="W&B mode (with --wandb)")
    args = parser.parse_args()
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    try:
        settings = sweep_settings(
            args.sweep_dir, select=args.select, reference=args.reference, bootstrap=args.bootstrap, seed=args.seed
        )
        summary_md = write_summary(args.sweep_dir, settings)
    except ValueError as err:  # report.reference names no row, or several; a row's runs repeat an utterance
        parser.error(str(err))
    print(summary_md.read_text(), end="")
    print(f"\nwrote {summary_md}, {summary_md.with_suffix('.csv')} and {summary_md.with_suffix('.png')}")
    if args.wandb:
        log_to_wandb(args.sweep_dir, args.sweep_dir.name, args.project, args.entity, args.mode)
        print(f"logged the summary to W&B ({args.mode}), group {args.sweep_dir.name}")


if __name__ == "__main__":
    main()
