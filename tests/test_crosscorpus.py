"""sweep=crosscorpus: each corpus trained on, every model tested on every corpus, the matrix beside the baseline's,
and a rerun that trains nothing twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from emotion.composition import training_sets
from tests.conftest import ROOT, read_csv, run_train

pytestmark = pytest.mark.slow

CORPORA = "crosscorpus.corpora=[{config:demo,utterances_per_voice:4},{config:demo_b,utterances_per_voice:4}]"


def run_sweep(sweep_dir, cache_dir, corpora=CORPORA, check=True):
    args = ["-m", "experiment=demo", "sweep=crosscorpus", corpora, "trainer.max_epochs=2", "logger=none"]
    return run_train([*args, f"hydra.sweep.dir={sweep_dir}"], cache_dir, check=check)


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("crosscorpus") / "sweep"
    run_sweep(sweep_dir, cache_dir)
    return sweep_dir


def jobs_by(sweep_dir) -> dict[tuple[str, str], dict]:
    """(trained on, model profile) → the job's folder and metrics."""
    found = {}
    for folder in sweep_dir.glob("*/"):
        if (folder / "metrics.json").is_file():
            metrics = json.loads((folder / "metrics.json").read_text())
            found[next(iter(metrics["by_corpus"])), metrics["profile"]] = {"folder": folder, "metrics": metrics}
    return found


def test_each_corpus_is_a_row_and_each_training_set_is_a_sweep_value():
    assert training_sets(["demo", "demo_b"], False) == "[demo],[demo_b]"
    three = training_sets(["iemocap", "msp_podcast", "/data/x y/manifest.csv"], True)
    assert three.split(",[") == [
        "[iemocap]",
        "msp_podcast]",
        "'/data/x y/manifest.csv']",
        "msp_podcast,'/data/x y/manifest.csv']",
        "iemocap,'/data/x y/manifest.csv']",
        "iemocap,msp_podcast]",
    ]
    assert training_sets([{"config": "demo", "fold": 2}], False) == "[{config:demo,fold:2}]"


def test_every_model_is_tested_on_every_corpus_and_the_matrix_holds_their_scores(sweep):
    jobs = jobs_by(sweep)
    assert set(jobs) == {(corpus, model) for corpus in ("demo", "demo-b") for model in ("standard", "baseline")}
    for (trained, _), job in jobs.items():
        other = "demo-b" if trained == "demo" else "demo"
        assert job["metrics"]["status"] == "completed" and set(job["metrics"]["cross"]) == {other}
        assert (job["folder"] / "cross" / other / "predictions.csv").is_file()
        assert job["metrics"]["cross"][other]["normalise"] == "corpus"  # auto: another corpus, its own statistics
    rows = read_csv(sweep / "crosscorpus.csv")
    cells = {(row["model"], row["trained_on"], row["tested_on"], row["score"]): row for row in rows}
    for (trained, model), job in jobs.items():
        label = f"model={model}"
        in_corpus = job["metrics"]["by_corpus"][trained]["test"]
        other = "demo-b" if trained == "demo" else "demo"
        for key in ("ccc_a", "ccc_v"):
            diagonal, off = cells[label, trained, trained, key], cells[label, trained, other, key]
            assert diagonal["in_corpus"] == "True" and off["in_corpus"] == "False"
            assert float(diagonal["mean"]) == pytest.approx(in_corpus[key])
            assert float(off["mean"]) == pytest.approx(job["metrics"]["cross"][other]["test"][key])
            assert float(off["low"]) <= float(off["pooled"]) <= float(off["high"])
    assert (label, "demo-b", "demo-b", "ccc_d") not in cells  # demo_b rates no dominance
    matrix = (sweep / "crosscorpus.md").read_text()
    assert "## model=baseline" in matrix and "## model=standard" in matrix and "(in-corpus)" in matrix
    assert (sweep / "crosscorpus.png").stat().st_size > 0
    # The W&B summary run carries the matrix as a table and the heatmap (offline, as a user runs the report).
    report = [sys.executable, "-m", "emotion.report", str(sweep), "--bootstrap", "50", "--wandb"]
    subprocess.run(report, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "WANDB_SILENT": "true"})
    (table_file,) = sweep.glob("wandb/offline-run-*/files/media/table/crosscorpus_table_*.table.json")
    assert json.loads(table_file.read_text())["data"] == [
        list(row.values()) for row in read_csv(sweep / "crosscorpus.csv")
    ]
    assert list(sweep.glob("wandb/offline-run-*/files/media/images/crosscorpus_plot_*.png"))


def test_a_rerun_after_an_interruption_trains_nothing_again_and_tests_what_is_missing(sweep, cache_dir):
    jobs = jobs_by(sweep)
    stopped = jobs["demo", "standard"]["folder"]
    # As if stopped during its cross-corpus test: training done, the test on demo-b not.
    metrics = json.loads((stopped / "metrics.json").read_text())
    (stopped / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted", "cross": None}))
    for path in (stopped / "cross" / "demo-b").iterdir():
        path.unlink()
    untouched = {
        path: path.stat().st_mtime_ns
        for job in jobs.values()
        for path in (job["folder"] / "history.csv", job["folder"] / "checkpoints" / "best.pt")
        if path.is_file()
    }
    done = jobs["demo-b", "standard"]["folder"] / "metrics.json"
    done_before = done.stat().st_mtime_ns
    run_sweep(sweep, cache_dir)
    assert {path: path.stat().st_mtime_ns for path in untouched} == untouched  # nothing trained twice
    assert done.stat().st_mtime_ns == done_before  # a completed job is skipped whole
    again = json.loads((stopped / "metrics.json").read_text())
    assert again["status"] == "completed" and again["cross"]["demo-b"] == metrics["cross"]["demo-b"]

    # A corpus added that cannot be read: the new row and the new tests fail, the finished jobs stay as they were.
    broken = CORPORA.replace("]", ",{config:csv,manifest:/nowhere/x.csv}]")
    assert run_sweep(sweep, cache_dir, broken, check=False).returncode != 0
    assert all(
        json.loads((job["folder"] / "metrics.json").read_text())["status"] == "completed" for job in jobs.values()
    )
