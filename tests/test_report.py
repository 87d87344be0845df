"""The comparison table, from job folders written by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from emotion.report import _label, summarise, write_summary
from tests.conftest import ROOT


def write_job(sweep, overrides, status=None, ccc_v=None, peak=1.0, seconds=60.0):
    folder = sweep / ",".join(overrides)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["logger", "name"]}}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if status == "completed":
        scores = {"ccc_a": 0.8, "ccc_v": ccc_v, "ccc_d": None, "ccc_mean": 0.5}
        metrics = {
            "status": status,
            "profile": "max",
            "test": scores,
            "peak_mem_gb": peak,
            "sec_per_epoch": seconds,
            "params": {"total": 3_000_000, "trainable": 2_000_000},
        }
    elif status == "failed":
        metrics = {"status": status, "profile": "max", "error": "ValueError: boom"}
    else:
        return  # still running: no metrics.json yet
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "multirun" / "capacity"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "overrides": {"task": ["model.d_hidden=256,384", "data.fold=1,2,3"]},
                    "sweeper": {"params": None},
                }
            }
        )
    )
    for fold, ccc_v, peak, logger in ((1, 0.5, 10.0, "none"), (2, 0.6, 12.0, "wandb"), (3, 0.7, 11.0, "none")):
        write_job(
            sweep,
            [f"data.fold={fold}", "model.d_hidden=256", f"logger={logger}"],
            "completed",
            ccc_v,
            peak,
            seconds=60.0 * fold,
        )
    write_job(sweep, ["data.fold=1", "model.d_hidden=384"], "completed", 0.4)
    write_job(sweep, ["data.fold=2", "model.d_hidden=384"], "failed")
    write_job(sweep, ["data.fold=3", "model.d_hidden=384"])  # running
    return sweep


def test_rows_are_configurations_with_mean_and_sample_std_over_their_folds(sweep):
    columns, records = summarise(sweep)
    assert columns[:2] == ["profile", "model.d_hidden"]
    small, large = records
    assert (small["model.d_hidden"], large["model.d_hidden"]) == ("256", "384")
    assert small["ccc_v_mean"] == pytest.approx(0.6) and small["ccc_v_std"] == pytest.approx(0.1)
    assert (small["folds_done"], small["folds_failed"], small["folds_expected"]) == (3, 0, 3)
    assert small["peak_mem_gb"] == 12.0 and small["min_per_epoch"] == pytest.approx(2.0)
    assert small["params_m"] == 3.0
    assert (large["folds_done"], large["folds_failed"], large["folds_expected"]) == (1, 1, 3)
    assert large["ccc_v_mean"] == pytest.approx(0.4)


def test_the_markdown_table_shows_mean_std_and_failures(sweep):
    table = write_summary(sweep).read_text().splitlines()
    assert table[0].startswith("| profile | model.d_hidden | params (M) | peak mem (GB) | min/epoch | CCC-V |")
    assert "| max | 256 | 3.00 | 12.0 | 2.00 | 0.600 ± 0.100 | 0.800 ± 0.000 | – | 3/3 |" in table
    assert "| max | 384 | 3.00 | 1.0 | 1.00 | 0.400 | 0.800 | – | 1/3 (1 failed) |" in table
    with open(sweep / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (sweep / "summary.png").stat().st_size > 1000


def test_the_report_command_prints_the_table(sweep):
    result = subprocess.run(
        [sys.executable, "-m", "emotion.report", str(sweep)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "0.600 ± 0.100" in result.stdout and "summary.md" in result.stdout


def test_jobs_nested_by_a_slash_in_a_value_are_found(sweep):
    write_job(sweep, ["data.fold=1", "model.d_hidden=512", "data.root=/corpora/x"], "completed", 0.3)
    _, records = summarise(sweep)
    assert [(r["model.d_hidden"], r["data.root"], r["folds_done"]) for r in records][-1] == ("512", "/corpora/x", 1)


def test_plot_labels_name_each_value_by_its_key():
    record = {"profile": "standard", "model.mamba_n_layers": "2", "data.batch_size": "", "ccc_v_mean": 0.5}
    assert _label(record) == "standard mamba_n_layers=2"
