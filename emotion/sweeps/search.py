"""A search (Optuna) whose trial is a configuration trained on several folds, nested so that the test
scores it reports come from folds its choice never saw.

    python train.py -m sweep=search [hydra/launcher=gpu_pool hydra.launcher.devices=[0,1,2,3]]

For each test fold of `search.test_folds` (by default the corpus's first), one study chooses a configuration
on the corpus without that fold (every job runs with data.exclude_fold=<it>): its trials train on
`search.folds` of the remaining folds and are valued by validation alone. Once the study has all its
trials, its best configuration is trained on the test fold itself: that job's test score is the search's
clean number, and with every fold a test fold the search is a nested cross-validation. With no test folds
(`search.test_folds=[]`) a single study runs on `search.folds`, and on a cross-validated corpus no test score
of it is clean.

The sampler proposes a configuration from `search.space`; its jobs (one per fold) go through the sweep's
launcher, one `launch` call per job from a thread of its own, so that a job starts the moment a slot frees,
not when a batch ends. After every epoch the trial's value so far (the mean over its started folds of their
best validation score: see emotion.sweeps.pruning) goes to the pruner, which may stop the trial: its running
jobs end `pruned`, its waiting ones never start. A finished trial's value is the mean of its jobs' best
validation score (`report.select`); no test score ever reaches a study.

The studies live in the sweep's folder (search.db, Optuna's SQLite storage), which the driver alone opens:
what the summary needs is written to search.json. The same command again continues: finished and pruned
trials stay, the jobs of a trial that was running go on from their checkpoints, and `search.n_trials`
counts every trial of a study. A study resumed with another space, other fixed overrides, folds, encoder
or objective is refused. All study calls come from the main thread; the job threads only launch.
"""

from __future__ import annotations

import dataclasses
import json
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
from emotion.data.corpora import fold_numbers
from emotion.files import held_by_another, process_lock
from emotion.settings import DataSettings
from emotion.signals import EXIT_INTERRUPTED, GracefulStop
from emotion.sweeps.folders import STUDY_FILE, study_storage
from emotion.sweeps.jobs import EXCLUDED_FOLD_KEY, FOLD_KEY
from emotion.sweeps.pruning import best_so_far, fold_means, request_prune
from emotion.sweeps.search_report import SearchRecord, StudyRecord, TrialLine, write_search
from emotion.sweeps.space import Dimension, parse_space
from emotion.sweeps.studies import SearchError, SearchSettings, StudyPlan, open_study, plan_studies
from emotion.training.outputs import FINAL_STATUSES, read_metrics

log = logging.getLogger(__name__)

LOCK_FILE = ".search.lock"
TRIAL_KEY = "search.trial"  # set in each job: the number of its trial (W&B names and tags runs with it)
POLL_SECONDS = 0.5  # how often the search looks at its jobs (their history.csv and metrics.json)
GIVE_UP_AFTER_FAILURES = 3  # trials in a row that failed with no trial yet finished: the setup is broken


@dataclass
class TrialJob:
    index: int  # the job's number in the sweep (Hydra's hydra.job.num)
    overrides: list[str]
    folder: Path


@dataclass
class JobPlan:
    """How a configuration becomes jobs: the command line's own overrides, the configuration's, a fold."""

    fixed: list[str]  # the command line's overrides (search.* aside): every job gets them
    compose: Callable[[list[str]], DictConfig]  # a job's config from its overrides (Hydra's sweep config)

    def job(self, index: int, overrides: list[str]) -> TrialJob:
        """A job, its config checked (ConfigError) before it starts."""
        job_cfg = self.compose([*self.fixed, *overrides])
        check_config(job_cfg)
        folder = Path(job_cfg.hydra.sweep.dir) / str(job_cfg.hydra.sweep.subdir)
        return TrialJob(index, [*self.fixed, *overrides], folder)

    def trial_jobs(self, study: StudyPlan, first_index: int, number: int, config: list[str]) -> list[TrialJob]:
        """A trial's jobs, one per fold of its study, blind to the study's test fold."""
        excluded = [] if study.test_fold is None else [f"{EXCLUDED_FOLD_KEY}={study.test_fold}"]
        return [
            self.job(first_index + i, [*config, f"{FOLD_KEY}={_fold_text(fold)}", *excluded, f"{TRIAL_KEY}={number}"])
            for i, fold in enumerate(study.folds)
        ]


def _fold_text(fold) -> str:
    return "null" if fold is None else str(fold)


def _metrics(job: TrialJob) -> dict:
    return read_metrics(job.folder / "metrics.json") or {}


def _status(job: TrialJob) -> str | None:
    """How the job ended; None while it waits or runs (or was killed)."""
    return _metrics(job).get("status")


@dataclass
class TrialRun:
    """A trial of a study and its jobs, while any of them waits or runs."""

    study: StudyRun
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

    @property
    def name(self) -> str:
        return f"{self.study.label}trial {self.number}"


@dataclass
class StudyRun:
    """A study while the search runs it: its trials, then the job training its choice on its test fold."""

    plan: StudyPlan
    study: optuna.Study
    first_index: int  # the sweep's job numbers from here on are this study's
    outer: TrialJob | None = None  # its choice on its test fold, once every trial has finished
    outer_launch: Future | None = None
    outer_ended: bool = False  # and the search has looked at how

    @property
    def label(self) -> str:
        """How the log names the study's trials: by its test fold when the search has several studies."""
        return "" if self.plan.test_fold is None else f"test fold {self.plan.test_fold}, "

    def begun(self) -> int:
        """The study's trials that have begun (a trial enqueued with Optuna's enqueue_trial waits to be asked)."""
        waiting = (optuna.trial.TrialState.WAITING,)
        return len(self.study.trials) - len(self.study.get_trials(deepcopy=False, states=waiting))

    def best(self) -> optuna.trial.FrozenTrial | None:
        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return max(complete, key=lambda trial: trial.value, default=None)


Launch = Callable[[list[str], int], object]  # a job's overrides and index → the launcher's result


class Search:
    """Runs every study up to `settings.n_trials` trials, and each study's choice on its test fold, at most
    `parallel` jobs at a time. A study starts its trials once the study before it has asked for all of its."""

    def __init__(
        self,
        studies: list[StudyRun],
        settings: SearchSettings,
        space: list[Dimension],
        plan: JobPlan,
        launch: Launch,
        parallel: int,
        stop: GracefulStop,
        on_stop: Callable[[], None] | None = None,
        record: Callable[[list[StudyRecord]], None] | None = None,
    ):
        self.studies, self.settings, self.space, self.plan = studies, settings, space, plan
        self.launch, self.parallel, self.stop, self.on_stop = launch, parallel, stop, on_stop
        self.record = record  # called with the search's state whenever it may have changed
        self.active: list[TrialRun] = []
        self.failures_in_a_row = 0
        self.threads: ThreadPoolExecutor | None = None  # while running: where the jobs' launches run

    def run(self) -> None:
        self.active = [run for study in self.studies for run in self._resume_all(study)]
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="job") as threads:
            self.threads = threads
            try:
                self._loop()
            except BaseException as err:
                if not self.stop.requested:  # an error of the search itself: its jobs save and stop now
                    self.stop.request(f"the search failed ({err.__class__.__name__}: {err})")
                    if self.on_stop is not None:
                        self.on_stop()
                raise  # once the launches have returned (the pool waits for them)
        self._write_record()
        if self.stop.requested:
            log.warning("search stopped: running trials save and stop; the same command continues the study")
            raise SystemExit(EXIT_INTERRUPTED)
        self._log_end()

    def _loop(self) -> None:
        stop_passed_on = False
        while True:
            self._end_jobs()
            self._watch_epochs()
            if self.stop.requested:
                if not stop_passed_on and self.on_stop is not None:
                    self.on_stop()
                stop_passed_on = True
            else:
                self._fill_slots()
            self._write_record()
            if not self._running() and (self.stop.requested or not self._more_to_do()):
                return
            time.sleep(POLL_SECONDS)

    # --- trials -------------------------------------------------------------------------------------

    def _resume_all(self, study: StudyRun) -> list[TrialRun]:
        running = study.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return [run for run in (self._resume(study, frozen) for frozen in running) if run is not None]

    def _resume(self, study: StudyRun, frozen: optuna.trial.FrozenTrial) -> TrialRun | None:
        """A trial an earlier run of the search left running: its jobs again (finished ones skip, the others
        go on from their checkpoints)."""
        trial = optuna.trial.Trial(study.study, frozen._trial_id)
        config = frozen.user_attrs.get("config")
        if config is None:  # the search stopped between asking for the trial and naming its jobs
            if set(frozen.params) != {dim.key for dim in self.space}:
                self._fail(study, trial, "the search stopped before the trial began, and its space has changed since")
                return None
            config = [dim.override(frozen.params[dim.key]) for dim in self.space]
            trial.set_user_attr("config", config)
        jobs = self._trial_jobs(study, frozen.number, config)
        run = TrialRun(study, trial, jobs, waiting=list(jobs), reported=max(frozen.intermediate_values, default=0))
        run.pruned_at = frozen.user_attrs.get("pruned_at_epoch")
        if run.pruned_at is not None:
            # Pruned, but the study was not yet told. Jobs that had begun go on only to stop where they are
            # (ending `pruned`, history kept); those that never began stay unrun, as on the first run.
            run.waiting = [job for job in jobs if job.folder.is_dir() and _status(job) not in FINAL_STATUSES]
            for job in run.waiting:
                request_prune(job.folder, f"trial {run.number} was pruned at epoch {run.pruned_at}")
        log.info("%s: resumed (%s)", run.name, " ".join(config))
        return run

    def _trial_jobs(self, study: StudyRun, number: int, config: list[str]) -> list[TrialJob]:
        first = study.first_index + number * len(study.plan.folds)
        return self.plan.trial_jobs(study.plan, first, number, config)

    def _ask(self) -> TrialRun | None:
        """A new trial of the first study that has trials to ask for, or None when every study has all."""
        study = next((study for study in self.studies if study.begun() < self.settings.n_trials), None)
        if study is None:
            return None
        trial = study.study.ask({dim.key: dim.distribution() for dim in self.space})
        config = [dim.override(trial.params[dim.key]) for dim in self.space]
        trial.set_user_attr("config", config)
        try:
            jobs = self._trial_jobs(study, trial.number, config)
        except ConfigError as err:
            self._fail(study, trial, f"its configuration does not pass the checks: {err}")
            return self._ask()
        run = TrialRun(study, trial, jobs, waiting=list(jobs))
        log.info("%s: %s on folds %s", run.name, " ".join(config), ", ".join(map(str, study.plan.folds)))
        return run

    def _finish(self, run: TrialRun) -> None:
        """Tell the study how the trial ended, from its jobs' metrics.json."""
        metrics = [_metrics(job) for job in run.jobs]
        statuses = [m.get("status") for m in metrics]
        if run.pruned_at is not None or "pruned" in statuses:
            run.study.study.tell(run.trial, state=optuna.trial.TrialState.PRUNED)
            log.info("%s: pruned at epoch %s", run.name, run.pruned_at or run.reported)
            self.failures_in_a_row = 0
        elif all(status == "completed" for status in statuses):
            self._report(run, final=True)  # the epochs some folds reached after others had ended
            folds = [m["val_best"][self.settings.score] for m in metrics]
            run.trial.set_user_attr("fold_values", folds)
            run.study.study.tell(run.trial, statistics.fmean(folds))
            log.info(
                "%s: %s %.4f (folds: %s)",
                run.name,
                self.settings.objective,
                statistics.fmean(folds),
                ", ".join(f"{value:.4f}" for value in folds),
            )
            self.failures_in_a_row = 0
        elif self.stop.requested:
            log.info("%s: stopped; the same command resumes it", run.name)
        else:
            errors = [
                f"{job.folder.name}: {m.get('error') or m.get('status') or 'no metrics.json'}"
                for job, m in zip(run.jobs, metrics, strict=True)
                if m.get("status") != "completed"
            ]
            self._fail(run.study, run.trial, "; ".join(errors))

    def _fail(self, study: StudyRun, trial: optuna.Trial, error: str) -> None:
        trial.set_user_attr("error", error)
        study.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.error("%strial %d failed: %s", study.label, trial.number, error)
        self.failures_in_a_row += 1
        finished = study.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if self.failures_in_a_row >= GIVE_UP_AFTER_FAILURES and not finished:
            raise SearchError(
                f"the first {self.failures_in_a_row} trials failed, the last with: {error}. The search stops; "
                "mend the cause and run the same command again (failed trials count towards search.n_trials)"
            )

    # --- a study's choice on its test fold ----------------------------------------------------------

    def _outer_ready(self) -> StudyRun | None:
        """A study whose trials have all ended and whose choice has not yet been trained on its test fold."""
        for study in self.studies:
            trials_over = study.begun() >= self.settings.n_trials and not any(r.study is study for r in self.active)
            if study.plan.test_fold is None or study.outer_launch is not None or not trials_over:
                continue
            best = study.best()
            if best is None:
                continue  # no trial completed: nothing to train (the summary says so)
            study.outer = self.plan.job(
                study.first_index + self.settings.n_trials * len(study.plan.folds),
                [*best.user_attrs["config"], f"{FOLD_KEY}={study.plan.test_fold}", f"{TRIAL_KEY}={best.number}"],
            )
            if _status(study.outer) in FINAL_STATUSES:  # an earlier run of the search trained it
                study.outer_launch = Future()
                study.outer_launch.set_result(None)
                continue
            log.info(
                "%sthe study's choice, trial %d (%s), trains and tests on fold %s",
                study.label,
                best.number,
                " ".join(best.user_attrs["config"]),
                study.plan.test_fold,
            )
            return study
        return None

    # --- jobs ---------------------------------------------------------------------------------------

    def _fill_slots(self) -> None:
        """Start jobs while slots are free: the oldest trial's waiting jobs first, then a study's choice on
        its test fold, then a new trial's."""
        while self._running() < self.parallel:
            run = next((run for run in self.active if run.waiting), None)
            if run is not None:
                job = run.waiting.pop(0)
                run.running[job.index] = self.threads.submit(self.launch, job.overrides, job.index)
                continue
            study = self._outer_ready()
            if study is not None:
                study.outer_launch = self.threads.submit(self.launch, study.outer.overrides, study.outer.index)
                continue
            run = self._ask()
            if run is None:
                return
            self.active.append(run)

    def _end_jobs(self) -> None:
        for run in list(self.active):
            for index, launched in list(run.running.items()):
                if launched.done():
                    del run.running[index]
                    self._log_error(launched, run.name, index)
            if run.over or (self.stop.requested and not run.running):
                self.active.remove(run)
                self._finish(run)
        for study in self.studies:
            if study.outer_launch is not None and study.outer_launch.done() and not study.outer_ended:
                study.outer_ended = True
                self._log_error(study.outer_launch, f"{study.label}the study's choice", study.outer.index)

    def _log_error(self, launched: Future, name: str, index: int) -> None:
        error = launched.exception()
        # A stopped job's launch may end in an error (SLURM's cancelled job): no news then.
        if error is not None and not isinstance(error, SystemExit) and not self.stop.requested:
            log.error("%s: job #%d: %s", name, index, error)

    def _running(self) -> int:
        outer = sum(1 for study in self.studies if study.outer_launch is not None and not study.outer_launch.done())
        return sum(len(run.running) for run in self.active) + outer

    def _more_to_do(self) -> bool:
        trials_left = any(study.begun() < self.settings.n_trials for study in self.studies)
        return any(run.waiting for run in self.active) or trials_left or self._outer_pending()

    def _outer_pending(self) -> bool:
        return any(
            study.plan.test_fold is not None and study.outer_launch is None and study.best() is not None
            for study in self.studies
        )

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
            ended.append(final or _status(job) in FINAL_STATUSES)
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
        why = f"{run.name} pruned at epoch {epoch}: {self.settings.objective} {value:.4f} (its folds' mean)"
        log.info("%s (%s pruner); %d waiting jobs will not start", why, self.settings.pruner, len(run.waiting))
        run.waiting = []
        for index in run.running:
            request_prune(next(job.folder for job in run.jobs if job.index == index), why)

    # --- what the summary reads ---------------------------------------------------------------------

    def _write_record(self) -> None:
        if self.record is not None:
            self.record(self._study_records())

    def _study_records(self) -> list[StudyRecord]:
        records = []
        for study in self.studies:
            outer = None if study.outer is None else study.outer.folder.name
            trials = [_trial_line(trial) for trial in study.study.get_trials(deepcopy=False)]
            folds = [_fold_text(fold) for fold in study.plan.folds]
            test_fold = None if study.plan.test_fold is None else str(study.plan.test_fold)
            records.append(StudyRecord(study.plan.name, folds, test_fold, trials, outer))
        return records

    def _log_end(self) -> None:
        for study in self.studies:
            best = study.best()
            if best is not None:
                log.info(
                    "%ssearch done: %d trials; best trial %d, %s %.4f: %s",
                    study.label,
                    len(study.study.trials),
                    best.number,
                    self.settings.objective,
                    best.value,
                    " ".join(best.user_attrs["config"]),
                )


def _trial_line(trial: optuna.trial.FrozenTrial) -> TrialLine:
    """How the summary shows a trial: complete ones by their value, pruned ones by their value at the epoch
    they were pruned."""
    state = trial.state.name.lower()
    steps = trial.intermediate_values
    value = trial.value if state == "complete" else (steps[max(steps)] if state == "pruned" and steps else None)
    config = dict(item.split("=", 1) for item in trial.user_attrs.get("config", []))
    epochs = trial.user_attrs.get("pruned_at_epoch") or max(steps, default=0)
    return TrialLine(trial.number, state, value, epochs, config, trial.user_attrs.get("error"))


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
    plan = JobPlan(_fixed_overrides(arguments), compose)
    base = compose(plan.fixed)
    corpus_folds = fold_numbers(DataSettings.of(base.data))
    studies = plan_studies(settings, corpus_folds, str(config.name))
    # Second one, not hour three: a key the space names, or a value it allows, that no job could run with.
    for study in studies:
        plan.trial_jobs(study, 0, 0, [dim.override(dim.first) for dim in space])
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = sweep_dir / LOCK_FILE
    if held_by_another(lock):
        raise SearchError(f"another process runs the search in {sweep_dir}; wait for it, or stop it first")
    with process_lock(lock):
        encoder = OmegaConf.to_container(base.encoder, resolve=True)
        space_record = [dataclasses.asdict(dim) for dim in space]
        runs = []
        for position, study in enumerate(studies):
            signature = {
                "space": json.loads(json.dumps(space_record)),
                "fixed overrides": _result_overrides(plan.fixed, config),
                "folds": [_fold_text(fold) for fold in study.folds],
                "encoder": encoder,
                "objective": settings.objective,
            }
            first_index = position * (settings.n_trials + 1) * len(study.folds)
            runs.append(StudyRun(study, open_study(sweep_dir, study, settings, signature), first_index))
        parallel = suggested if settings.parallel == "auto" else min(capacity, settings.parallel)
        log.info(
            "search %s: %s; %d trials per study in %s; %d jobs at once; dashboard: optuna-dashboard %s",
            config.name,
            ", ".join(_describe(study) for study in studies),
            settings.n_trials,
            sweep_dir / STUDY_FILE,
            parallel,
            study_storage(sweep_dir),
        )
        written = {}

        def record(studies: list[StudyRecord]) -> None:
            """search.json, rewritten when the search's state changed: the summary reads it, not search.db
            (on SLURM, jobs on other nodes write the summary, and SQLite on a shared file system is unsafe)."""
            folds = [str(fold) for fold in corpus_folds]
            state = SearchRecord(str(config.name), settings.objective, settings.n_trials, plan.fixed, folds, studies)
            if written.get("state") != state:
                write_search(sweep_dir, state)
                written["state"] = state

        Search(runs, settings, space, plan, launch, parallel, stop, on_stop, record).run()


def _result_overrides(fixed: list[str], config: DictConfig) -> list[str]:
    """The command line's overrides that change results: not the launcher's, nor those that name no job
    folder (the logger, the progress bar: hydra.job.config.override_dirname.exclude_keys)."""
    ignored = set(OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys", default=[]))
    keys = [item.split("=", 1)[0].lstrip("+~") for item in fixed]
    return [item for item, key in zip(fixed, keys, strict=True) if key not in ignored and not key.startswith("hydra")]


def _describe(study: StudyPlan) -> str:
    folds = ", ".join(map(_fold_text, study.folds))
    if study.test_fold is None:
        return f"one study on folds {folds}"
    return f"study {study.name} on folds {folds} without fold {study.test_fold}"


def _fixed_overrides(arguments: list[str]) -> list[str]:
    """The command line's overrides every job gets. The search's own settings (search.*) are the sweep's,
    not any job's; a sweep (a,b), a fold or an excluded fold would fight the search for its keys."""
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
        if key.lstrip("+~") in (FOLD_KEY, EXCLUDED_FOLD_KEY):
            raise SearchError(
                f"{override.input_line}: a search's folds are search.folds and search.test_folds, e.g. "
                "search.test_folds=[1] search.folds=2"
            )
        fixed.append(override.input_line)
    return fixed
