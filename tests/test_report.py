"""The comparison table, from job folders written by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from emotion.report import ReportSettings, _label, summarise, write_summary
from emotion.sweeps.comparison import concordance
from tests.conftest import ROOT


def write_job(sweep, overrides, status=None, ccc_v=None, peak=1.0, seconds=60.0, val_v=0.5, predictions=None, seed=42):
    """A job folder as train.py leaves it; `predictions`: (ids, true, pred) of valence, for predictions.csv."""
    folder = sweep / ",".join(overrides)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["logger", "name"]}}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"seed": seed}}))
    if status == "completed":
        metrics = {
            "status": status,
            "profile": "max",
            "test": {"ccc_a": 0.8, "ccc_v": ccc_v, "ccc_d": None, "ccc_mean": 0.5},
            "val_best": {"ccc_a": 0.7, "ccc_v": val_v, "ccc_d": None, "ccc_mean": (0.7 + val_v) / 2},
            "peak_mem_gb": peak,
            "sec_per_epoch": seconds,
            "params": {"total": 3_000_000, "trainable": 2_000_000},
        }
    elif status == "failed":
        metrics = {"status": status, "profile": "max", "error": "ValueError: boom"}
    else:
        return folder  # still running: no metrics.json yet
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        ids, true, pred = predictions
        with open(folder / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "valence_true", "valence_pred"])
            writer.writerows(zip(ids, (f"{v:.4f}" for v in true), (f"{v:.4f}" for v in pred), strict=True))
    return folder


def multirun(sweep, task: list[str]) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    hydra = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": None}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(hydra))


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "multirun" / "capacity"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2,3"])
    for fold, ccc_v, peak, logger in ((1, 0.5, 10.0, "none"), (2, 0.6, 12.0, "wandb"), (3, 0.7, 11.0, "none")):
        write_job(
            sweep,
            [f"data.fold={fold}", "model.d_hidden=256", f"logger={logger}"],
            "completed",
            ccc_v,
            peak,
            seconds=60.0 * fold,
        )
    write_job(sweep, ["data.fold=1", "model.d_hidden=384"], "completed", 0.4, val_v=0.3)
    write_job(sweep, ["data.fold=2", "model.d_hidden=384"], "failed")
    write_job(sweep, ["data.fold=3", "model.d_hidden=384"])  # running
    return sweep


def test_rows_are_configurations_with_mean_and_sample_std_over_their_runs(sweep):
    columns, records = summarise(sweep)
    assert columns[:2] == ["profile", "model.d_hidden"]
    small, large = records
    assert (small["model.d_hidden"], large["model.d_hidden"]) == ("256", "384")
    assert small["ccc_v_mean"] == pytest.approx(0.6) and small["ccc_v_std"] == pytest.approx(0.1)
    assert (small["runs_done"], small["runs_failed"], small["runs_expected"]) == (3, 0, 3)
    assert small["peak_mem_gb"] == 12.0 and small["min_per_epoch"] == pytest.approx(2.0)
    assert small["params_m"] == 3.0
    assert (large["runs_done"], large["runs_failed"], large["runs_expected"]) == (1, 1, 3)
    assert large["ccc_v_mean"] == pytest.approx(0.4)
    assert large["missing"] == "fold 2 seed 42 (failed); fold 3 seed 42 (running or killed)"


def test_the_markdown_table_shows_mean_std_failures_and_what_is_missing(sweep):
    table = write_summary(sweep).read_text().splitlines()
    assert table[0].startswith(
        "|  | profile | model.d_hidden | params (M) | peak mem (GB) | min/epoch | val CCC mean |"
    )
    assert "| ★ | max | 256 | 3.00 | 12.0 | 2.00 | 0.600 | 0.600 ± 0.100 | 0.800 ± 0.000 | – |" in table[2]
    assert table[3].startswith("|  | max | 384 | 3.00 | 1.0 | 1.00 | 0.500 | 0.400 | 0.800 | – |")
    assert table[3].endswith("| 1/3 (1 failed) |")
    assert "- max d_hidden=384: fold 2 seed 42 (failed); fold 3 seed 42 (running or killed)" in table
    with open(sweep / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (sweep / "summary.png").stat().st_size > 1000


def test_validation_selects_and_ranks_even_against_a_better_test_score(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"])
    for fold in (1, 2):  # 384 is better on test, 256 on validation
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=384"], "completed", ccc_v=0.7, val_v=0.4)
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", ccc_v=0.5, val_v=0.6)
    _, records = summarise(sweep)
    assert [(r["model.d_hidden"], r["selected"], r["reference"]) for r in records] == [
        ("256", True, True),
        ("384", False, False),
    ]
    assert records[0]["val_ccc_mean"] == pytest.approx(0.65)
    # Ranked by another validation score, the selection follows it, never the test.
    _, by_arousal = summarise(sweep, ReportSettings(select="val_ccc_a"))
    assert [r["val_ccc_a"] for r in by_arousal] == [pytest.approx(0.7)] * 2
    with pytest.raises(ValueError, match="report.select='test_ccc_v'"):
        ReportSettings(select="test_ccc_v")


def test_a_row_with_runs_missing_cannot_beat_complete_rows(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"])
    for fold in (1, 2):
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", ccc_v=0.5, val_v=0.5)
    write_job(sweep, ["data.fold=1", "model.d_hidden=384"], "completed", ccc_v=0.6, val_v=0.9)  # one lucky run
    _, records = summarise(sweep)
    assert [(r["model.d_hidden"], r["selected"]) for r in records] == [("256", True), ("384", False)]
    with pytest.raises(ValueError, match="give key=value overrides"):
        summarise(sweep, ReportSettings(reference="model.d_hidden"))


def rng_predictions(rng, ids, true, noise):
    return ids, true, np.clip(true + rng.normal(0, noise, len(true)), 1, 5)


@pytest.fixture
def seeded_sweep(tmp_path):
    """Two configurations × 2 folds × 2 seeds, with test predictions; the wide one's seed 1, fold 2 failed."""
    sweep = tmp_path / "seeds"
    multirun(sweep, ["model.d_hidden=64,128", "data.fold=1,2", "trainer.seed=0,1"])
    rng = np.random.default_rng(0)
    truth = {fold: rng.uniform(1, 5, 40) for fold in (1, 2)}
    ids = {fold: [f"f{fold}_{i:02d}" for i in range(40)] for fold in (1, 2)}
    for width, noise in (("64", 0.6), ("128", 0.9)):
        for fold in (1, 2):
            for seed in (0, 1):
                overrides = [f"data.fold={fold}", f"model.d_hidden={width}", f"trainer.seed={seed}"]
                if (width, fold, seed) == ("128", 2, 1):
                    write_job(sweep, overrides, "failed", seed=seed)
                    continue
                predictions = rng_predictions(rng, ids[fold], truth[fold], noise)
                ccc_v = float(concordance(np.round(predictions[2], 4), np.round(predictions[1], 4)))
                val = 0.6 if width == "64" else 0.5
                write_job(
                    sweep, overrides, "completed", ccc_v, val_v=val + 0.01 * seed, predictions=predictions, seed=seed
                )
    return sweep


def read_predictions_csv(folder):
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [row["id"] for row in rows], np.array([[float(r["valence_true"]), float(r["valence_pred"])] for r in rows])


def test_repeats_pool_their_predictions_and_say_how_far_seeds_move_the_headline(seeded_sweep):
    _, records = summarise(seeded_sweep, ReportSettings(bootstrap=200))
    narrow, wide = records  # ranked by validation: 64 first
    assert (narrow["model.d_hidden"], narrow["runs_done"], narrow["runs_expected"]) == ("64", 4, 4)
    assert (wide["runs_done"], wide["runs_failed"], wide["missing"]) == (3, 1, "fold 2 seed 1 (failed)")
    # Pooled by hand: per seed, both folds' predictions together, then the mean over seeds.
    per_seed, fold_means = [], []
    for seed in (0, 1):
        folders = [seeded_sweep / f"data.fold={fold},model.d_hidden=64,trainer.seed={seed}" for fold in (1, 2)]
        values = np.concatenate([read_predictions_csv(folder)[1] for folder in folders])
        per_seed.append(concordance(values[:, 1], values[:, 0]))
        fold_means.append(np.mean([json.loads((f / "metrics.json").read_text())["test"]["ccc_v"] for f in folders]))
    assert narrow["ccc_v_pooled"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert narrow["ccc_v_seed_std"] == pytest.approx(np.std(fold_means, ddof=1), abs=1e-12)
    assert np.isnan(narrow["ccc_a_pooled"])  # no arousal predictions written


def test_rows_are_compared_with_the_reference_by_scipys_paired_test_and_a_reproducible_bootstrap(seeded_sweep):
    settings = ReportSettings(reference="model.d_hidden=128", bootstrap=300, seed=7)
    _, records = summarise(seeded_sweep, settings)
    narrow = next(r for r in records if r["model.d_hidden"] == "64")
    assert next(r for r in records if r["model.d_hidden"] == "128")["reference"]

    def test_scores(width):
        scores = {}
        for fold in (1, 2):
            for seed in (0, 1):
                metrics = seeded_sweep / f"data.fold={fold},model.d_hidden={width},trainer.seed={seed}" / "metrics.json"
                if json.loads(metrics.read_text())["status"] == "completed":
                    scores[fold, seed] = json.loads(metrics.read_text())["test"]["ccc_v"]
        return scores

    mine, theirs = test_scores("64"), test_scores("128")
    shared = sorted(set(mine) & set(theirs))
    assert narrow["ccc_v_diff_runs"] == len(shared) == 3  # the failed run pairs with nothing
    expected = stats.ttest_rel([mine[run] for run in shared], [theirs[run] for run in shared])
    assert narrow["ccc_v_diff_p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert narrow["ccc_v_diff"] == pytest.approx(np.mean([mine[run] - theirs[run] for run in shared]))
    low, high, observed = narrow["ccc_v_pooled_diff_low"], narrow["ccc_v_pooled_diff_high"], narrow["ccc_v_pooled_diff"]
    assert low < observed < high
    _, again = summarise(seeded_sweep, settings)
    assert next(r for r in again if r["model.d_hidden"] == "64")["ccc_v_pooled_diff_low"] == low
    _, reseeded = summarise(seeded_sweep, ReportSettings(reference="model.d_hidden=128", bootstrap=300, seed=8))
    assert next(r for r in reseeded if r["model.d_hidden"] == "64")["ccc_v_pooled_diff_low"] != low
    table = write_summary(seeded_sweep, settings).read_text()
    assert "Compared with max d_hidden=128 (the reference)" in table
    assert f"[{low:+.3f}, {high:+.3f}]" in table
    with pytest.raises(ValueError, match="names 0 rows"):
        summarise(seeded_sweep, ReportSettings(reference="model.d_hidden=512"))


def test_the_report_command_prints_the_table(sweep):
    result = subprocess.run(
        [sys.executable, "-m", "emotion.report", str(sweep)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "0.600 ± 0.100" in result.stdout and "summary.md" in result.stdout


def test_the_report_command_logs_the_table_to_a_wandb_summary_run_offline(seeded_sweep):
    # A process of its own, as a user runs it (wandb.init would also leave its service in this one's environment).
    report = [sys.executable, "-m", "emotion.report", str(seeded_sweep), "--bootstrap", "50", "--wandb"]
    subprocess.run(report, cwd=ROOT, check=True, capture_output=True)
    (table_file,) = seeded_sweep.glob("wandb/offline-run-*/files/media/table/summary_table_*.table.json")
    table = json.loads(table_file.read_text())
    with open(seeded_sweep / "summary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert table["columns"] == rows[0] and table["data"] == rows[1:]
    assert list(seeded_sweep.glob("wandb/offline-run-*/files/media/images/summary_plot_*.png"))
    from tests.wandb_records import run_summary

    (run_file,) = seeded_sweep.glob("wandb/offline-run-*/run-*.wandb")
    run = run_summary(run_file)
    assert (run["job_type"], run["group"]) == ("summary", "seeds")


def test_jobs_nested_by_a_slash_in_a_value_are_found(sweep):
    write_job(sweep, ["data.fold=1", "model.d_hidden=512", "data.root=/corpora/x"], "completed", 0.3)
    _, records = summarise(sweep)
    assert ("512", "/corpora/x", 1) in [(r["model.d_hidden"], r["data.root"], r["runs_done"]) for r in records]


def test_plot_labels_name_each_value_by_its_key():
    record = {"profile": "standard", "model.mamba_n_layers": "2", "data.batch_size": "", "ccc_v_mean": 0.5}
    assert _label(record, ["model.mamba_n_layers", "data.batch_size"]) == "standard mamba_n_layers=2"
