"""The eGeMAPS baseline: the same files as a neural job, a row of the table, scikit-learn's scores."""

from __future__ import annotations

import json

import numpy as np
import opensmile
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVR

from emotion.data.audio import load_audio
from emotion.data.corpora import load_corpus
from emotion.data.corpus import DIMENSIONS
from emotion.settings import DataSettings
from emotion.training.outputs import METRICS_KEYS
from tests.conftest import SMALL_DEMO, compose_config, read_csv, run_train

pytestmark = pytest.mark.slow  # every test here trains, sweeps or starts processes

JOB = ["experiment=demo", "data.fold=1", "trainer.max_epochs=1", "logger=none", *SMALL_DEMO]


def hand_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """2 cov / (var x + var y + (mean x - mean y)²), population moments."""
    covariance = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * covariance / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    """The neural model and the baseline on fold 1, as one sweep."""
    cwd = tmp_path_factory.mktemp("baseline")
    run_train(["-m", *JOB, "model=standard,baseline", "name=reference"], cache_dir, cwd=cwd)
    return cwd / "multirun" / "reference"


def job_folder(sweep, model):
    (folder,) = [metrics.parent for metrics in sweep.glob(f"*model={model}*/metrics.json")]
    return folder


def test_the_baseline_writes_the_files_of_a_neural_job_and_is_a_row_of_the_table(sweep):
    baseline, neural = job_folder(sweep, "baseline"), job_folder(sweep, "standard")
    for name in ("metrics.json", "predictions.csv", "history.csv", ".hydra/overrides.yaml", "job.json"):
        assert (baseline / name).is_file() and (neural / name).is_file(), name
    metrics = json.loads((baseline / "metrics.json").read_text())
    assert tuple(metrics) == METRICS_KEYS
    assert (metrics["status"], metrics["fold"], metrics["profile"], metrics["device"]) == (
        "completed",
        1,
        "baseline",
        "cpu",
    )
    assert metrics["params"]["total"] > 0 and metrics["sec_per_epoch"] > 0
    predictions, neural_predictions = read_csv(baseline / "predictions.csv"), read_csv(neural / "predictions.csv")
    assert list(predictions[0]) == list(neural_predictions[0])  # same columns
    assert sorted(row["id"] for row in predictions) == sorted(row["id"] for row in neural_predictions)
    assert all(1.0 <= float(row[f"{dim}_pred"]) <= 5.0 for row in predictions for dim in DIMENSIONS)

    rows = {row["model"]: row for row in read_csv(sweep / "summary.csv")}
    assert set(rows) == {"standard", "baseline"}
    assert (rows["baseline"]["profile"], rows["baseline"]["runs_done"]) == ("baseline", "1")
    assert float(rows["baseline"]["ccc_v_mean"]) == pytest.approx(metrics["test"]["ccc_v"], abs=1e-9)
    assert "| baseline |" in (sweep / "summary.md").read_text()


def test_the_baselines_scores_are_scikit_learns_on_opensmiles_functionals(sweep):
    """By hand: openSMILE's functionals of every item, a linear SVR per dimension, C chosen by validation CCC."""
    baseline = job_folder(sweep, "baseline")
    cfg = compose_config([*JOB, "model=baseline"])
    corpus = load_corpus(DataSettings.of(cfg.data))
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )

    def split(items):
        features = np.stack([smile.process_signal(load_audio(item.path, 16000), 16000).to_numpy()[0] for item in items])
        return features, corpus.scale.normalise([item.labels for item in items])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(
        split, (corpus.splits.train, corpus.splits.val, corpus.splits.test)
    )
    metrics = json.loads((baseline / "metrics.json").read_text())
    history = read_csv(baseline / "history.csv")
    assert [float(row["C"]) for row in history] == list(cfg.model.svr_c)
    for d, dim in enumerate(DIMENSIONS):
        fitted, val_ccc = [], []
        for c in cfg.model.svr_c:
            linear = LinearSVR(C=c, epsilon=cfg.model.svr_epsilon, max_iter=100_000, random_state=0)
            svr = TransformedTargetRegressor(linear, transformer=StandardScaler())
            fitted.append(make_pipeline(SimpleImputer(), StandardScaler(), svr).fit(x_train, y_train[:, d]))
            val_ccc.append(hand_ccc(np.clip(fitted[-1].predict(x_val), 0, 1), y_val[:, d]))
        np.testing.assert_allclose([float(row[f"val_ccc_{dim[0]}"]) for row in history], val_ccc, atol=1e-6)
        best = fitted[int(np.argmax(val_ccc))]
        test_pred = np.clip(best.predict(x_test), 0.0, 1.0)
        assert metrics["test"][f"ccc_{dim[0]}"] == pytest.approx(hand_ccc(test_pred, y_test[:, d]), abs=1e-6)
        assert metrics["val_best"][f"ccc_{dim[0]}"] == pytest.approx(
            hand_ccc(np.clip(best.predict(x_val), 0, 1), y_val[:, d]), abs=1e-6
        )
