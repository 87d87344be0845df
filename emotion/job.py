"""One Hydra job: check its config, name it, open its tracker run, train, and leave metrics.json whatever happens.

Nothing here imports torch before the config has passed its checks, so that a typo is reported at once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from functools import partial
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from emotion.checks import ConfigError, check_config
from emotion.files import process_lock
from emotion.logger import JobInfo, NoRun, open_run, redact_secrets
from emotion.selection import score_key
from emotion.settings import EvaluateSettings, JobSettings, SettingsError
from emotion.signals import EXIT_INTERRUPTED, STOP, GracefulStop, Interrupted
from emotion.sweeps.folders import JOB_LOCK
from emotion.sweeps.pruning import PruneWatch
from emotion.training.outputs import (
    CROSS_FOLDER,
    FINAL_STATUSES,
    cross_record,
    metrics_record,
    read_metrics,
    write_json,
)

log = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2  # as command-line tools exit on a usage error


def run_job(cfg: DictConfig) -> float:
    """Train the job `cfg` describes; returns its best validation score, `report.select` (what a Hydra sweeper
    optimises: never a test score).

    A job whose folder already holds a completed metrics.json is not trained again. The first SIGTERM or
    SIGINT stops the job at its next safe point, resumable, and keeps a sweep's next job from starting: the
    process exits with EXIT_INTERRUPTED.
    """
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    stop = STOP.install()
    if stop.requested:  # the signal came between two jobs of a sweep
        raise SystemExit(EXIT_INTERRUPTED)
    # One process per job folder: another one running it (a second driver of the same sweep) is waited for.
    waiting = partial(log.info, "%s is being run by another process; waiting", out_dir)
    try:
        with process_lock(out_dir / JOB_LOCK, waiting, stop):
            value = _run_in_folder(cfg, out_dir, stop)
    except Interrupted as stopped:  # while waiting for the lock (training turns its own into SystemExit)
        log.warning("%s", stopped)
        raise SystemExit(stopped.exit_code) from None
    if stop.requested:  # the job finished before it could stop: stop the sweep here
        log.warning("stopped by %s after this job completed", signal.Signals(stop.received).name)
        raise SystemExit(EXIT_INTERRUPTED)
    return value


def _run_in_folder(cfg: DictConfig, out_dir: Path, stop: GracefulStop) -> float:
    previous = read_metrics(out_dir / "metrics.json")
    if previous and previous["status"] in FINAL_STATUSES:
        untested = _untested_corpora(cfg, previous)
        if not untested:
            log.info("%s: %s before (metrics.json), skipping", out_dir, previous["status"])
            return selected_score(cfg, previous)
        log.info("%s: completed before; to be tested on %s", out_dir, ", ".join(untested))
        settings = _checked_without_record(cfg)  # a bad test corpus must not turn a completed record failed
        if settings.model.kind != "baseline":  # a baseline keeps no model: it is fitted again below (seconds)
            return _test_again(settings, cfg, out_dir, previous)
    if previous:  # it failed or was stopped: training goes on from its last checkpoint (trainer.resume=auto)
        log.info("%s: its previous run ended %s: %s", out_dir, previous["status"], previous.get("error"))
    where = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    write_json(out_dir / "job.json", where)
    try:
        check_config(cfg)
        settings = JobSettings.of(cfg)
    except (ConfigError, SettingsError) as err:
        _record_failure(cfg, out_dir, str(err))
        write_json(out_dir / "job.json", {**where, "ended": time.time()})
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # recorded as failed; the sweep's other jobs go on
        print(err, file=sys.stderr)  # the problems alone: a traceback would only hide them
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    try:
        metrics = _train(cfg, settings, out_dir, stop, where)
    finally:
        write_json(out_dir / "job.json", {**where, "ended": time.time()})
    log.info("wrote %s", out_dir / "metrics.json")
    return selected_score(cfg, metrics)


def _checked_without_record(cfg: DictConfig) -> JobSettings:
    """The job's settings once its config passes the checks; otherwise it stops, leaving metrics.json as it was."""
    try:
        check_config(cfg)
        return JobSettings.of(cfg)
    except (ConfigError, SettingsError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def _test_again(settings: JobSettings, cfg: DictConfig, out_dir: Path, previous: dict) -> float:
    """A completed job asked for tests it lacks (sweep=crosscorpus with a corpus added, another
    data.test_normalise): its best model is scored on them. It is never trained again, and a problem leaves
    its record as it was."""
    from emotion import cpu

    budget = cpu.job_budget(settings)
    cpu.apply(budget)
    metrics = {**previous, "cross": cross_tests(settings, out_dir, budget)}
    write_json(out_dir / "metrics.json", metrics)
    return selected_score(cfg, metrics)


def _untested_corpora(cfg: DictConfig, metrics: dict) -> list[str]:
    """The corpora of data.test_corpora a completed job has not been tested on yet, as data.test_normalise
    asks (none once it is pruned)."""
    if metrics["status"] != "completed":
        return []
    from emotion.data.corpora import corpus_name, test_corpora
    from emotion.settings import DataSettings

    try:
        data = DataSettings.of(cfg.data)
    except Exception:  # a bad value: the job runs on to the config checks, which name it
        return ["?"]
    trained_on = set(metrics.get("by_corpus") or [corpus_name(data)])
    asked = data.test_normalise
    tested = {name for name, test in (metrics.get("cross") or {}).items() if test.get("normalise_asked") == asked}
    return [name for name in map(corpus_name, test_corpora(data)) if name not in trained_on | tested]


def selected_score(cfg: DictConfig, metrics: dict) -> float:
    """The job's best validation score on report.select: the epoch it kept was chosen by the same score."""
    select = score_key(cfg.report.select)
    value = (metrics.get("val_best") or {}).get(select)
    return math.nan if value is None else value


def _train(cfg: DictConfig, settings: JobSettings, out_dir: Path, stop: GracefulStop, where: dict) -> dict:
    """Train within the job's CPU budget (recorded in job.json with `where`) with a tracker run open, and
    record how it ended in metrics.json and the run: completed or pruned (as training returns it), or
    interrupted, or failed."""
    import torch  # from here on: the config is known to be valid

    from emotion import cpu

    budget = cpu.job_budget(settings)
    cpu.apply(budget)
    where["cpu"] = budget.record()
    write_json(out_dir / "job.json", where)

    from emotion.training.baseline import fit_baseline
    from emotion.training.loop import fit, release_memory
    from emotion.training.preflight import memory_advice
    from emotion.training.recipe import CheckpointError

    run = NoRun()
    try:
        # Resolved, so the tracker shows values, not `${...}` interpolations.
        config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
        run = open_run(settings.logger, config, out_dir, describe_job(cfg, out_dir))
        if settings.model.kind == "baseline":
            metrics = fit_baseline(settings, out_dir, run, stop, budget)
        else:  # a search may prune the job: it leaves a marker in the job's folder
            metrics = fit(settings, out_dir, run, stop, budget, prune=PruneWatch(out_dir))
            if metrics["status"] == "completed" and settings.data.test_parts:
                metrics["cross"] = cross_tests(settings, out_dir, budget)
    except Interrupted as stopped:
        write_json(
            out_dir / "metrics.json",
            metrics_record("interrupted", settings.data.fold, settings.model.profile, error=str(stopped)),
        )
        run.finish(exit_code=stopped.exit_code, preempted=True)
        again = "the same command again" if settings.trainer.resume == "auto" else "it again with trainer.resume=auto"
        log.warning("%s; run %s to resume (exit code %d)", stopped, again, stopped.exit_code)
        raise SystemExit(stopped.exit_code) from None
    except CheckpointError as err:  # model.init_from names a checkpoint that does not fit: say so, no traceback
        _record_failure(cfg, out_dir, str(err))
        run.finish(exit_code=EXIT_CONFIG_ERROR)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except torch.cuda.OutOfMemoryError as err:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        peak_gb = torch.cuda.max_memory_allocated() / 1e9
        advice = memory_advice(settings, peak_gb, props.total_memory / 1e9, props.name, "CUDA ran out of memory")
        _record_failure(cfg, out_dir, advice)
        run.finish(exit_code=1)
        raise RuntimeError(advice) from err
    except BaseException as err:
        _record_failure(cfg, out_dir, "".join(traceback.format_exception_only(err)).strip())
        run.finish(exit_code=1)
        raise
    finally:
        release_memory()
    write_json(out_dir / "metrics.json", metrics)
    run.finish(summary=tracker_summary(metrics))
    return metrics


def cross_tests(settings: JobSettings, out_dir: Path, budget) -> dict:
    """The job's best model scored on the test split of each corpus of data.test_corpora that it did not
    train on, as evaluate.py scores it (normalised as data.test_normalise says; auto: a corpus's own
    statistics where the model learned with the training split's), each into cross/<corpus>/; a test found
    there already (a resumed job) is not run again. Returns metrics.json's `cross`: {corpus: its test scores
    and how they were made}."""
    from emotion.data.corpora import corpus_name, test_corpora
    from emotion.evaluation import evaluate_models
    from emotion.trained import load_models

    trainer = settings.trainer
    models = load_models(out_dir, trainer.device, trainer.precision)
    how = EvaluateSettings(
        batch_size=settings.data.batch_size,
        workers=budget.loader_workers,
        acoustic_workers=budget.feature_workers,
        device=trainer.device,
        precision=trainer.precision,
        progress_bar=trainer.progress_bar,
        normalise=settings.data.test_normalise,
        split="test",
        conditions=["clean"],
        condition_seed=0,
        noise_dir=None,
        rir_dir=None,
    )
    cross = {}
    for data in test_corpora(settings.data):
        name = corpus_name(data)
        if name in models[0].label_scales:  # a corpus it trained on: its score is the job's own test
            continue
        folder = out_dir / CROSS_FOLDER / name
        record = read_metrics(folder / "metrics.json")
        if not record or record["status"] != "evaluated" or record["data"].get("normalise_asked") != how.normalise:
            folder.mkdir(parents=True, exist_ok=True)
            record = evaluate_models(models, data, how, settings.cache_dir, folder)
            write_json(folder / "metrics.json", record)
        cross[name] = cross_record(record)
    return cross


def _record_failure(cfg: DictConfig, out_dir: Path, error: str) -> None:
    write_json(out_dir / "metrics.json", metrics_record("failed", cfg.data.fold, cfg.model.profile, error=error))


def tracker_summary(metrics: dict) -> dict:
    """metrics.json flattened for the tracker: `test/ccc_v`, `params/total`, `best_epoch`, …"""
    summary = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            summary.update({f"{key}/{inner}": v for inner, v in value.items()})
        elif isinstance(value, (int, float)):
            summary[key] = value
    return summary


def describe_job(cfg: DictConfig, out_dir: Path) -> JobInfo:
    hydra = HydraConfig.get()
    overrides = hydra.job.override_dirname
    group = cfg.logger.group
    if group is None and hydra.mode == RunMode.MULTIRUN:
        group = cfg.name
    name = redact_secrets(overrides or cfg.data.name)
    tags = [cfg.model.profile] if cfg.model.kind == "baseline" else [cfg.model.profile, cfg.encoder.name]
    trial = OmegaConf.select(cfg, "search.trial")  # a search's job: its trial's number names and tags it
    if trial is not None:
        name, tags = f"trial {trial}: {name}", [*tags, f"trial {trial}"]
    return JobInfo(
        # The job's folder names its run: a requeued or resumed job goes on with the same W&B run.
        run_id=hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:16],
        name=name,
        group=group,
        job_type=f"fold{cfg.data.fold}" if cfg.data.fold is not None else cfg.data.get("test_set", "test"),
        tags=tags,
    )
