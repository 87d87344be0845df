"""How sure a number is: pooled CCC, a paired test over folds, a paired bootstrap over speakers and Holm's
adjustment for many comparisons. The tests themselves are scipy's and statsmodels'.

Each uses the unit the data is independent in. The runs of one fold share its test speakers, so a
configuration's seeds are averaged within each fold before two configurations are tested over folds
(n = folds). Utterances cluster by speaker (and dialogue), so the bootstrap resamples speakers, each with
all their utterances: an utterance bootstrap's interval is too narrow.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from emotion.scores import ccc
from emotion.sweeps.jobs import Job

DIMENSION_KEYS = {"arousal": "ccc_a", "valence": "ccc_v", "dominance": "ccc_d"}
Run = tuple  # (fold, seed), as emotion.sweeps.jobs.Job.run


@dataclass(frozen=True)
class RunPredictions:
    """One run's test predictions (its predictions.csv): true and predicted values per utterance."""

    folder: Path
    ids: tuple[str, ...]
    speakers: tuple[str, ...] | None  # None in a predictions.csv written before it named speakers
    true: dict[str, np.ndarray]  # score key (ccc_v, …) → values in `ids` order
    pred: dict[str, np.ndarray]


def read_predictions(job: Job) -> RunPredictions | None:
    path = job.folder / "predictions.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    dims = [dim for dim in DIMENSION_KEYS if rows and f"{dim}_pred" in rows[0]]

    # A job on several corpora: each row on its corpus's scale (scale_low, scale_high), pooled on [0, 1]; an
    # empty cell is a dimension the row's corpus does not rate.
    low, high = (np.array([float(row.get(key) or 0) for row in rows]) for key in ("scale_low", "scale_high"))
    span = np.where(high > low, high - low, 1.0)

    def columns(kind: str) -> dict[str, np.ndarray]:
        values = {dim: np.array([float(row[f"{dim}_{kind}"] or "nan") for row in rows]) for dim in dims}
        return {DIMENSION_KEYS[dim]: (column - low) / span for dim, column in values.items()}

    speakers = tuple(row["speaker"] for row in rows) if rows and "speaker" in rows[0] else None
    return RunPredictions(job.folder, tuple(row["id"] for row in rows), speakers, columns("true"), columns("pred"))


@dataclass(frozen=True)
class RowResults:
    """A configuration's completed runs, by (fold, seed): test scores, validation score, predictions."""

    scores: dict[Run, dict[str, float | None]]
    validation: dict[Run, float]  # the selected validation score (report.select) of each run's best epoch
    predictions: dict[Run, RunPredictions]
    folds: list  # the folds the sweep expects of the row: pooled CCC is over seeds that have all of them

    @classmethod
    def of(cls, jobs: list[Job], select: str, folds: list) -> RowResults:
        """`select`: the key of the validation score in metrics.json's val_best (ccc_mean, ccc_v, …)."""
        validation = {
            job.run: value for job in jobs if (value := (job.metrics.get("val_best") or {}).get(select)) is not None
        }
        predictions = {job.run: run for job in jobs if (run := read_predictions(job)) is not None}
        return cls({job.run: job.metrics["test"] for job in jobs}, validation, predictions, folds)

    def values(self, key: str) -> dict[Run, float]:
        return {run: scores[key] for run, scores in self.scores.items() if scores.get(key) is not None}

    def fold_means(self, key: str) -> dict:
        """Test score `key` per fold, averaged over the fold's seeds: the unit that is independent."""
        return by_fold(self.values(key))


def by_fold(values: dict[Run, float]) -> dict:
    """Per fold, the mean over its runs (seeds) of `values`."""
    folds: dict = {}
    for (fold, _), value in values.items():
        folds.setdefault(fold, []).append(value)
    return {fold: statistics.fmean(runs) for fold, runs in folds.items()}


@dataclass(frozen=True)
class Pool:
    """One seed's test predictions on one dimension, over every fold of a row together."""

    ids: list[str]
    speakers: list[str]  # each utterance's own id where predictions.csv names no speaker
    true: np.ndarray
    pred: np.ndarray


def pools(predictions: dict[Run, RunPredictions], key: str, folds: list) -> dict:
    """Per seed whose runs cover all of `folds`: its predictions on `key` pooled over them. A seed missing a
    fold is left out: its pool would be another set of utterances, and an average over seeds would mix sets.
    An utterance predicted by two runs of one seed is an error: one of them would be silently dropped."""
    by_seed: dict = {}
    for (fold, seed), run in predictions.items():
        if key in run.pred:
            by_seed.setdefault(seed, {})[fold] = run
    result = {}
    for seed, runs in sorted(by_seed.items(), key=lambda item: str(item[0])):
        if not set(folds) <= set(runs):
            continue
        ids, speakers, true, pred, where = [], [], [], [], {}
        for fold in folds:
            run = runs[fold]
            for item in run.ids:
                if item in where:
                    raise ValueError(
                        f"utterance {item!r} is in the test predictions of both {where[item]} and {run.folder}: "
                        "a row's runs of one seed must test disjoint utterances; remove the duplicated job"
                    )
                where[item] = run.folder
            rated = np.isfinite(run.true[key])  # an utterance whose corpus does not rate `key` is not in its pool
            ids += [item for item, kept in zip(run.ids, rated, strict=True) if kept]
            speakers += [who for who, kept in zip(run.speakers or run.ids, rated, strict=True) if kept]
            true.append(run.true[key][rated])
            pred.append(run.pred[key][rated])
        result[seed] = Pool(ids, speakers, np.concatenate(true), np.concatenate(pred))
    return result


def pooled_ccc(predictions: dict[Run, RunPredictions], key: str, folds: list) -> float:
    """CCC over every test prediction of a seed's folds together, averaged over the seeds that have every
    fold: the number many IEMOCAP papers report, beside the mean over folds. NaN while no seed has them all."""
    per_seed = [ccc(pool.pred, pool.true) for pool in pools(predictions, key, folds).values()]
    return float(np.mean(per_seed)) if per_seed else math.nan


@dataclass(frozen=True)
class Difference:
    """A row's test CCC minus the reference's on one dimension."""

    folds: int  # folds both have
    mean: float  # of the per-fold differences (each fold's seeds averaged first)
    p_value: float  # paired t-test over those folds (NaN below two, or when every difference is the same)
    pooled: float  # pooled CCC difference over the utterances both predicted
    low: float  # its paired speaker-bootstrap 95% interval
    high: float


def compare(row: RowResults, reference: RowResults, key: str, resamples: int, seed: int) -> Difference:
    """`row` − `reference` on score `key` (ccc_v, …): over the folds both have, and over their utterances."""
    mine, theirs = row.fold_means(key), reference.fold_means(key)
    shared = sorted(set(mine) & set(theirs), key=str)
    deltas = [mine[fold] - theirs[fold] for fold in shared]
    p_value = math.nan
    if len(shared) >= 2 and np.ptp(deltas) > 0:
        p_value = float(stats.ttest_rel([mine[fold] for fold in shared], [theirs[fold] for fold in shared]).pvalue)
    pooled, low, high = paired_bootstrap(row, reference, key, resamples, seed)
    return Difference(len(shared), float(np.mean(deltas)) if deltas else math.nan, p_value, pooled, low, high)


def paired_bootstrap(
    row: RowResults, reference: RowResults, key: str, resamples: int, seed: int
) -> tuple[float, float, float]:
    """The pooled-CCC difference (row − reference) and its percentile 95% interval, resampling speakers with
    replacement, each with all their utterances: one resample serves both rows and every seed, so that only
    the models differ. Over the seeds both rows pool and the utterances both predicted."""
    mine, theirs = pools(row.predictions, key, row.folds), pools(reference.predictions, key, reference.folds)
    seeds = [seed_ for seed_ in mine if seed_ in theirs]
    if not seeds:
        return math.nan, math.nan, math.nan
    shared = set.intersection(*(set(mine[s].ids) & set(theirs[s].ids) for s in seeds))
    first = mine[seeds[0]]
    order = [i for i, item in enumerate(first.ids) if item in shared]
    ids = [first.ids[i] for i in order]
    a = np.stack([_in_order(mine[s], ids) for s in seeds])
    b = np.stack([_in_order(theirs[s], ids) for s in seeds])
    true = first.true[order]
    speakers, speaker_of = np.unique([first.speakers[i] for i in order], return_inverse=True)
    if len(speakers) < 2:
        return math.nan, math.nan, math.nan

    def difference(resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        """Mean over seeds of pooled CCC, row minus reference, for resamples of speaker indices (…, speakers).
        `axis`: scipy's vectorized statistic is given one; the resamples are always along the last."""
        weights = speaker_counts(resampled, len(speakers))[..., speaker_of][..., None, :]  # (…, 1, utterances)
        return (ccc(a, true, weights) - ccc(b, true, weights)).mean(axis=-1)

    everyone = np.arange(len(speakers))
    observed = float(difference(everyone))
    if resamples <= 0:
        return observed, math.nan, math.nan
    result = stats.bootstrap(
        (everyone,),
        difference,
        n_resamples=resamples,
        batch=100,
        vectorized=True,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )
    return observed, float(result.confidence_interval.low), float(result.confidence_interval.high)


def speaker_counts(resampled: np.ndarray, n_speakers: int) -> np.ndarray:
    """How often each speaker is drawn in each resample: (…, draws) indices → (…, n_speakers) counts."""
    resampled = np.asarray(resampled, dtype=int)
    flat = resampled.reshape(-1, resampled.shape[-1])
    counts = np.zeros((len(flat), n_speakers))
    np.add.at(counts, (np.arange(len(flat))[:, None], flat), 1)
    return counts.reshape(*resampled.shape[:-1], n_speakers)


def _in_order(pool: Pool, ids: list[str]) -> np.ndarray:
    position = {item: i for i, item in enumerate(pool.ids)}
    return pool.pred[[position[item] for item in ids]]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (statsmodels' multipletests) of one family of p-values, such as every row
    compared with one reference on one dimension; NaN stays NaN and out of the family."""
    from statsmodels.stats.multitest import multipletests

    tested = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    if tested:
        _, corrected, _, _ = multipletests([p_values[i] for i in tested], method="holm")
        for i, p in zip(tested, corrected, strict=True):
            adjusted[i] = float(p)
    return adjusted
