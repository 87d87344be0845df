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
from emotion.data.corpora import load_corpus
from emotion.data.scan import usable_corpus
from emotion.features.acoustic import FUNCTIONALS
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.normalisation import functionals_matrix, per_speaker_statistics
from emotion.logger import Run
from emotion.settings import BaselineSettings, JobSettings
from emotion.signals import GracefulStop
from emotion.training.devices import peak_memory, reset_peak_memory
from emotion.training.metrics import ccc_scores, format_scores
from emotion.training.outputs import metrics_record, write_history, write_predictions

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
    acoustic = cache.ensure([item.path for item in corpus.splits.all], workers, stop)
    speakers = per_speaker_statistics(corpus.splits.all, acoustic) if settings.data.speaker_norm else None
    splits = {name: getattr(corpus.splits, name) for name in ("train", "val", "test")}
    features = {name: functionals_matrix(items, acoustic, speakers) for name, items in splits.items()}
    labels = {name: corpus.scale.normalise([item.labels for item in items]) for name, items in splits.items()}
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
    chosen, search = choose_on_validation(settings.model, features, labels, corpus.dimensions)
    seconds = time.perf_counter() - started
    val = ccc_scores(predict(chosen, features["val"]), labels["val"], corpus.dimensions)
    test_pred = predict(chosen, features["test"])
    test = ccc_scores(test_pred, labels["test"], corpus.dimensions)
    log.info("validation: CCC %s; test: CCC %s", format_scores(val), format_scores(test))

    for step, row in enumerate(search, start=1):
        run.log(row, step=step)
    write_history(out_dir / "history.csv", search)
    write_predictions(
        out_dir / "predictions.csv",
        splits["test"],
        corpus.scale.denormalise(labels["test"]),
        corpus.scale.denormalise(test_pred),
        corpus.dimensions,
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
    )


def choose_on_validation(
    model: BaselineSettings, features: dict[str, np.ndarray], labels: dict[str, np.ndarray], dimensions: tuple[str, ...]
) -> tuple[list[Pipeline], list[dict]]:
    """Per dimension, the pipeline fitted on the training split whose candidate scores the best validation
    CCC; and a row per candidate with its validation CCC per dimension."""
    hyperparameter, values = HYPERPARAMETER[model.regressor], candidates(model)
    search = [{hyperparameter: value} for value in values]
    chosen = []
    for d, dimension in enumerate(dimensions):
        column = f"val_ccc_{dimension[0]}"
        fitted = [make_regressor(model, value).fit(features["train"], labels["train"][:, d]) for value in values]
        for row, pipeline in zip(search, fitted, strict=True):
            pred = predict([pipeline], features["val"])  # scored as reported: within the label scale
            row[column] = ccc_scores(pred, labels["val"][:, [d]], (dimension,))["ccc_mean"]
        best = int(np.nanargmax([row[column] for row in search]))
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
