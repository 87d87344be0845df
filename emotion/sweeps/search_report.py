"""What a search adds to its sweep's summary: each study's trials, its best trial by validation, which folds
its choice saw, the clean test score of its choice, the command that trains it on every fold, and a plot of
the search's progress.

Read from search.json, which the search's driver rewrites as the search goes: never from the studies'
SQLite file, which jobs on other machines (SLURM) must not open.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from emotion.files import write_atomically
from emotion.sweeps.jobs import EXCLUDED_FOLD_KEY
from emotion.sweeps.markdown import number, table_line

RECORD_FILE = "search.json"


@dataclass(frozen=True)
class TrialLine:
    number: int
    state: str  # complete | pruned | fail | running | waiting
    value: float | None  # complete: the trial's value; pruned: its value at the epoch it was pruned
    epochs: int  # epochs whose value the study has
    config: dict[str, str]  # the trial's overrides, e.g. {"optim.lr": "0.0003"}
    error: str | None = None

    @property
    def label(self) -> str:
        return f"pruned at epoch {self.epochs}" if self.state == "pruned" else STATE_NAMES.get(self.state, self.state)


STATE_NAMES = {"fail": "failed"}  # Optuna's state names, as the summary says them


@dataclass(frozen=True)
class StudyRecord:
    name: str
    folds: list[str]  # each trial's ("null" for a corpus with fixed splits)
    test_fold: str | None  # the fold none of its jobs saw; None for a study without one
    trials: list[TrialLine]
    outer: str | None  # once its trials have ended: the folder of the job training its best on its test fold

    @property
    def best(self) -> TrialLine | None:
        complete = [trial for trial in self.trials if trial.state == "complete"]
        return max(complete, key=lambda trial: trial.value, default=None)


@dataclass(frozen=True)
class SearchRecord:
    name: str
    objective: str
    n_trials: int  # per study
    fixed: list[str]  # the command line's overrides every job had
    all_folds: list[str]  # the corpus's folds; empty for fixed splits
    studies: list[StudyRecord]

    @property
    def outer_jobs(self) -> set[str]:
        """The folders of the jobs that trained each study's choice on its test fold."""
        return {study.outer for study in self.studies if study.outer is not None}

    @property
    def fixed_splits(self) -> bool:
        return not self.all_folds

    def study_of(self, overrides: dict[str, str]) -> StudyRecord | None:
        """The study whose trials ran a configuration with `overrides`: by the fold its jobs left out."""
        excluded = overrides.get(EXCLUDED_FOLD_KEY)
        return next((study for study in self.studies if study.test_fold == excluded), None)

    def trials_of(self, overrides: dict[str, str]) -> list[int]:
        """The trials that ran the configuration (a sampler may propose one twice)."""
        study = self.study_of(overrides)
        if study is None:
            return []
        return [trial.number for trial in study.trials if trial.config and trial.config.items() <= overrides.items()]

    def seen_folds(self, study: StudyRecord) -> list[str]:
        """The folds whose speakers entered the study's jobs (as training, validation or test)."""
        return [fold for fold in self.all_folds if fold != study.test_fold]

    def command(self, trial: TrialLine) -> str:
        """`python train.py -m …`: a trial's configuration on all the corpus's folds."""
        # Not the search itself, nor its name: the command names a sweep of its own.
        kept = [item for item in self.fixed if not item.startswith(("sweep=", "hydra/sweeper=", "name="))]
        folds = [f"data.fold={','.join(self.all_folds)}"] if self.all_folds else []
        overrides = [f"name={self.name}-trial{trial.number}", *kept, *(f"{k}={v}" for k, v in trial.config.items())]
        return "python train.py -m " + " ".join(shlex.quote(item) for item in [*overrides, *folds])


def write_search(sweep_dir: Path, record: SearchRecord) -> None:
    write_atomically(sweep_dir / RECORD_FILE, json.dumps(asdict(record), indent=1) + "\n")


def read_search(sweep_dir: Path) -> SearchRecord | None:
    """The sweep's search, or None when the sweep is a grid."""
    try:
        data = json.loads((sweep_dir / RECORD_FILE).read_text())
    except FileNotFoundError:
        return None
    studies = [
        StudyRecord(**{**study, "trials": [TrialLine(**trial) for trial in study["trials"]]})
        for study in data.pop("studies")
    ]
    return SearchRecord(**data, studies=studies)


def search_markdown(search: SearchRecord, heading: str, tested, storage: str) -> list[str]:
    """The search's part of summary.md: per study, its trials, its best trial, the folds its choice saw, its
    choice's clean test score (`tested(study)`: text, or None when there is none) and its command. `heading`
    names the objective; `storage` is the studies' database."""
    lines = [
        f"Search `{search.name}`: {len(search.studies)} stud{'ies' if len(search.studies) > 1 else 'y'} of "
        f"{search.n_trials} trials. A trial trains one configuration on its study's folds; its value is {heading}, "
        "the mean of its jobs' best validation epochs (a pruned trial's: at the epoch it was pruned). No test "
        f"score reaches a study. Progress: search.png; the studies: `optuna-dashboard {storage}`."
    ]
    for study in search.studies:
        lines += ["", *_study_lines(search, study, heading, tested(study))]
    return lines


def _study_lines(search: SearchRecord, study: StudyRecord, heading: str, tested: str | None) -> list[str]:
    states = [STATE_NAMES.get(trial.state, trial.state) for trial in study.trials]
    made = ", ".join(f"{states.count(state)} {state}" for state in dict.fromkeys(states))
    seen = search.seen_folds(study)
    if study.test_fold is not None:
        scope = (
            f"on folds {', '.join(study.folds)} of the corpus without fold {study.test_fold} "
            f"(data.exclude_fold={study.test_fold}): its choice saw folds {', '.join(seen)} and never fold "
            f"{study.test_fold}'s speakers"
        )
    elif search.fixed_splits:
        scope = "on the corpus's training and validation splits: its choice never saw the test split's speakers"
    else:
        scope = (
            f"on folds {', '.join(study.folds)}: its jobs trained, validated and tested on every fold "
            f"({', '.join(seen)}), so its choice saw them all"
        )
    lines = [
        f"**Study `{study.name}`**: {len(study.trials)} of {search.n_trials} trials ({made or 'none yet'}), {scope}.",
        "",
        *_trial_table(study, heading),
    ]
    failed = [f"- trial {trial.number}: {trial.error}" for trial in study.trials if trial.error]
    if failed:
        lines += ["", "Failed trials:", *failed]
    best = study.best
    if best is None:
        return [*lines, "", "No trial has completed yet: there is no choice to test."] if study.trials else lines
    lines += ["", f"★ Best trial by validation: {best.number}, {heading} {best.value:.3f}."]
    if study.test_fold is not None:
        lines[-1] += (
            f" Trained on fold {study.test_fold}, which none of the study's jobs saw: test "
            f"{tested or 'not yet (its job has not finished)'}. A clean number for fold {study.test_fold}."
        )
    elif search.fixed_splits:
        lines[-1] += f" Its test score, clean (no test score reaches the study): {tested or 'not yet'}."
    else:
        lines[-1] += (
            " No test score of this search is clean, so none is shown: for one, give the search test folds it "
            "never sees (search.test_folds=[1], the default; every fold for a nested cross-validation)."
        )
    if search.all_folds:
        unclean = f"folds {', '.join(seen)}" if study.test_fold is not None else "every fold"
        lines += [
            f"To train it on every fold (its test scores there are not clean on {unclean}, which its choice saw):",
            "",
            f"    {search.command(best)}",
        ]
    return lines


def _trial_table(study: StudyRecord, heading: str) -> list[str]:
    keys = sorted({key for trial in study.trials for key in trial.config})
    varying = [key for key in keys if len({trial.config.get(key) for trial in study.trials}) > 1] or keys
    best = study.best
    lines = [
        table_line(["trial", "state", heading, *(key.rsplit(".", 1)[-1] for key in varying)]),
        "|" + "---|" * (3 + len(varying)),
    ]
    for trial in study.trials:
        mark = " ★" if best is not None and trial.number == best.number else ""
        value = math.nan if trial.value is None else trial.value
        cells = [f"{trial.number}{mark}", trial.label, number(value, 3), *(trial.config.get(k, "") for k in varying)]
        lines.append(table_line(cells))
    return lines


def plot_search(search: SearchRecord, path: Path, heading: str) -> None:
    """Each trial's value by trial number (pruned ones at the epoch they were pruned), and each study's best
    so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, study in enumerate(search.studies):
        colour = colours[i % len(colours)]
        prefix = f"{study.name}: " if len(search.studies) > 1 else ""
        for state, marker in (("complete", "o"), ("pruned", "x")):
            trials = [t for t in study.trials if t.state == state and t.value is not None]
            xs, ys = [t.number for t in trials], [t.value for t in trials]
            ax.plot(xs, ys, marker=marker, linestyle="none", color=colour, label=f"{prefix}{state}")
        best, steps = -math.inf, []
        for trial in study.trials:
            if trial.state == "complete":
                best = max(best, trial.value)
            steps.append((trial.number, best))
        shown = [(number_, value) for number_, value in steps if value > -math.inf]
        if shown:
            ax.step(*zip(*shown, strict=True), where="post", color=colour, label=f"{prefix}best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{heading} (validation)")
    ax.set_title(f"search {search.name}")
    ax.legend(fontsize=7)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
