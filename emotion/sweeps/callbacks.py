"""Hydra callbacks of a sweep."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from emotion.report import ReportSettings, log_to_wandb, write_summary
from emotion.sweeps.folders import register_resolver

log = logging.getLogger(__name__)
register_resolver()  # job processes of the GPU pool and SLURM import this module before naming their folders


class SweepSummary(Callback):
    """Rewrites the sweep's summary after every job and once more at the end.

    After every job, not only at the end: Hydra skips `on_multirun_end` when a job failed, and with the GPU
    pool or SLURM the jobs end in other processes, so each one brings the table up to date itself.
    """

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            summary = self._write(config)
            if summary:
                log.info("comparison table updated: %s", _where(summary))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        summary = self._write(config)
        if not summary:
            return
        log.info("sweep summary:\n%s\nwritten to %s", summary.read_text(), _where(summary))
        logger = config.get("logger")
        if logger is not None and logger.backend == "wandb":
            try:
                log_to_wandb(summary.parent, logger.group or config.name, logger.project, logger.entity, logger.mode)
            except Exception:  # the table on disk is written; the dashboard's copy must not fail the sweep
                log.exception("could not log the summary of %s to W&B", summary.parent)

    @staticmethod
    def _write(config: DictConfig) -> Path | None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            return write_summary(sweep_dir, ReportSettings.of(config))
        except Exception:  # a broken summary must not fail a job that trained fine
            log.exception("could not write the summary of %s", sweep_dir)
            return None


def _where(summary: Path) -> str:
    return f"{summary} (also {summary.with_suffix('.csv').name} and {summary.with_suffix('.png').name})"
