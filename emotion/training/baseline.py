"""The classic reference of every table: eGeMAPS functionals and a scikit-learn regressor per dimension.

Same corpus, folds, splits and label scale as the neural model, and the same output files. Each dimension
gets its own regressor; its hyper-parameter (SVR's C, ridge's alpha) is the candidate with the best CCC on
the validation split, and the test split is predicted once, by that one. The features are imputed (a
functional openSMILE could not compute) and standardised with the training split's statistics inside the
pipeline; the labels are standardised too, so that SVR's epsilon is in standard deviations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR, LinearSVR

from emotion.cpu import CpuBudget, job_budget
from emotion.data.corpora import Corpus, corpus_name, load_corpus, test_corpora
from emotion.data.scan import check_items, usable_corpus
from emotion.features.acoustic import FUNCTIONALS
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.normalisation import Moments, functionals_matrix, moments, own_statistics, resolved_normalisation
from emotion.logger import Run
from emotion.settings import BaselineSettings, DataSettings, JobSettings
from emotion.signals import GracefulStop
from emotion.training.devices import peak_memory, reset_peak_memory
from emotion.training.metrics import ccc_scores, format_scores, split_scores
from emotion.training.outputs import (
    CROSS_FOLDER,
    cross_record,
    metrics_record,
    write_history,
    write_json,
    write_predictions,
)

log = logging.getLogger(__name__)

HYPERPARAMETER = {"svr": "C", "ridge": "alpha"}  # what validation chooses, as scikit-learn names it
CPU = torch.device("cpu")  # where scikit-learn runs


def make_regressor(model: BaselineSettings, value: float) -> Pipeline:
    """The pipeline of one dimension for `model.regressor`, with its hyper-parameter at `value`."""
    if model.regressor == "ridge":
        regressor = Ridge(alpha=value)
    elif model.svr_kernel == "linear":  # liblinear: seconds where libsvm's linear kernel takes minutes on a corpus
        regressor = LinearSVR(C=value, epsilon=model.svr_epsilon, dual="auto", max_iter=100_000, random_state=0)
    else:
        regressor = SVR(kernel=model.svr_kernel, C=value, epsilon=model.svr_epsilon)
    standardised_target = TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())
    return make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), standardised_target)


def candidates(model: BaselineSettings) -> list[float]:
    return [float(value) for value in (model.svr_c if model.regressor == "svr" else model.ridge_alpha)]


def fit_baseline(
    settings: JobSettings, out_dir: Path, run: Run, stop: GracefulStop | None = None, budget: CpuBudget | None = None
) -> dict:
    """Fit, select on validation, test; returns the metrics.json record. predictions.csv holds the test
    split; history.csv one row per candidate with its validation CCC per dimension."""
    reset_peak_memory(CPU)
    corpus, _ = usable_corpus(load_corpus(settings.data), settings.data, out_dir)
    cache = AcousticCache(settings.cache_dir, settings.data.sample_rate, None, frame_sets=(), functionals=FUNCTIONALS)
    workers = (budget or job_budget(settings)).feature_workers
    acoustic = cache.ensure([item.audio for item in corpus.splits.all], workers, stop)
    own = own_statistics(settings.data.normalise, corpus.splits.all, acoustic, sample=corpus.splits.train)
    splits = {name: getattr(corpus.splits, name) for name in ("train", "val", "test")}
    features = {name: functionals_matrix(items, acoustic, own) for name, items in splits.items()}
    labels = {name: corpus.labels(items) for name, items in splits.items()}
    log.info(
        "%s fold %s: %d train, %d validation, %d test utterances; eGeMAPS functionals + %s, %s from %s",
        corpus.name,
        settings.data.fold,
        *(len(items) for items in splits.values()),
        settings.model.regressor,
        HYPERPARAMETER[settings.model.regressor],
        candidates(settings.model),
    )

    started = time.perf_counter()
    focus = settings.data.val_corpus

    def validation(pred: np.ndarray) -> dict:
        return split_scores(corpus, splits["val"], pred, labels["val"], focus)[0]

    chosen, search = choose_on_validation(settings.model, features, labels, corpus.dimensions, validation)
    seconds = time.perf_counter() - started
    val, val_by_corpus = split_scores(corpus, splits["val"], predict(chosen, features["val"]), labels["val"], focus)
    test_pred = predict(chosen, features["test"])
    test, test_by_corpus = split_scores(corpus, splits["test"], test_pred, labels["test"])
    log.info("validation: CCC %s; test: CCC %s", format_scores(val), format_scores(test))
    by_corpus = {}
    if test_by_corpus is not None:
        by_corpus["by_corpus"] = {
            name: {"test": scores, "val_best": val_by_corpus.get(name)} for name, scores in test_by_corpus.items()
        }
    trained_on = {part.name for part in corpus.parts} or {corpus.name}
    others = [data for data in test_corpora(settings.data) if corpus_name(data) not in trained_on]
    if others:
        reference = moments([features["train"]])  # what the pipelines' scalers learned the features to be
        tested = [cross_test(chosen, data, settings, cache, workers, reference, corpus, out_dir) for data in others]
        by_corpus["cross"] = dict(zip(map(corpus_name, others), tested, strict=True))

    for step, row in enumerate(search, start=1):
        run.log(row, step=step)
    write_history(out_dir / "history.csv", search)
    write_predictions(
        out_dir / "predictions.csv",
        splits["test"],
        corpus.on_own_scales(splits["test"], labels["test"]),
        corpus.on_own_scales(splits["test"], test_pred),
        corpus.dimensions,
        corpus,
    )
    n_values = sum(fitted_size(pipeline) for pipeline in chosen)
    return metrics_record(
        "completed",
        settings.data.fold,
        settings.model.profile,
        test=test,
        val_best=val,
        best_epoch=1,
        epochs=1,
        sec_per_epoch=seconds,
        **peak_memory(CPU),
        params={"total": n_values, "trainable": n_values},
        device="cpu",
        **by_corpus,
    )


def cross_test(
    chosen: list[Pipeline],
    data: DataSettings,
    settings: JobSettings,
    cache: AcousticCache,
    workers: int,
    reference: Moments,
    trained: Corpus,
    out_dir: Path,
) -> dict:
    """The fitted regressors scored on the test split of another corpus (`data`, one of data.test_corpora), as
    evaluate.py scores a neural model there: its features standardised as data.test_normalise says (auto: by
    that corpus's own statistics when the baseline learned with the training split's), its files in
    cross/<corpus>/. Returns metrics.json's `cross` entry."""
    other = load_corpus(data)
    folder = out_dir / CROSS_FOLDER / other.name
    folder.mkdir(parents=True, exist_ok=True)
    durations, _ = check_items(other.splits.test, other, data.min_seconds, data.on_bad_audio, folder)
    items = [item for item in other.splits.test if item.id in durations]
    acoustic = cache.ensure([item.audio for item in items], workers)
    trained_with = settings.data.normalise
    normalise = resolved_normalisation(settings.data.test_normalise, trained_with, trained_on_it=False)
    if normalise == "training" and trained_with != "training":
        raise ValueError(
            f"data.test_normalise=training: the baseline learned with data.normalise={trained_with}, on standardised "
            "features; use corpus, speaker or auto"
        )
    features = functionals_matrix(items, acoustic, own_statistics(normalise, items, acoustic))
    if trained_with == "training" and normalise != "training":
        features = features * reference.std + reference.mean  # standardised by their own, put where the scalers look
    shared = tuple(dim for dim in trained.dimensions if dim in other.dimensions)
    pred = predict(chosen, features)[:, [trained.dimensions.index(dim) for dim in shared]]
    true = other.labels(items)[:, [other.dimensions.index(dim) for dim in shared]]
    scores = ccc_scores(pred, true, shared)
    log.info("%s, test split (%d items): CCC %s", other.name, len(items), format_scores(scores))
    write_predictions(
        folder / "predictions.csv", items, other.on_own_scales(items, true), other.on_own_scales(items, pred), shared
    )
    described = {"name": other.name, "fold": data.fold, "split": "test", "items": len(items)}
    described |= {"normalise": normalise, "normalise_asked": settings.data.test_normalise}
    record = metrics_record("evaluated", data.fold, settings.model.profile, test=scores, data=described)
    write_json(folder / "metrics.json", record)
    return cross_record(record)


def choose_on_validation(
    model: BaselineSettings,
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    dimensions: tuple[str, ...],
    validation: Callable[[np.ndarray], dict],
) -> tuple[list[Pipeline], list[dict]]:
    """Per dimension, the pipeline fitted on the training split (its items that rate the dimension) whose
    candidate scores the best validation CCC; and a row per candidate with its validation CCC per dimension.
    `validation` scores (validation items, dimensions) predictions as the job's selection does."""
    hyperparameter, values = HYPERPARAMETER[model.regressor], candidates(model)
    search = [{hyperparameter: value} for value in values]
    chosen = []
    for d, dimension in enumerate(dimensions):
        column = f"val_ccc_{dimension[0]}"
        rated = np.isfinite(labels["train"][:, d])
        x, y = features["train"][rated], labels["train"][rated, d]
        fitted = [make_regressor(model, value).fit(x, y) for value in values]
        for row, pipeline in zip(search, fitted, strict=True):
            pred = np.full((len(features["val"]), len(dimensions)), np.nan)
            pred[:, d] = predict([pipeline], features["val"])[:, 0]  # scored as reported: within the label scale
            row[column] = validation(pred)[f"ccc_{dimension[0]}"]
        # None: the validation corpus (data.val_corpus) does not rate this dimension; then the first candidate.
        best = int(np.argmax([-np.inf if row[column] is None else row[column] for row in search]))
        log.info(
            "%s: %s=%g chosen (validation CCC %.3f)", dimension, hyperparameter, values[best], search[best][column]
        )
        chosen.append(fitted[best])
    return chosen, search


def predict(pipelines: list[Pipeline], features: np.ndarray) -> np.ndarray:
    """(items, dimensions): one pipeline per dimension, within the label scale ([0, 1] here) as the neural
    model's predictions are in evaluation."""
    return np.clip(np.stack([pipeline.predict(features) for pipeline in pipelines], axis=1), 0.0, 1.0)


def fitted_size(pipeline: Pipeline) -> int:
    """The numbers a fitted regressor keeps: support vectors and their weights, or coefficients."""
    regressor = pipeline[-1].regressor_
    if isinstance(regressor, SVR):
        return regressor.support_vectors_.size + regressor.dual_coef_.size + regressor.intercept_.size
    return regressor.coef_.size + np.size(regressor.intercept_)
