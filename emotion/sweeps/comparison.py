"""How sure a difference between two configurations is: pooled CCC, a paired test over runs, a paired
bootstrap over utterances. The tests are scipy's; CCC is the one the model is trained and scored with.

Two rows are compared on what both have: the (fold, seed) runs both completed and, for the bootstrap, the
test utterances both predicted in each of those runs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from emotion.sweeps.jobs import Job
from emotion.training.metrics import ccc

DIMENSION_KEYS = {"arousal": "ccc_a", "valence": "ccc_v", "dominance": "ccc_d"}


@dataclass(frozen=True)
class RunPredictions:
    """One run's test predictions (predictions.csv): true and predicted values per utterance id."""

    ids: tuple[str, ...]
    true: dict[str, np.ndarray]  # score key (ccc_v, …) → values in `ids` order
    pred: dict[str, np.ndarray]


@dataclass(frozen=True)
class RowResults:
    """A configuration's completed runs, by (fold, seed): test scores and predictions."""

    scores: dict[tuple, dict[str, float | None]]
    predictions: dict[tuple, RunPredictions]

    @classmethod
    def of(cls, jobs: list[Job]) -> RowResults:
        predictions = {job.run: run for job in jobs if (run := read_predictions(job)) is not None}
        return cls({job.run: job.metrics["test"] for job in jobs}, predictions)

    def values(self, key: str) -> dict[tuple, float]:
        return {run: scores[key] for run, scores in self.scores.items() if scores.get(key) is not None}


def read_predictions(job: Job) -> RunPredictions | None:
    path = job.folder / "predictions.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    dims = [dim for dim in DIMENSION_KEYS if rows and f"{dim}_pred" in rows[0]]

    def columns(kind: str) -> dict[str, np.ndarray]:
        return {DIMENSION_KEYS[dim]: np.array([float(row[f"{dim}_{kind}"]) for row in rows]) for dim in dims}

    return RunPredictions(tuple(row["id"] for row in rows), columns("true"), columns("pred"))


def concordance(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """CCC along the last axis; `true` is broadcast to `pred`'s shape, leading axes are independent problems."""
    pred_t = torch.as_tensor(pred, dtype=torch.float64)
    true_t = torch.as_tensor(true, dtype=torch.float64).expand(pred_t.shape)
    return ccc(pred_t.movedim(-1, 0), true_t.movedim(-1, 0)).numpy()


def pooled_ccc(results: RowResults, key: str) -> float:
    """CCC over every test prediction of each seed's folds together, averaged over seeds: the number many
    IEMOCAP papers report, beside the mean over folds."""
    seeds = sorted({seed for _, seed in results.predictions}, key=str)
    per_seed = []
    for seed in seeds:
        pred, true = _pooled(results, seed, key)
        if pred:
            ids = sorted(pred)
            per_seed.append(concordance(np.array([pred[i] for i in ids]), np.array([true[i] for i in ids])))
    return float(np.mean(per_seed)) if per_seed else math.nan


@dataclass(frozen=True)
class Difference:
    """A row's test CCC minus the reference's on one dimension."""

    runs: int  # (fold, seed) runs both have
    mean: float  # of the per-run differences
    p_value: float  # paired t-test over those runs (NaN below two, or when every difference is the same)
    pooled: float  # pooled CCC difference over the utterances both predicted
    low: float  # its paired bootstrap 95% interval
    high: float


def compare(row: RowResults, reference: RowResults, key: str, resamples: int, seed: int) -> Difference:
    """`row` − `reference` on score `key` (ccc_v, …): over the runs both have, and over their utterances."""
    mine, theirs = row.values(key), reference.values(key)
    shared = sorted(set(mine) & set(theirs), key=str)
    deltas = [mine[run] - theirs[run] for run in shared]
    p_value = math.nan
    if len(shared) >= 2 and np.ptp(deltas) > 0:
        p_value = float(stats.ttest_rel([mine[run] for run in shared], [theirs[run] for run in shared]).pvalue)
    pooled, low, high = paired_bootstrap(row, reference, key, resamples, seed)
    return Difference(len(shared), float(np.mean(deltas)) if deltas else math.nan, p_value, pooled, low, high)


def paired_bootstrap(
    row: RowResults, reference: RowResults, key: str, resamples: int, seed: int
) -> tuple[float, float, float]:
    """The pooled-CCC difference (row − reference) and its percentile 95% interval, resampling utterances
    with replacement: one resample serves both rows and every seed, so that only the models differ."""
    a, b, true = _aligned(row, reference, key)
    if true is None or len(true) < 3:
        return math.nan, math.nan, math.nan

    def difference(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        """Mean over seeds of pooled CCC, row minus reference, for utterance `indices` (…, utterances)."""
        idx = indices.astype(int)
        return (concordance(a[:, idx], true[idx]) - concordance(b[:, idx], true[idx])).mean(axis=0)

    observed = float(difference(np.arange(len(true))))
    if resamples <= 0:
        return observed, math.nan, math.nan
    result = stats.bootstrap(
        (np.arange(len(true)),),
        difference,
        n_resamples=resamples,
        batch=100,
        vectorized=True,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )
    return observed, float(result.confidence_interval.low), float(result.confidence_interval.high)


def _aligned(row: RowResults, reference: RowResults, key: str):
    """Both rows' predictions (seeds, utterances) over the seeds both have and the utterances both
    predicted in each of them, and those utterances' true values; Nones when there are none."""
    seeds = sorted({seed for _, seed in row.predictions} & {seed for _, seed in reference.predictions}, key=str)
    pairs = [(_pooled(row, seed, key), _pooled(reference, seed, key)) for seed in seeds]
    if not pairs:
        return None, None, None
    ids = sorted(set.intersection(*(set(mine[0]) & set(theirs[0]) for mine, theirs in pairs)))
    a = np.array([[mine[0][i] for i in ids] for mine, _ in pairs])
    b = np.array([[theirs[0][i] for i in ids] for _, theirs in pairs])
    return a, b, np.array([pairs[0][0][1][i] for i in ids])


def _pooled(results: RowResults, seed, key: str) -> tuple[dict[str, float], dict[str, float]]:
    """One seed's predictions and true values on `key`, by utterance id, over its folds."""
    pred, true = {}, {}
    for (_, run_seed), run in results.predictions.items():
        if run_seed == seed and key in run.pred:
            pred.update(zip(run.ids, run.pred[key], strict=True))
            true.update(zip(run.ids, run.true[key], strict=True))
    return pred, true
