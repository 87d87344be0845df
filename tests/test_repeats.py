"""A real demo sweep over configurations, folds and seeds: what validation selects, pooled CCC, paired tests."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from emotion.scores import ccc
from tests.conftest import ROOT, SMALL_DEMO, read_csv, run_train

pytestmark = pytest.mark.slow  # every test here trains, sweeps or starts processes

# Two epochs at a high learning rate: enough for arousal predictions to vary on the small demo corpus.
SWEEP = [
    "-m",
    "experiment=demo",
    *SMALL_DEMO,
    "trainer.max_epochs=2",
    "data.num_workers=0",  # loader workers cost more than they save on 40 utterances
    "optim.lr=3e-3",
    "logger=none",
    "model.dropout=0.0,0.3",
    "data.fold=1,2",
    "trainer.seed=0,1",
    "report.bootstrap=200",
    "+hydra.callbacks.record._target_=tests.hydra_callbacks.RecordReturn",
]


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("repeats") / "sweep"
    run_train([*SWEEP, f"hydra.sweep.dir={folder}"], cache_dir)
    return folder


def runs_of(sweep, dropout: str) -> dict[tuple[int, int], dict]:
    runs = {}
    for metrics_file in sweep.glob(f"*model.dropout={dropout},*/metrics.json"):
        config = metrics_file.parent.name
        fold, seed = (int(config.split(f"{key}=")[1].split(",")[0]) for key in ("data.fold", "trainer.seed"))
        runs[fold, seed] = {"folder": metrics_file.parent, **json.loads(metrics_file.read_text())}
    return runs


def test_each_job_returns_its_validation_score_to_hydra(sweep):
    jobs = [path.parent for path in sweep.glob("*/metrics.json")]
    assert len(jobs) == 8
    returned = [json.loads((job / "returned.json").read_text()) for job in jobs]
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert returned == [m["val_best"]["ccc_mean"] for m in metrics]
    assert returned != [m["test"]["ccc_mean"] for m in metrics]


def test_the_table_aggregates_fold_and_seed_runs_and_selects_on_validation(sweep):
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 2
    assert all((row["runs_done"], row["runs_expected"], row["missing"]) == ("4", "4", "") for row in rows)
    validation = {
        dropout: np.mean([run["val_best"]["ccc_mean"] for run in runs_of(sweep, dropout).values()])
        for dropout in ("0.0", "0.3")
    }
    best = max(validation, key=validation.get)
    assert [row["model.dropout"] for row in rows][0] == best  # ranked by validation
    assert [row["selected"] for row in rows] == ["True", "False"]
    assert float(rows[0]["val_ccc_mean"]) == pytest.approx(validation[best])
    table = (sweep / "summary.md").read_text()
    assert "★" in table and "(seeds ± " in table and "| 4/4 |" in table


def test_pooled_ccc_is_every_test_prediction_of_a_seed_together(sweep):
    rows = {row["model.dropout"]: row for row in read_csv(sweep / "summary.csv")}
    for dropout, row in rows.items():
        runs = runs_of(sweep, dropout)
        per_seed = []
        for seed in (0, 1):
            predictions = [read_csv(runs[fold, seed]["folder"] / "predictions.csv") for fold in (1, 2)]
            pooled = [r for fold in predictions for r in fold]
            true, pred = (np.array([float(r[f"arousal_{kind}"]) for r in pooled]) for kind in ("true", "pred"))
            per_seed.append(ccc(pred, true))
        assert float(row["ccc_a_pooled"]) == pytest.approx(np.mean(per_seed), abs=1e-9)
        assert float(row["ccc_a_pooled"]) != pytest.approx(float(row["ccc_a_mean"]), abs=1e-6)


def test_the_paired_comparison_is_scipys_and_its_interval_reproducible(sweep):
    rows = read_csv(sweep / "summary.csv")
    reference, other = rows  # the validation-selected row is the default reference
    assert (reference["reference"], other["reference"]) == ("True", "False")
    mine, theirs = runs_of(sweep, other["model.dropout"]), runs_of(sweep, reference["model.dropout"])

    def fold_means(runs):  # seeds averaged within each fold: folds are the independent units
        return [np.mean([runs[fold, seed]["test"]["ccc_a"] for seed in (0, 1)]) for fold in (1, 2)]

    expected = stats.ttest_rel(fold_means(mine), fold_means(theirs))
    assert float(other["ccc_a_diff_p"]) == pytest.approx(expected.pvalue, rel=1e-6)
    assert other["ccc_a_diff_folds"] == "2"
    low, high = float(other["ccc_a_pooled_diff_low"]), float(other["ccc_a_pooled_diff_high"])
    assert low <= float(other["ccc_a_pooled_diff"]) <= high and low < high
    # The same seed again gives the same interval.
    report = [sys.executable, "-m", "emotion.report", str(sweep), "--bootstrap", "200"]
    subprocess.run(report, cwd=ROOT, check=True, capture_output=True)
    again = {row["model.dropout"]: row for row in read_csv(sweep / "summary.csv")}[other["model.dropout"]]
    assert (again["ccc_a_pooled_diff_low"], again["ccc_a_pooled_diff_high"]) == (
        other["ccc_a_pooled_diff_low"],
        other["ccc_a_pooled_diff_high"],
    )


def test_a_partial_sweep_says_what_is_missing(sweep, tmp_path):
    import shutil

    partial = shutil.copytree(sweep, tmp_path / "partial")
    (run,) = partial.glob("data.fold=2,*model.dropout=0.3,*trainer.seed=1*")
    (run / "metrics.json").write_text(json.dumps({"status": "failed", "profile": "standard", "error": "boom"}))
    shutil.rmtree(next(partial.glob("data.fold=1,*model.dropout=0.3,*trainer.seed=0*")))
    subprocess.run([sys.executable, "-m", "emotion.report", str(partial)], cwd=ROOT, check=True, capture_output=True)
    row = {row["model.dropout"]: row for row in read_csv(partial / "summary.csv")}["0.3"]
    assert (row["runs_done"], row["runs_failed"], row["runs_expected"]) == ("2", "1", "4")
    assert row["missing"] == "fold 1 seed 0 (not run); fold 2 seed 1 (failed)"
    assert "fold 1 seed 0 (not run); fold 2 seed 1 (failed)" in (partial / "summary.md").read_text()
