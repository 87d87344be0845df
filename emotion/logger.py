"""Experiment tracking: one Weights & Biases run per job (offline unless asked), or nothing."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from emotion.settings import LoggerSettings

# Keys whose values are never sent to the tracker, and environment variables whose values never are either.
SECRET_KEYS = re.compile(r"api_?key|token|secret|password", re.IGNORECASE)
SECRET_ENVIRONMENT = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class JobInfo:
    """How a job is named in the tracker: grouped by sweep, typed by fold, named by its overrides."""

    run_id: str
    name: str
    group: str | None
    job_type: str
    tags: list[str] = field(default_factory=list)


class Run(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...
    def finish(self, summary: dict | None = None, exit_code: int = 0, preempted: bool = False) -> None: ...


class NoRun:
    """`logger=none`: tracking switched off."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def finish(self, summary: dict | None = None, exit_code: int = 0, preempted: bool = False) -> None:
        pass


class WandbRun:
    """A W&B run whose files live in the job's output directory (`<out>/wandb/`)."""

    def __init__(self, settings: LoggerSettings, config: dict, out_dir: Path, job: JobInfo):
        import wandb  # here, not at the top: importing wandb takes a second that logger=none need not pay

        self._run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,
            dir=str(out_dir),
            config=config,
            group=job.group,
            job_type=job.job_type,
            name=job.name,
            tags=job.tags,
            id=job.run_id,
            resume="allow",
        )

    def log(self, metrics: dict, step: int) -> None:
        self._run.log(metrics, step=step)

    def finish(self, summary: dict | None = None, exit_code: int = 0, preempted: bool = False) -> None:
        for key, value in (summary or {}).items():
            self._run.summary[key] = value
        if preempted:
            self._run.mark_preempting()  # W&B shows it as preempted, to be resumed, not as crashed
        self._run.finish(exit_code=exit_code)


def redact_secrets(config, secrets: set[str] | None = None):
    """`config` (a dict, list or string) with the values of secret-looking keys, and every occurrence of a
    secret from the environment, replaced: a resolved config or an override may carry them through
    an `${oc.env:...}`."""
    if secrets is None:
        secrets = {os.environ[name] for name in SECRET_ENVIRONMENT if os.environ.get(name)}
    if isinstance(config, dict):
        return {
            key: REDACTED if SECRET_KEYS.search(str(key)) else redact_secrets(value, secrets)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [redact_secrets(value, secrets) for value in config]
    if isinstance(config, str):
        for secret in secrets:
            config = config.replace(secret, REDACTED)
    return config


def open_run(settings: LoggerSettings, config: dict, out_dir: Path, job: JobInfo) -> Run:
    """The job's tracker run; `config`: what it shows as the run's configuration."""
    if settings.backend == "none":
        return NoRun()
    if settings.backend == "wandb":
        return WandbRun(settings, config, out_dir, job)
    raise ValueError(
        f"logger.backend={settings.backend!r} is not one of wandb, none; pick logger=wandb or logger=none."
    )
