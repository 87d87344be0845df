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
# What an evaluated record (evaluate.py) adds: which checkpoints, which data, how the scales relate, and,
# under several evaluate.conditions, the scores under each ({condition: scores}; `test` is the first's); for
# several models, how well their spread ranks their mean's errors (emotion.uncertainty.spread_ranking).
EVALUATION_KEYS = ("checkpoints", "data", "scale", "conditions", "uncertainty")
# What a job started from a checkpoint (model.init_from) adds: {"checkpoint", "seen_test_speakers", "warning"}.
FINE_TUNING_KEYS = ("init_from",)
# What a job on several corpora adds: `by_corpus` (data=multi), {corpus: {"test": scores, "val_best": scores}};
# `cross` (data.test_corpora), {corpus: cross_record(...)}, whose files are in cross/<corpus>/.
CORPORA_KEYS = ("by_corpus", "cross")
CROSS_FOLDER = "cross"


def metrics_record(status: str, fold: int, profile: str, **fields) -> dict:
    """A metrics.json record; fields not known yet (a failed job) stay null. A failure adds `error`."""
    unknown = set(fields) - set(METRICS_KEYS) - {"error", *EVALUATION_KEYS, *FINE_TUNING_KEYS, *CORPORA_KEYS}
    if unknown:
        raise KeyError(f"not metrics.json keys: {sorted(unknown)}")
    record = dict.fromkeys(METRICS_KEYS)
    record.update(status=status, fold=fold, profile=profile, **fields)
    return record


def cross_record(evaluated: dict) -> dict:
    """What metrics.json's `cross` keeps of a test on another corpus (its evaluated record)."""
    data = evaluated["data"]
    kept = ("fold", "split", "items", "normalise", "normalise_asked")
    return {"test": evaluated["test"], **{key: data[key] for key in kept}}


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


def write_predictions(
    path: Path, items: list, true: np.ndarray, pred: np.ndarray, dimensions: tuple[str, ...], corpus=None
) -> None:
    """One row per test item: id, speaker, then true and predicted value per dimension, on the corpus's scale.
    The speaker is what the report's bootstrap resamples: a speaker's utterances are not independent.

    Items of several corpora (`corpus` with parts, data=multi) add a `corpus` column and the row's rating
    scale (`scale_low`, `scale_high`: the report pools them on [0, 1]), name speakers `<corpus>/<speaker>`
    (two corpora's `spk1` are two people), and leave a dimension their corpus does not rate empty."""
    several = corpus is not None and bool(corpus.parts)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        columns = [f"{dim}_{kind}" for dim in dimensions for kind in ("true", "pred")]
        writer.writerow(["id", "speaker", *(["corpus", "scale_low", "scale_high"] if several else []), *columns])
        for item, true_row, pred_row in zip(items, true, pred, strict=True):
            values = ("" if np.isnan(t) else f"{v:.4f}" for t, v in _pairs(true_row, pred_row))
            who = [item.speaker]
            if several:
                scale = corpus.part_of(item).scale
                who = [f"{item.corpus}/{item.speaker}", item.corpus, f"{scale.low:g}", f"{scale.high:g}"]
            writer.writerow([item.id, *who, *values])


def _pairs(true_row, pred_row):
    """(true, value) for each dimension's true then predicted value: a dimension without a label is empty."""
    for true, pred in zip(true_row, pred_row, strict=True):
        yield true, true
        yield true, pred
