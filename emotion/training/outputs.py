"""The files a job leaves in its output directory: metrics.json, predictions.csv, history.csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from emotion.files import write_atomically

# metrics.json's keys, in order; sweeps and reports read exactly these.
METRICS_KEYS = (
    "status",
    "fold",
    "profile",
    "test",
    "val_best",
    "best_epoch",
    "epochs",
    "sec_per_epoch",
    "peak_mem_gb",
    "mem_kind",
    "params",
    "device",
)
# A job that ended so is not run again: it completed, or its search pruned it (emotion.sweeps.pruning).
FINAL_STATUSES = ("completed", "pruned")
# What an evaluated record (evaluate.py) adds: which checkpoints, which data, and how the scales relate.
EVALUATION_KEYS = ("checkpoints", "data", "scale")
# What a job started from a checkpoint (model.init_from) adds: {"checkpoint", "seen_test_speakers", "warning"}.
FINE_TUNING_KEYS = ("init_from",)


def metrics_record(status: str, fold: int, profile: str, **fields) -> dict:
    """A metrics.json record; fields not known yet (a failed job) stay null. A failure adds `error`."""
    unknown = set(fields) - set(METRICS_KEYS) - {"error", *EVALUATION_KEYS, *FINE_TUNING_KEYS}
    if unknown:
        raise KeyError(f"not metrics.json keys: {sorted(unknown)}")
    record = dict.fromkeys(METRICS_KEYS)
    record.update(status=status, fold=fold, profile=profile, **fields)
    return record


def read_metrics(path: Path) -> dict | None:
    """A metrics.json record; None when there is none (yet), or it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: dict) -> None:
    write_atomically(path, json.dumps(obj, indent=2) + "\n")


def write_history(path: Path, rows: list[dict]) -> None:
    """Rewritten whole after every epoch, so the file is complete whenever a job stops."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def write_predictions(path: Path, items: list, true: np.ndarray, pred: np.ndarray, dimensions: tuple[str, ...]) -> None:
    """One row per test item: id, speaker, then true and predicted value per dimension, on the corpus's scale.
    The speaker is what the report's bootstrap resamples: a speaker's utterances are not independent."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "speaker", *(f"{dim}_{kind}" for dim in dimensions for kind in ("true", "pred"))])
        for item, true_row, pred_row in zip(items, true, pred, strict=True):
            values = (f"{v:.4f}" for pair in zip(true_row, pred_row, strict=True) for v in pair)
            writer.writerow([item.id, item.speaker, *values])
