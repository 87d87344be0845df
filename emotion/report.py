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
import math
import os
import statistics
import tempfile
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from emotion.files import locked, write_atomically
from emotion.selection import SELECTABLE, score_key, select_problems
from emotion.sweeps.folders import study_storage
from emotion.sweeps.jobs import Row, collect_jobs, expected_runs, group_rows, read_multirun
from emotion.sweeps.markdown import number, table_line
from emotion.sweeps.search_report import SearchRecord, read_search
from emotion.sweeps.search_report import markdown as search_markdown
from emotion.sweeps.search_report import plot as search_plot

if TYPE_CHECKING:
    from emotion.sweeps.comparison import RowResults
    from emotion.sweeps.nested import NestedEstimate

SCORES = (("ccc_v", "CCC-V"), ("ccc_a", "CCC-A"), ("ccc_d", "CCC-D"))  # valence first: the headline


@dataclass(frozen=True)
class ReportSettings:
    """`report.*` of the sweep's config, or the report command's options."""

    select: str = "val_ccc_mean"  # the validation score that ranks rows and makes every choice
    reference: str | None = None  # overrides naming the row others are compared with; None: the marked row
    bootstrap: int = 1000  # resamples of the paired speaker bootstrap
    seed: int = 0  # of the bootstrap's resampling

    def __post_init__(self) -> None:
        problems = select_problems(self.select, None)
        if problems:
            raise ValueError(problems[0])

    @classmethod
    def of(cls, cfg) -> ReportSettings:
        report = OmegaConf.select(cfg, "report", default=None)
        return cls(**OmegaConf.to_container(report)) if report is not None else cls()

    @classmethod
    def of_sweep(cls, sweep_dir: Path, **given) -> ReportSettings:
        """The settings the sweep ran with (its multirun.yaml's report.*), with `given` ones (not None) instead."""
        known = {field.name for field in fields(cls)}
        own = {key: value for key, value in (read_multirun(sweep_dir).get("report") or {}).items() if key in known}
        return cls(**{**own, **{key: value for key, value in given.items() if value is not None}})


@dataclass(frozen=True)
class Summary:
    columns: list[str]
    records: list[dict]  # one per configuration, ranked: best mean validation first
    nested: NestedEstimate | None  # the headline; its choices' rows are `records[i]["row"] == choice.row`
    search: SearchRecord | None  # the sweep's search; None for a grid
    kept_by: str  # the report.select the sweep's jobs kept their best epochs by

    def record_of(self, row: int) -> dict:
        return next(record for record in self.records if record["row"] == row)


def summarise(sweep_dir: Path, settings: ReportSettings | None = None) -> tuple[list[str], list[dict]]:
    """Column names and one record per configuration, best validation first."""
    summary = summarise_sweep(sweep_dir, settings)
    return summary.columns, summary.records


def summarise_sweep(sweep_dir: Path, settings: ReportSettings | None = None) -> Summary:
    """The whole summary: ranked records, the nested estimate and the sweep's search."""
    # On first use: the sweep callback imports this module in every job before its config is checked, and
    # the statistics bring scipy.
    from emotion.sweeps.comparison import RowResults
    from emotion.sweeps.nested import nested_estimate

    own = ReportSettings.of_sweep(sweep_dir)  # what the sweep's jobs ran with
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
        _record(i, row, result, runs, config_keys, settings)
        for i, (row, result, runs) in enumerate(zip(rows, results, expected, strict=True))
    ]
    # A search's studies mark their own best trials; its rows mix studies and folds: nothing to mark here.
    selected = None if search is not None else _select(records, settings.select)
    for i, record in enumerate(records):
        record["selected"] = i == selected
    reference = _reference_row(rows, settings.reference, selected)
    for i, record in enumerate(records):
        record["reference"] = i == reference
    if reference is not None:
        _add_differences(records, results, reference, settings)
    eligible = [_candidate(record, row, search) for record, row in zip(records, rows, strict=True)]
    nested = nested_estimate(results, eligible, [key for key, _ in SCORES])
    order = sorted(range(len(records)), key=lambda i: _rank(records[i], settings.select))
    if search is not None:  # which trials ran each row's configuration
        for row, record in zip(rows, records, strict=True):
            record["trials"] = " ".join(map(str, search.trials_of(row.overrides)))
    columns = _columns(config_keys, settings.select, searched=search is not None)
    return Summary(columns, [records[i] for i in order], nested, search, kept_by=own.select)


def _columns(config_keys: list[str], select: str, searched: bool) -> list[str]:
    """summary.csv's columns, in order."""
    columns = ["trials"] if searched else []
    columns += ["profile", *config_keys, "params_m", "peak_mem_gb", "min_per_epoch", "selected", select]
    columns += [f"{key}_{stat}" for key, _ in SCORES for stat in ("mean", "std", "seed_std", "pooled")]
    columns += ["reference"]
    columns += [f"{key}_{stat}" for key, _ in SCORES for stat in DIFFERENCE_STATS]
    return columns + ["runs_done", "runs_failed", "runs_expected", "complete", "missing", "seen"]


def _expected(row: Row, sweep_runs: list[tuple], search: SearchRecord | None) -> list[tuple]:
    """The (fold, seed) runs a row should have: the sweep's; in a search, its study's folds (a study's choice
    on its test fold: the folds it ran)."""
    if search is None:
        return sweep_runs
    study = search.study_of(row.overrides)
    seeds = list(dict.fromkeys(seed for _, seed in sweep_runs)) or [None]
    folds = [None if fold == "null" else fold for fold in study.folds] if study else [job.fold for job in row.jobs]
    return [(fold, seed) for fold in dict.fromkeys(folds) for seed in seeds]


def _candidate(record: dict, row: Row, search: SearchRecord | None) -> bool:
    """Whether a row may be chosen for the nested estimate. Not a row whose test was seen in training. In a
    search on a cross-validated corpus, only the jobs training each study's choice on its test fold: the
    configurations of its trials were proposed by a sampler that saw every fold its jobs trained on."""
    if record["seen"]:
        return False
    return search is None or search.fixed_splits or all(job.folder.name in search.outer_jobs for job in row.jobs)


def _rank(record: dict, select: str) -> tuple[bool, bool, float]:
    """Rows with all their runs first, rows whose test was seen in training last, each group by validation,
    best first; no validation score last."""
    score = record[select]
    return not record["complete"], bool(record["seen"]), -score if not math.isnan(score) else math.inf


def _select(records: list[dict], select: str) -> int | None:
    """The row with the best validation score among those with all their runs (all rows, while none has),
    whose test items no model of theirs trained on: a row of one lucky run must not beat rows that had every
    chance to be unlucky."""
    candidates = [i for i, r in enumerate(records) if not math.isnan(r[select]) and not r["seen"]]
    complete = [i for i in candidates if records[i]["complete"]]
    return max(complete or candidates, key=lambda i: records[i][select], default=None)


DIFFERENCE_STATS = ("diff", "diff_p", "diff_p_holm", "diff_folds", "pooled_diff", "pooled_diff_low", "pooled_diff_high")


def _record(
    index: int, row: Row, results: RowResults, expected: list[tuple], config_keys: list[str], settings: ReportSettings
) -> dict:
    from emotion.sweeps.comparison import pooled_ccc

    done, failed = row.done, row.finished("failed")
    record = {"row": index, "profile": _first(row.jobs, "profile")}
    record.update({key: row.overrides.get(key, "") for key in config_keys})
    validation = list(results.validation.values())
    record[settings.select] = statistics.fmean(validation) if validation else math.nan
    for key, _ in SCORES:
        values = results.values(key)
        runs = list(values.values())
        record[f"{key}_mean"] = statistics.fmean(runs) if runs else math.nan
        record[f"{key}_std"] = statistics.stdev(runs) if len(runs) > 1 else math.nan
        record[f"{key}_seed_std"] = _seed_std(values)
        record[f"{key}_pooled"] = pooled_ccc(results.predictions, key, results.folds)
        record[f"{key}_runs"] = runs
    timed = [job.metrics["sec_per_epoch"] for job in done if job.metrics.get("sec_per_epoch") is not None]
    record.update(
        runs_done=len(done),
        runs_failed=len(failed),
        runs_expected=len(expected),
        # Every expected run has a result; runs beyond them (an earlier, wider sweep's) count too.
        complete=set(expected) <= {job.run for job in done},
        missing=_missing(row, expected),
        seen=_seen(done),
        peak_mem_gb=max((job.metrics["peak_mem_gb"] for job in done), default=math.nan),
        min_per_epoch=statistics.fmean(seconds / 60 for seconds in timed) if timed else math.nan,
        params_m=(done[0].metrics["params"]["total"] / 1e6) if done else math.nan,
    )
    return record


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


def _reference_row(rows: list[Row], reference: str | None, selected: int | None) -> int | None:
    """The row named by `report.reference` (its overrides, e.g. `model.d_hidden=256 model.dropout=0.1`),
    else the selected one."""
    if reference is None:
        return selected
    items = reference.split()  # by whitespace only: values may hold commas, as in layers=[6,12,18,24]
    if not items or not all("=" in item for item in items):
        raise ValueError(f"report.reference={reference!r}: give key=value overrides, e.g. model.d_hidden=256")
    wanted = dict(item.split("=", 1) for item in items)
    matches = [i for i, row in enumerate(rows) if all(row.overrides.get(k) == v for k, v in wanted.items())]
    if len(matches) != 1:
        known = "; ".join(" ".join(f"{k}={v}" for k, v in row.overrides.items()) or "(no overrides)" for row in rows)
        raise ValueError(f"report.reference={reference!r} names {len(matches)} rows, not one; the rows are: {known}")
    return matches[0]


def _add_differences(records: list[dict], results: list[RowResults], reference: int, settings: ReportSettings) -> None:
    """Each row against the reference, per dimension; the p-values of one dimension are one Holm family."""
    from emotion.sweeps.comparison import compare, holm

    others = [i for i in range(len(records)) if i != reference]
    for key, _ in SCORES:
        differences = [compare(results[i], results[reference], key, settings.bootstrap, settings.seed) for i in others]
        adjusted = holm([difference.p_value for difference in differences])
        for i, difference, p_holm in zip(others, differences, adjusted, strict=True):
            records[i].update(
                {
                    f"{key}_diff": difference.mean,
                    f"{key}_diff_p": difference.p_value,
                    f"{key}_diff_p_holm": p_holm,
                    f"{key}_diff_folds": difference.folds,
                    f"{key}_pooled_diff": difference.pooled,
                    f"{key}_pooled_diff_low": difference.low,
                    f"{key}_pooled_diff_high": difference.high,
                }
            )


def _first(jobs, key: str) -> str:
    return next((str(job.metrics[key]) for job in jobs if job.metrics and job.metrics.get(key) is not None), "")


def write_summary(sweep_dir: str | Path, settings: ReportSettings | None = None) -> Path:
    """Write summary.csv, summary.md, summary.png and nested.csv (search.png for a search); returns the path
    of summary.md. Without `settings`, the sweep's own."""
    sweep_dir = Path(sweep_dir)
    own = ReportSettings.of_sweep(sweep_dir)  # what the sweep's jobs ran with
    settings = settings or own
    with locked(sweep_dir / ".summary.lock"):
        summary = summarise_sweep(sweep_dir, settings)
        text = _markdown(summary, settings)
        if summary.search is not None:
            text = "\n".join(_search_lines(summary, settings, sweep_dir)) + "\n\n" + text
            search_plot(summary.search, sweep_dir / "search.png", SELECTABLE[settings.select])
        write_atomically(sweep_dir / "summary.csv", _csv_text(summary.columns, summary.records))
        write_atomically(sweep_dir / "nested.csv", _csv_text(*_nested_table(summary, settings)))
        write_atomically(sweep_dir / "summary.md", text)
        _plot(summary.records, _config_keys(summary.columns), sweep_dir / "summary.png")
    return sweep_dir / "summary.md"


def _search_lines(summary: Summary, settings: ReportSettings, sweep_dir: Path) -> list[str]:
    """The search's studies, each with the clean test score of its choice: the nested estimate's choice for
    the study's test fold (or, with fixed splits, for the test set), which only the study's choice can be."""

    def tested(study) -> str | None:
        fold = study.test_fold if not summary.search.fixed_splits else None
        choice = next((c for c in summary.nested.choices if c.fold == fold), None) if summary.nested else None
        if choice is None or (study.test_fold is None and not summary.search.fixed_splits):
            return None
        return ", ".join(f"{name} {number(choice.test.get(key, math.nan), 3)}" for key, name in SCORES)

    return search_markdown(summary.search, SELECTABLE[settings.select], tested, study_storage(sweep_dir))


def _csv_text(columns: list[str], records: list[dict]) -> str:
    with tempfile.SpooledTemporaryFile(mode="w+", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        f.seek(0)
        return f.read()


def _config_keys(columns: list[str]) -> list[str]:
    return columns[columns.index("profile") + 1 : columns.index("params_m")]


def _varying(keys: list[str], records: list[dict]) -> list[str]:
    """The keys whose values differ between rows: the others say nothing about any one row."""
    return [key for key in keys if len({record[key] for record in records}) > 1]


def _nested_table(summary: Summary, settings: ReportSettings) -> tuple[list[str], list[dict]]:
    """nested.csv: per test fold, the configuration its validation chose, with its scores on the fold."""
    keys = _config_keys(summary.columns)
    columns = ["fold", "profile", *keys, settings.select, *(key for key, _ in SCORES), "candidates"]
    lines = []
    for choice in summary.nested.choices if summary.nested else []:
        record = summary.record_of(choice.row)
        lines.append(
            {
                "fold": "" if choice.fold is None else choice.fold,
                "profile": record["profile"],
                **{key: record[key] for key in keys},
                settings.select: choice.validation,
                **{key: choice.test.get(key, math.nan) for key, _ in SCORES},
                "candidates": choice.candidates,
            }
        )
    return columns, lines


def _markdown(summary: Summary, settings: ReportSettings) -> str:
    records = summary.records
    all_keys = _config_keys(summary.columns)
    keys = _varying(all_keys, records)
    common = [f"{key}={records[0][key]}" for key in all_keys if key not in keys and records[0][key] != ""]
    select = SELECTABLE[settings.select]
    lines = _nested_lines(summary, keys, select)
    if summary.kept_by != settings.select:
        lines += [
            f"Ranked and chosen by {select}, but the jobs kept their best epochs by {SELECTABLE[summary.kept_by]} "
            f"(the sweep's report.select): each run's {select} is the one at that epoch, not its best.",
            "",
        ]
    header = ["", "profile", *keys, "params (M)", "peak mem (GB)", "min/epoch", select]
    header += [*(name for _, name in SCORES), *(f"pooled {name}" for _, name in SCORES), "runs"]
    if summary.search is not None:
        lines += [f"**Every configuration the search trained**, by {select} (its studies' trials are above):", ""]
    elif len(records) > 1:
        lines += [f"**Configurations ranked by {select}**, mean over each row's runs (a view; see its legend):", ""]
    lines += [table_line(header), "|" + "---|" * len(header)]
    for r in records:
        runs = f"{r['runs_done']}/{r['runs_expected']}" + (f" ({r['runs_failed']} failed)" if r["runs_failed"] else "")
        mark = "★" if r["selected"] else ("⚠" if r["seen"] else "")
        cells = [mark, r["profile"], *(r[k] for k in keys), number(r["params_m"], 2)]
        cells += [number(r["peak_mem_gb"], 1), number(r["min_per_epoch"], 2), number(r[settings.select], 3)]
        cells += [*(_mean_std(r, key) for key, _ in SCORES), *(number(r[f"{key}_pooled"], 3) for key, _ in SCORES)]
        lines.append(table_line([*cells, runs]))
    lines += ["", *_legend(select, marked=summary.search is None)]
    if common:
        lines += ["", f"Every row: {' '.join(common)}."]
    seen = [f"- {_label(r, keys)}: {r['seen']}" for r in records if r["seen"]]
    if seen:
        lines += ["", "⚠ Not a test (left out of every choice):", *seen]
    missing = [f"- {_label(r, keys)}: {r['missing']}" for r in records if r["missing"]]
    if missing:
        lines += ["", "Runs without a result:", *missing]
    reference = next((r for r in records if r["reference"]), None)
    if reference is not None and len(records) > 1:
        lines += ["", *_comparison(records, reference, keys, settings)]
    return "\n".join(lines) + "\n"


def _nested_lines(summary: Summary, keys: list[str], select: str) -> list[str]:
    """The headline, when there is a choice to make: the nested estimate and each fold's choice."""
    nested = summary.nested
    if nested is None or len(summary.records) < 2:
        return []
    fixed_splits = nested.folds == [None]
    unit = "the test set" if fixed_splits else f"{len(nested.folds)} fold{'s' if len(nested.folds) > 1 else ''}"
    header = ["estimate", "folds", *(name for _, name in SCORES), *(f"pooled {name}" for _, name in SCORES)]
    cells = ["nested" if not fixed_splits else "chosen by validation", ", ".join(map(str, nested.folds))]
    cells += [_spread(nested.mean[key], nested.std[key]) for key, _ in SCORES]
    cells += [number(nested.pooled[key], 3) for key, _ in SCORES]
    chosen_how = (
        "the configuration its study chose without it (the search above)"
        if summary.search is not None
        else f"the configuration with the best {select} on that fold's own validation split (whose speakers are "
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
        table_line(["test fold", "chosen configuration", select, *(name for _, name in SCORES), "candidates"]),
        "|" + "---|" * (4 + len(SCORES)),
    ]
    for choice in nested.choices:
        label = _label(summary.record_of(choice.row), keys)
        fold = "test set" if choice.fold is None else choice.fold
        scores = [number(choice.test.get(key, math.nan), 3) for key, _ in SCORES]
        lines.append(table_line([fold, label, number(choice.validation, 3), *scores, choice.candidates]))
    return [*lines, ""]


def _spread(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _legend(select: str, marked: bool) -> list[str]:
    ranking = (
        f"Rows are ranked by {select} (each run's best validation epoch, mean over the row's runs), those with "
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


def _comparison(records: list[dict], reference: dict, keys: list[str], settings: ReportSettings) -> list[str]:
    header = ["profile", *keys, "folds paired"]
    header += [f"Δ {name} (p, Holm p)" for _, name in SCORES] + [f"Δ pooled {name} [95% CI]" for _, name in SCORES]
    others = len(records) - 1
    lines = [
        f"Compared with {_label(reference, keys)} (the reference): Δ is the row's test CCC minus the reference's, "
        "per fold with each fold's seeds averaged first, mean over the folds both have; p: a paired t-test over "
        f"those folds (n = folds: the runs of one fold share its test speakers); Holm p: adjusted for the {others} "
        f"row{'s' if others > 1 else ''} compared with the reference (Holm, per dimension). Δ pooled: the "
        "difference of pooled CCC, with a paired bootstrap 95% interval that resamples speakers, each with all "
        f"their utterances ({settings.bootstrap} resamples, seed {settings.seed}).",
        "",
        table_line(header),
        "|" + "---|" * len(header),
    ]
    for r in records:
        if r["reference"]:
            continue
        cells = [r["profile"], *(r[k] for k in keys), r.get("ccc_v_diff_folds", 0)]
        cells += [
            f"{_signed(r[f'{key}_diff'])} ({number(r[f'{key}_diff_p'], 3)}, {number(r[f'{key}_diff_p_holm'], 3)})"
            for key, _ in SCORES
        ]
        cells += [_interval(r, key) for key, _ in SCORES]
        lines.append(table_line(cells))
    return lines


def _interval(record: dict, key: str) -> str:
    low, high = record[f"{key}_pooled_diff_low"], record[f"{key}_pooled_diff_high"]
    difference = _signed(record[f"{key}_pooled_diff"])
    return difference if math.isnan(low) else f"{difference} [{low:+.3f}, {high:+.3f}]"


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.3f}"


def _mean_std(record: dict, key: str) -> str:
    text, seeds = _spread(record[f"{key}_mean"], record[f"{key}_std"]), record[f"{key}_seed_std"]
    return text if text == "–" or math.isnan(seeds) else f"{text} (seeds ± {seeds:.3f})"


def _plot(records: list[dict], config_keys: list[str], path: Path) -> None:
    """Per dimension: a bar for each row's mean test CCC, a dot per run; below, each row's pooled-CCC
    difference from the reference with its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _varying(config_keys, records)
    # Wrapped and shortened: a search's configurations name many keys, and the axes must keep their room.
    labels = [
        textwrap.fill(textwrap.shorten(("★ " if r["selected"] else "") + _label(r, keys), 90), 30) for r in records
    ]
    compared = len(records) > 1 and any(r["reference"] for r in records)
    n_rows = 2 if compared else 1
    fig, axes = plt.subplots(
        n_rows,
        len(SCORES),
        figsize=(3 * len(SCORES) + 0.8 * len(records), 4 * n_rows),
        sharey="row",
        squeeze=False,
        layout="constrained",  # long row labels: tight_layout gives up on them
    )
    for column, (key, name) in enumerate(SCORES):
        ax = axes[0][column]
        for x, record in enumerate(records):
            ax.bar(x, 0 if math.isnan(record[f"{key}_mean"]) else record[f"{key}_mean"], color="#9ecae1")
            ax.plot([x] * len(record[f"{key}_runs"]), record[f"{key}_runs"], "o", color="#08519c", markersize=4)
        ax.set_title(name)
        ax.axhline(0, color="grey", linewidth=0.5)
        if compared:
            _plot_differences(axes[1][column], records, key)
        for row in axes[:, column]:
            row.set_xticks(range(len(records)), labels, rotation=30, ha="right", fontsize=7)
    axes[0][0].set_ylabel("test CCC (dots: runs)")
    if compared:
        axes[1][0].set_ylabel("Δ pooled CCC vs reference (95% CI)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _plot_differences(ax, records: list[dict], key: str) -> None:
    for x, record in enumerate(records):
        if record["reference"] or math.isnan(record.get(f"{key}_pooled_diff", math.nan)):
            continue
        difference = record[f"{key}_pooled_diff"]
        low, high = record[f"{key}_pooled_diff_low"], record[f"{key}_pooled_diff_high"]
        error = None if math.isnan(low) else [[difference - low], [high - difference]]
        ax.errorbar(x, difference, yerr=error, fmt="o", color="#a50f15", capsize=4)
    ax.axhline(0, color="grey", linewidth=0.5)


def _label(record: dict, keys: list[str]) -> str:
    """`standard mamba_n_layers=2 d_hidden=384`: the profile and each of `keys` with the last part of its name."""
    settings = [f"{k.rsplit('.', 1)[-1]}={record[k]}" for k in keys if record[k] != ""]
    return " ".join([record["profile"], *settings])


def log_to_wandb(sweep_dir: Path, group: str, project: str, entity: str | None = None, mode: str = "offline") -> None:
    """A run of job type `summary` in the sweep's group: the table and the nested estimate's choices as W&B
    Tables, the plot as an image, so that the dashboard shows mean ± std per configuration beside the sweep's
    runs. Run after write_summary."""
    import wandb

    tables = {}
    for name in ("summary", "nested"):
        with open(sweep_dir / f"{name}.csv", newline="") as f:
            rows = list(csv.reader(f))
        tables[f"{name}_table"] = wandb.Table(columns=rows[0], data=rows[1:])
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
    run.log({**tables, "summary_plot": wandb.Image(str(sweep_dir / "summary.png"))})
    run.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. multirun/capacity")
    # Not given: the sweep's own report.* (its multirun.yaml), else the defaults.
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
        settings = ReportSettings.of_sweep(
            args.sweep_dir, select=args.select, reference=args.reference, bootstrap=args.bootstrap, seed=args.seed
        )
        summary = write_summary(args.sweep_dir, settings)
    except ValueError as err:  # report.reference names no row, or several; a row's runs repeat an utterance
        parser.error(str(err))
    print(summary.read_text(), end="")
    print(f"\nwrote {summary}, {summary.with_suffix('.csv')} and {summary.with_suffix('.png')}")
    if args.wandb:
        log_to_wandb(args.sweep_dir, args.sweep_dir.name, args.project, args.entity, args.mode)
        print(f"logged the summary to W&B ({args.mode}), group {args.sweep_dir.name}")


if __name__ == "__main__":
    main()
