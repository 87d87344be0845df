"""A search (Optuna) whose trial is a configuration trained on every fold of `search.folds`.

    python train.py -m sweep=search [hydra/launcher=gpu_pool hydra.launcher.devices=[0,1,2,3]]

The sampler proposes a configuration from `search.space`; its jobs (one per fold) go through the sweep's
launcher, one `launch` call per job from a thread of its own, so that a job starts the moment a slot frees,
not when a batch ends. After every epoch the trial's value so far (the mean over its started folds of their
best validation score: see emotion.sweeps.pruning) goes to the pruner, which may stop the trial: its running
jobs end `pruned`, its waiting ones never start. A finished trial's value is the mean of its jobs' best
validation score (`report.select`); no test score ever reaches the study.

The study lives in the sweep's folder (search.db, Optuna's SQLite storage). The same command again
continues it: finished and pruned trials stay, the jobs of a trial that was running go on from their
checkpoints, and `search.n_trials` counts every trial of the study. All study calls come from the main
thread; the job threads only launch.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from emotion.checks import ConfigError, check_config
from emotion.files import held_by_another, process_lock
from emotion.signals import EXIT_INTERRUPTED, GracefulStop
from emotion.sweeps.folders import STUDY_FILE, study_storage
from emotion.sweeps.jobs import FOLD_KEY
from emotion.sweeps.pruning import best_so_far, fold_means, request_prune
from emotion.sweeps.space import Dimension, parse_space
from emotion.training.outputs import read_metrics

log = logging.getLogger(__name__)

LOCK_FILE = ".search.lock"
TRIAL_KEY = "search.trial"  # set in each job: the number of its trial (W&B names and tags runs with it)
POLL_SECONDS = 0.5  # how often the search looks at its jobs (their history.csv and metrics.json)
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")
GIVE_UP_AFTER_FAILURES = 3  # trials in a row that failed with no trial yet finished: the setup is broken


class SearchError(ValueError):
    pass


@dataclass(frozen=True)
class SearchSettings:
    """`search.*` of the sweep's config, checked."""

    n_trials: int = 40
    folds: tuple = (1, 2)
    sampler: str = "tpe"
    seed: int | None = 0
    pruner: str = "median"
    startup_trials: int = 5
    prune_from_epoch: int = 1
    parallel: int | str = "auto"
    objective: str = "val_ccc_mean"  # report.select: what the table selects, the study maximises

    @classmethod
    def of(cls, cfg: DictConfig) -> SearchSettings:
        search = OmegaConf.to_container(cfg.search, resolve=True)
        known = {field.name for field in dataclasses.fields(cls)} - {"objective"}
        unknown = sorted(set(search) - known - {"space", "trial"})
        if unknown:
            raise SearchError(f"search.{unknown[0]}: not a search setting; they are {', '.join(sorted(known))}")
        settings = {key: value for key, value in search.items() if key in known}
        settings["folds"] = tuple(settings.get("folds") or ())
        checked = cls(**settings, objective=OmegaConf.select(cfg, "report.select", default="val_ccc_mean"))
        checked.check()
        return checked

    def check(self) -> None:
        problems = []
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            problems.append(f"search.n_trials={self.n_trials!r}: give a whole number of trials, at least 1")
        if not self.folds:
            problems.append("search.folds is empty: give the folds each trial trains on, e.g. [1, 2]")
        if self.sampler not in SAMPLERS:
            problems.append(f"search.sampler={self.sampler!r}: one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            problems.append(f"search.pruner={self.pruner!r}: one of {', '.join(PRUNERS)}")
        for key in ("startup_trials", "prune_from_epoch"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 0):
                problems.append(f"search.{key}={getattr(self, key)!r}: a whole number, 0 or more")
        if self.parallel != "auto" and not (isinstance(self.parallel, int) and self.parallel >= 1):
            problems.append(f"search.parallel={self.parallel!r}: auto, or how many jobs run at once (1 or more)")
        if problems:
            raise SearchError("; ".join(problems))

    @property
    def score(self) -> str:
        """The objective's key in metrics.json's val_best: ccc_mean for val_ccc_mean."""
        return self.objective.removeprefix("val_")

    def make_sampler(self, trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler, seeded by search.seed and the number of trials the study already has: a sampler
        seeded as before would propose again, on a resumed search, the trials it proposed the first time."""
        seed = None if self.seed is None else self.seed + trials_before
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: trials running in parallel count as bad guesses, so that the next one looks elsewhere.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=self.startup_trials, n_warmup_steps=self.prune_from_epoch
            )
        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, self.prune_from_epoch))
        return optuna.pruners.NopPruner()


def open_study(sweep_dir: Path, name: str, settings: SearchSettings) -> optuna.Study:
    """The sweep's study, created on first use, else the one its earlier runs left."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=study_storage(sweep_dir),
        study_name=name,
        direction="maximize",
        pruner=settings.make_pruner(),
        load_if_exists=True,
    )
    study.sampler = settings.make_sampler(trials_before=len(study.trials))
    before = study.user_attrs.get("objective")
    if before is not None and before != settings.objective:
        raise SearchError(
            f"{sweep_dir / STUDY_FILE} maximises {before}, not report.select={settings.objective}: its trials' "
            f"values would not compare. Run with report.select={before}, or start another search with name=…"
        )
    study.set_user_attr("objective", settings.objective)
    return study


@dataclass
class TrialJob:
    index: int  # the job's number in the sweep (Hydra's hydra.job.num)
    overrides: list[str]
    folder: Path


@dataclass
class TrialRun:
    """A trial of the study and its jobs, while any of them waits or runs."""

    trial: optuna.Trial
    jobs: list[TrialJob]
    waiting: list[TrialJob]
    running: dict[int, Future] = field(default_factory=dict)  # job index → its launch
    reported: int = 0  # epochs whose value the study has
    pruned_at: int | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def over(self) -> bool:
        return not self.waiting and not self.running


@dataclass
class JobPlan:
    """How a trial's configuration becomes its jobs: the command line's own overrides, the trial's, a fold."""

    fixed: list[str]  # the command line's overrides (search.* aside): every job gets them
    folds: tuple
    compose: Callable[[list[str]], DictConfig]  # a job's config from its overrides (Hydra's sweep config)

    def jobs(self, number: int, config: list[str]) -> list[TrialJob]:
        """The trial's jobs, their configs checked (ConfigError) before any starts."""
        jobs = []
        for i, fold in enumerate(self.folds):
            overrides = [*self.fixed, *config, f"{FOLD_KEY}={_fold_text(fold)}", f"{TRIAL_KEY}={number}"]
            job_cfg = self.compose(overrides)
            check_config(job_cfg)
            folder = Path(job_cfg.hydra.sweep.dir) / str(job_cfg.hydra.sweep.subdir)
            jobs.append(TrialJob(number * len(self.folds) + i, overrides, folder))
        return jobs


def _metrics(job: TrialJob) -> dict:
    return read_metrics(job.folder / "metrics.json") or {}


def _status(job: TrialJob) -> str | None:
    """How the job ended; None while it waits or runs (or was killed)."""
    return _metrics(job).get("status")


def _fold_text(fold) -> str:
    return "null" if fold is None else str(fold)


Launch = Callable[[list[str], int], object]  # a job's overrides and index → the launcher's result


class Search:
    """Runs the study up to `settings.n_trials` trials, at most `parallel` jobs at a time."""

    def __init__(
        self,
        study: optuna.Study,
        settings: SearchSettings,
        space: list[Dimension],
        plan: JobPlan,
        launch: Launch,
        parallel: int,
        stop: GracefulStop,
        on_stop: Callable[[], None] | None = None,
    ):
        self.study, self.settings, self.space, self.plan = study, settings, space, plan
        self.launch, self.parallel, self.stop, self.on_stop = launch, parallel, stop, on_stop
        self.active: list[TrialRun] = []
        self.failures_in_a_row = 0
        self.threads: ThreadPoolExecutor | None = None  # while running: where the jobs' launches run

    def run(self) -> None:
        self.active = [run for run in map(self._resume, self._unfinished()) if run is not None]
        stop_passed_on = False
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="job") as threads:
            self.threads = threads
            while True:
                self._end_jobs()
                self._watch_epochs()
                if self.stop.requested:
                    if not stop_passed_on and self.on_stop is not None:
                        self.on_stop()
                    stop_passed_on = True
                else:
                    self._fill_slots()
                if not self._running() and (self.stop.requested or not self._more_to_do()):
                    break
                time.sleep(POLL_SECONDS)
        if self.stop.requested:
            log.warning("search stopped: running trials save and stop; the same command continues the study")
            raise SystemExit(EXIT_INTERRUPTED)
        self._log_end()

    # --- trials -------------------------------------------------------------------------------------

    def _unfinished(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))

    def _resume(self, frozen: optuna.trial.FrozenTrial) -> TrialRun | None:
        """A trial an earlier run of the search left running: its jobs again (finished ones skip, the others
        go on from their checkpoints)."""
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        config = frozen.user_attrs.get("config")
        if config is None:  # the search stopped between asking for the trial and naming its jobs
            if set(frozen.params) != {dim.key for dim in self.space}:
                self._fail(trial, "the search stopped before the trial began, and its space has changed since")
                return None
            config = [dim.override(frozen.params[dim.key]) for dim in self.space]
            trial.set_user_attr("config", config)
        jobs = self.plan.jobs(frozen.number, config)
        run = TrialRun(trial, jobs, waiting=list(jobs), reported=max(frozen.intermediate_values, default=0))
        run.pruned_at = frozen.user_attrs.get("pruned_at_epoch")
        if run.pruned_at is not None:  # pruned, but not yet told: its jobs stop where they are
            run.waiting = [job for job in jobs if _status(job) != "pruned"]
            for job in run.waiting:
                request_prune(job.folder, f"trial {run.number} was pruned at epoch {run.pruned_at}")
        log.info("trial %d: resumed (%s)", run.number, " ".join(config))
        return run

    def _ask(self) -> TrialRun | None:
        """A new trial, or None when the study has all its trials."""
        if self._begun() >= self.settings.n_trials:
            return None
        trial = self.study.ask({dim.key: dim.distribution() for dim in self.space})
        config = [dim.override(trial.params[dim.key]) for dim in self.space]
        trial.set_user_attr("config", config)
        trial.set_user_attr("folds", [_fold_text(fold) for fold in self.plan.folds])
        try:
            jobs = self.plan.jobs(trial.number, config)
        except ConfigError as err:
            self._fail(trial, f"its configuration does not pass the checks: {err}")
            return self._ask()
        log.info("trial %d: %s on folds %s", trial.number, " ".join(config), ", ".join(map(str, self.plan.folds)))
        return TrialRun(trial, jobs, waiting=list(jobs))

    def _finish(self, run: TrialRun) -> None:
        """Tell the study how the trial ended, from its jobs' metrics.json."""
        metrics = [_metrics(job) for job in run.jobs]
        statuses = [m.get("status") for m in metrics]
        if run.pruned_at is not None or "pruned" in statuses:
            self.study.tell(run.trial, state=optuna.trial.TrialState.PRUNED)
            log.info("trial %d: pruned at epoch %s", run.number, run.pruned_at or run.reported)
            self.failures_in_a_row = 0
        elif all(status == "completed" for status in statuses):
            self._report(run, final=True)  # the epochs some folds reached after others had ended
            folds = [m["val_best"][self.settings.score] for m in metrics]
            run.trial.set_user_attr("fold_values", folds)
            self.study.tell(run.trial, statistics.fmean(folds))
            log.info(
                "trial %d: %s %.4f (folds: %s)",
                run.number,
                self.settings.objective,
                statistics.fmean(folds),
                ", ".join(f"{value:.4f}" for value in folds),
            )
            self.failures_in_a_row = 0
        elif self.stop.requested:
            log.info("trial %d: stopped; the same command resumes it", run.number)
        else:
            errors = [
                f"{job.folder.name}: {m.get('error') or m.get('status') or 'no metrics.json'}"
                for job, m in zip(run.jobs, metrics, strict=True)
                if m.get("status") != "completed"
            ]
            self._fail(run.trial, "; ".join(errors))

    def _fail(self, trial: optuna.Trial, error: str) -> None:
        trial.set_user_attr("error", error)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.error("trial %d failed: %s", trial.number, error)
        self.failures_in_a_row += 1
        finished = self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if self.failures_in_a_row >= GIVE_UP_AFTER_FAILURES and not finished:
            raise SearchError(
                f"the first {self.failures_in_a_row} trials failed, the last with: {error}. The search stops; "
                "mend the cause and run the same command again (failed trials count towards search.n_trials)"
            )

    # --- jobs ---------------------------------------------------------------------------------------

    def _fill_slots(self) -> None:
        """Start jobs while slots are free: the oldest trial's waiting jobs first, then a new trial's."""
        while self._running() < self.parallel:
            run = next((run for run in self.active if run.waiting), None)
            if run is None:
                run = self._ask()
                if run is None:
                    return
                self.active.append(run)
                continue
            job = run.waiting.pop(0)
            run.running[job.index] = self.threads.submit(self.launch, job.overrides, job.index)

    def _end_jobs(self) -> None:
        for run in list(self.active):
            for index, launched in list(run.running.items()):
                if launched.done():
                    del run.running[index]
                    error = launched.exception()
                    # A stopped job's launch may end in an error (SLURM's cancelled job): no news then.
                    if error is not None and not isinstance(error, SystemExit) and not self.stop.requested:
                        log.error("trial %d: job #%d: %s", run.number, index, error)
            if run.over or (self.stop.requested and not run.running):
                self.active.remove(run)
                self._finish(run)

    def _running(self) -> int:
        return sum(len(run.running) for run in self.active)

    def _more_to_do(self) -> bool:
        return any(run.waiting for run in self.active) or self._begun() < self.settings.n_trials

    def _begun(self) -> int:
        """The study's trials that have begun (a trial enqueued with Optuna's enqueue_trial waits to be asked)."""
        waiting = (optuna.trial.TrialState.WAITING,)
        return len(self.study.trials) - len(self.study.get_trials(deepcopy=False, states=waiting))

    # --- pruning ------------------------------------------------------------------------------------

    def _watch_epochs(self) -> None:
        for run in self.active:
            if run.pruned_at is None:
                self._report(run)

    def _report(self, run: TrialRun, final: bool = False) -> None:
        """Give the study the trial's value at each epoch that all its started folds have reached (once
        `final`, all its folds and every epoch); prune it when the pruner says so.

        Started folds, not all: with fewer slots than folds, the first folds' epochs decide whether the
        others start at all (the basic launcher prunes a trial after its first fold's epochs)."""
        curves, ended = [], []
        for job in run.jobs if final else [job for job in run.jobs if job not in run.waiting]:
            curves.append(best_so_far(job.folder / "history.csv", self.settings.objective))
            ended.append(final or _status(job) in ("completed", "pruned"))
        values = fold_means(curves, ended)
        for epoch in range(run.reported + 1, len(values) + 1):
            run.trial.report(values[epoch - 1], epoch)
            run.reported = epoch
            if not final and run.pruned_at is None and run.trial.should_prune():
                self._prune(run, epoch, values[epoch - 1])
                return

    def _prune(self, run: TrialRun, epoch: int, value: float) -> None:
        run.pruned_at = epoch
        run.trial.set_user_attr("pruned_at_epoch", epoch)
        why = f"trial {run.number} pruned at epoch {epoch}: {self.settings.objective} {value:.4f} (its folds' mean)"
        log.info("%s (%s pruner); %d waiting jobs will not start", why, self.settings.pruner, len(run.waiting))
        run.waiting = []
        for index in run.running:
            request_prune(next(job.folder for job in run.jobs if job.index == index), why)

    def _log_end(self) -> None:
        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if complete:
            best = self.study.best_trial
            log.info(
                "search done: %d trials; best trial %d, %s %.4f: %s",
                len(self.study.trials),
                best.number,
                self.settings.objective,
                best.value,
                " ".join(best.user_attrs["config"]),
            )


def run_search(
    config: DictConfig,
    arguments: list[str],
    launch: Launch,
    capacity: int,
    suggested: int,
    compose: Callable[[list[str]], DictConfig],
    stop: GracefulStop,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """The search `config.search` describes, with the command line's `arguments`; jobs go to `launch`,
    `suggested` at once with search.parallel=auto, else search.parallel of them, at most `capacity`."""
    settings = SearchSettings.of(config)
    space = parse_space(OmegaConf.to_container(config.search.space, resolve=True))
    plan = JobPlan(_fixed_overrides(arguments), settings.folds, compose)
    # Second one, not hour three: a key the space names, or a value it allows, that no job could run with.
    plan.jobs(0, [dim.override(dim.first) for dim in space])
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = sweep_dir / LOCK_FILE
    if held_by_another(lock):
        raise SearchError(f"another process runs the search in {sweep_dir}; wait for it, or stop it first")
    with process_lock(lock):
        study = open_study(sweep_dir, str(config.name), settings)
        study.set_user_attr("fixed", plan.fixed)
        study.set_user_attr("all_folds", _all_folds(compose(plan.fixed)))
        parallel = suggested if settings.parallel == "auto" else min(capacity, settings.parallel)
        log.info(
            "search %s: %d of %d trials in %s; %d jobs at once; dashboard: optuna-dashboard %s",
            config.name,
            len(study.trials),
            settings.n_trials,
            sweep_dir / STUDY_FILE,
            parallel,
            study_storage(sweep_dir),
        )
        Search(study, settings, space, plan, launch, parallel, stop, on_stop).run()


def _fixed_overrides(arguments: list[str]) -> list[str]:
    """The command line's overrides every job gets. The search's own settings (search.*) are the sweep's,
    not any job's; a sweep (a,b) or a fold would fight the search for its keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = []
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if key.lstrip("+~").startswith("search."):
            continue
        if override.is_sweep_override():
            raise SearchError(
                f"{override.input_line}: a search sweeps search.space, not the command line; put "
                f"{key.lstrip('+~')}: choice(...) in search.space, or run the grid without sweep=search"
            )
        if key.lstrip("+~") == FOLD_KEY:
            raise SearchError(f"{override.input_line}: a search's folds are search.folds, e.g. search.folds=[1,2]")
        fixed.append(override.input_line)
    return fixed


def _all_folds(job_cfg: DictConfig) -> list[str]:
    """The corpus's folds, for the command that trains the best trial on all of them; none for a corpus
    with fixed splits (data.fold null)."""
    if OmegaConf.select(job_cfg, FOLD_KEY) is None:
        return []
    return [str(fold) for fold in range(1, int(OmegaConf.select(job_cfg, "data.n_folds", default=5)) + 1)]
