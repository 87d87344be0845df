"""predict.py's, evaluate.py's and export.py's jobs: run, and turn a user's mistake into one clear message.

Nothing here imports torch at module level, so that the entry points' --help stays quick.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from emotion.job import EXIT_CONFIG_ERROR
from emotion.training.outputs import metrics_record, write_json

log = logging.getLogger(__name__)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that say what to fix: a traceback would only hide the message."""
    from emotion.data.scan import BadItemsError
    from emotion.prediction import InputError
    from emotion.training.recipe import CheckpointError

    return CheckpointError, InputError, BadItemsError, FileNotFoundError, ValueError


def predict_command(cfg: DictConfig) -> None:
    from emotion.prediction import run_predict

    print(f"wrote {_or_one_message(run_predict, cfg).table}")


def export_command(cfg: DictConfig) -> None:
    from emotion.export import run_export

    print(f"wrote {_or_one_message(run_export, cfg)}")


def _or_one_message(work, cfg: DictConfig):
    """`work(cfg)`; a user's mistake ends the process with its message alone and the config error's code."""
    try:
        return work(cfg)
    except _user_errors() as err:
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def evaluate_command(cfg: DictConfig) -> None:
    """Evaluate, and record the result (or the failure) in metrics.json. Nothing is returned to Hydra: an
    evaluation's scores are often test scores, which no sweeper may optimise."""
    from emotion.evaluation import run_evaluate

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run_evaluate(cfg, out_dir)
    except Exception as err:
        profile = None
        write_json(out_dir / "metrics.json", metrics_record("failed", cfg.data.get("fold"), profile, error=str(err)))
        if HydraConfig.get().mode == RunMode.MULTIRUN or not isinstance(err, _user_errors()):
            raise
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    write_json(out_dir / "metrics.json", metrics)
    log.info("wrote %s and %s", out_dir / "metrics.json", out_dir / "predictions.csv")
