"""What a search adds to its sweep's summary: its trials as configurations, the best trial by validation
with its test scores and the command that trains it on every fold, and a plot of the search's progress.

Read from the study (search.db) and the table's own rows, so that it works while the search still runs.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from emotion.sweeps.folders import STUDY_FILE, study_storage
from emotion.sweeps.jobs import read_multirun
from emotion.sweeps.markdown import number, table_line

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


@dataclass(frozen=True)
class TrialLine:
    number: int
    state: str  # complete | pruned | failed | running
    value: float  # complete: the trial's value; pruned: its value at the epoch it was pruned; else NaN
    epochs: int  # epochs whose value the study has
    config: dict[str, str]  # the trial's overrides, e.g. {"optim.lr": "0.0003"}
    error: str | None = None

    @property
    def label(self) -> str:
        return f"pruned at epoch {self.epochs}" if self.state == "pruned" else self.state


@dataclass(frozen=True)
class SearchRecord:
    name: str
    objective: str
    n_trials: int | None  # what search.n_trials asks for
    folds: list[str]  # each trial's
    trials: list[TrialLine]
    fixed: list[str]  # the command line's overrides every job had
    all_folds: list[str]  # the corpus's folds
    storage: str

    @property
    def best(self) -> TrialLine | None:
        complete = [trial for trial in self.trials if trial.state == "complete"]
        return max(complete, key=lambda trial: trial.value, default=None)

    def trials_of(self, config: dict[str, str]) -> list[int]:
        """The trials that ran `config` (a sampler may propose a configuration twice)."""
        return [trial.number for trial in self.trials if trial.config and trial.config.items() <= config.items()]

    def command(self, trial: TrialLine) -> str:
        """`python train.py -m …`: the trial's configuration on all the corpus's folds."""
        # Not the search itself, nor its name: the command names a sweep of its own.
        kept = [item for item in self.fixed if not item.startswith(("sweep=", "hydra/sweeper=", "name="))]
        folds = [f"data.fold={','.join(self.all_folds)}"] if self.all_folds else []
        overrides = [f"name={self.name}-trial{trial.number}", *kept, *(f"{k}={v}" for k, v in trial.config.items())]
        return "python train.py -m " + " ".join(shlex.quote(item) for item in [*overrides, *folds])


def read_search(sweep_dir: Path) -> SearchRecord | None:
    """The sweep's search, or None when the sweep is a grid."""
    if not (sweep_dir / STUDY_FILE).is_file():
        return None
    import optuna

    storage = study_storage(sweep_dir)
    names = optuna.get_all_study_names(storage)
    multirun = read_multirun(sweep_dir)
    name = str(multirun.get("name")) if multirun.get("name") in names else (names[0] if names else None)
    if name is None:
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    search = multirun.get("search") or {}
    return SearchRecord(
        name=name,
        objective=study.user_attrs.get("objective", "val_ccc_mean"),
        n_trials=search.get("n_trials"),
        folds=[str(fold) for fold in search.get("folds") or []],
        trials=[_line(trial) for trial in study.get_trials(deepcopy=False)],
        fixed=list(study.user_attrs.get("fixed", [])),
        all_folds=list(study.user_attrs.get("all_folds", [])),
        storage=storage,
    )


def _line(trial) -> TrialLine:
    state = STATES.get(trial.state.name, trial.state.name.lower())
    steps = trial.intermediate_values
    if state == "complete":
        value = trial.value
    elif state == "pruned" and steps:
        value = steps[max(steps)]
    else:
        value = math.nan
    config = dict(item.split("=", 1) for item in trial.user_attrs.get("config", []))
    epochs = trial.user_attrs.get("pruned_at_epoch") or max(steps, default=0)
    return TrialLine(trial.number, state, value, epochs, config, trial.user_attrs.get("error"))


def markdown(search: SearchRecord, heading: str, best_tested: str | None) -> list[str]:
    """The search's part of summary.md: its trials, then its best trial, its test scores (`best_tested`,
    from the table's row of its configuration) and its command. `heading` names the objective."""
    keys = sorted({key for trial in search.trials for key in trial.config})
    varying = [key for key in keys if len({trial.config.get(key) for trial in search.trials}) > 1] or keys
    counts = {state: sum(t.state == state for t in search.trials) for state in STATES.values()}
    made = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    asked = f" of {search.n_trials}" if search.n_trials else ""
    best = search.best
    lines = [
        f"Search `{search.name}`: {len(search.trials)}{asked} trials ({made or 'none yet'}). A trial trains one "
        f"configuration on {_folds(search.folds)}; its value is {heading}, the mean of its jobs' best "
        "validation epochs (a pruned trial's: at the epoch it was pruned). Progress: search.png; the study: "
        f"`optuna-dashboard {search.storage}`.",
        "",
        table_line(["trial", "state", heading, *(key.rsplit(".", 1)[-1] for key in varying)]),
        "|" + "---|" * (3 + len(varying)),
    ]
    for trial in search.trials:
        mark = " ★" if best is not None and trial.number == best.number else ""
        cells = [
            f"{trial.number}{mark}",
            trial.label,
            number(trial.value, 3),
            *(trial.config.get(k, "") for k in varying),
        ]
        lines.append(table_line(cells))
    failed = [f"- trial {trial.number}: {trial.error}" for trial in search.trials if trial.error]
    if failed:
        lines += ["", "Failed trials:", *failed]
    if best is not None:
        lines += [
            "",
            f"★ Best trial by validation: {best.number}, {heading} {best.value:.3f}. Its test CCC over "
            f"{_folds(search.folds)}: {best_tested or 'not yet'}. To train it on every fold:",
            "",
            f"    {search.command(best)}",
        ]
    return lines


def _folds(folds: list[str]) -> str:
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(folds)}"


def plot(search: SearchRecord, path: Path, heading: str) -> None:
    """Each trial's value by trial number (pruned ones at the epoch they were pruned), and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for state, style in (("complete", dict(marker="o", color="#08519c")), ("pruned", dict(marker="x", color="grey"))):
        trials = [t for t in search.trials if t.state == state and not math.isnan(t.value)]
        ax.plot([t.number for t in trials], [t.value for t in trials], linestyle="none", label=state, **style)
    best, steps = -math.inf, []
    for trial in search.trials:
        if trial.state == "complete":
            best = max(best, trial.value)
        steps.append(best)
    shown = [(trial.number, value) for trial, value in zip(search.trials, steps, strict=True) if value > -math.inf]
    if shown:
        ax.step(*zip(*shown, strict=True), where="post", color="#a50f15", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{heading} (validation)")
    ax.set_title(f"search {search.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
