"""Sweeps as users run them: deterministic job folders, a comparison table, reruns that skip finished jobs."""

from __future__ import annotations

import json
import os
import time

import pytest

from emotion.cpu import available_cores
from tests.conftest import SMALL_DEMO, read_csv, run_train
from tests.trees import csv_tree
from tests.wandb_records import run_summary

pytestmark = pytest.mark.slow  # every test here trains, sweeps or starts processes

SWEEP = ["-m", "experiment=demo", "data.fold=1,2", "model.mamba_n_layers=1,2", "trainer.max_epochs=1", *SMALL_DEMO]


def test_a_sweep_names_its_jobs_by_their_overrides_writes_the_table_and_skips_finished_jobs(cache_dir, tmp_path):
    started = time.perf_counter()
    run_train([*SWEEP, "name=depth", "logger=wandb"], cache_dir, cwd=tmp_path)
    first_run = time.perf_counter() - started
    sweep = tmp_path / "multirun" / "depth"
    jobs = sorted(path.parent for path in sweep.glob("*/metrics.json"))
    assert [job.name for job in jobs] == [
        f"data.fold={fold},data.utterances_per_voice=4,experiment=demo,model.mamba_n_layers={layers},"
        "trainer.max_epochs=1"
        for fold in (1, 2)
        for layers in (1, 2)
    ]
    metrics = {job.name: json.loads((job / "metrics.json").read_text()) for job in jobs}
    assert all(m["status"] == "completed" for m in metrics.values())

    rows = read_csv(sweep / "summary.csv")
    assert sorted(row["model.mamba_n_layers"] for row in rows) == ["1", "2"]
    for row in rows:
        folds = [m for name, m in metrics.items() if f"model.mamba_n_layers={row['model.mamba_n_layers']}," in name]
        assert (row["runs_done"], row["runs_expected"], row["runs_failed"]) == ("2", "2", "0")
        expected_v = sum(m["test"]["ccc_v"] for m in folds) / 2
        assert float(row["ccc_v_mean"]) == abs_approx(expected_v)
    table = (sweep / "summary.md").read_text()
    assert table.count("| 2/2 |") == 2 and "CCC-V" in table
    assert (sweep / "summary.png").stat().st_size > 1000

    # The sweep's own run of job type `summary` carries the table to the dashboard.
    (summary_run,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    assert (run_summary(summary_run)["job_type"], run_summary(summary_run)["group"]) == ("summary", "depth")
    (logged_table,) = sweep.glob("wandb/offline-run-*/files/media/table/summary_table_*.table.json")
    assert json.loads(logged_table.read_text())["data"] == [list(row.values()) for row in rows]
    for job in jobs:
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        run = run_summary(run_file)
        fold = metrics[job.name]["fold"]
        assert (run["group"], run["job_type"], run["name"]) == ("depth", f"fold{fold}", job.name)
        assert run["tags"] == ["standard", "tiny"]

    written = {job: (job / "metrics.json").stat().st_mtime_ns for job in jobs}
    started = time.perf_counter()
    again = run_train([*SWEEP, "name=depth", "logger=wandb"], cache_dir, cwd=tmp_path)
    assert time.perf_counter() - started < 0.6 * first_run
    assert {job: (job / "metrics.json").stat().st_mtime_ns for job in jobs} == written  # nothing retrained
    assert (again.stdout + again.stderr).count("completed before (metrics.json), skipping") == 4


def abs_approx(value):
    import pytest

    return pytest.approx(value, abs=1e-9)


def test_a_failing_job_leaves_the_others_running_and_shows_in_the_table(cache_dir, tmp_path):
    result = run_train(
        [
            "-m",
            "experiment=demo",
            "data.fold=1",
            "model.speech_encoder_layers=[6,12],[6,30]",
            "trainer.max_epochs=1",
            "logger=none",
            "name=broken",
            *SMALL_DEMO,
        ],
        cache_dir,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    sweep = tmp_path / "multirun" / "broken"
    status = {job.parent.name: json.loads(job.read_text())["status"] for job in sweep.glob("*/metrics.json")}
    assert sorted(status.values()) == ["completed", "failed"]
    rows = {row["model.speech_encoder_layers"]: row for row in read_csv(sweep / "summary.csv")}
    assert (rows["[6,12]"]["runs_done"], rows["[6,12]"]["runs_failed"]) == ("1", "0")
    assert (rows["[6,30]"]["runs_done"], rows["[6,30]"]["runs_failed"]) == ("0", "1")
    assert "0/1 (1 failed)" in (sweep / "summary.md").read_text()


ON_TWO_DEVICES = ["logger=none", "hydra/launcher=gpu_pool", "hydra.launcher.devices=[0,1]"]


def test_the_gpu_pool_runs_one_job_per_device_at_a_time_on_distinct_devices(cache_dir, tmp_path):
    run_train(
        ["-m", "experiment=demo", "data.fold=1,2,3", "trainer.max_epochs=1", *SMALL_DEMO, *ON_TWO_DEVICES, "name=pool"],
        cache_dir,
        cwd=tmp_path,
    )
    sweep = tmp_path / "multirun" / "pool"
    records = [json.loads(path.read_text()) for path in sweep.glob("*/job.json")]
    assert len(records) == 3 and len({r["pid"] for r in records}) == 3  # a process per job
    assert {r["cuda_visible_devices"] for r in records} == {"0", "1"}
    share = os.environ.get("OMP_NUM_THREADS", str(max(1, available_cores() // 2)))
    assert {r["omp_num_threads"] for r in records} == {share}  # two jobs at a time share the cores
    for budget in (record["cpu"] for record in records):  # what each job ran with, by its own account
        assert budget["threads"] == int(share) and budget["feature_workers"] <= int(share)
        assert budget["torch_threads"] + budget["loader_workers"] == int(share)  # the loader's workers are inside it
        assert budget["source"] == "its launcher's share (EMOTION_CPU_THREADS)"
    events = sorted(
        [(r["started"], 1, r) for r in records] + [(r["ended"], -1, r) for r in records],
        key=lambda event: (event[0], event[1]),
    )
    running, most = [], 0
    for _, change, record in events:
        if change == 1:
            assert record["cuda_visible_devices"] not in {r["cuda_visible_devices"] for r in running}
            running.append(record)
        else:
            running.remove(record)
        most = max(most, len(running))
    assert most == 2  # side by side, never more than the two devices
    assert all(json.loads(p.read_text())["status"] == "completed" for p in sweep.glob("*/metrics.json"))
    assert read_csv(sweep / "summary.csv")[0]["runs_done"] == "3"


def test_a_sweep_over_a_path_valued_override_keeps_one_folder_per_job_and_a_full_table(cache_dir, tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "valence", "fold"])
    args = ["experiment=demo", "data=csv", f"data.manifest={manifest}", "trainer.max_epochs=1", "logger=none"]
    run_train(["-m", *args, "data.fold=1,2", "name=paths"], cache_dir, cwd=tmp_path)
    sweep = tmp_path / "multirun" / "paths"
    jobs = sorted(path.parent.name for path in sweep.glob("*/metrics.json"))
    assert jobs == [
        f"data.fold={fold},data.manifest={str(manifest).replace('/', '%2F')},data=csv,experiment=demo,"
        "trainer.max_epochs=1"
        for fold in (1, 2)
    ]
    (row,) = read_csv(sweep / "summary.csv")
    assert (row["data.manifest"], row["runs_done"], row["runs_expected"]) == (str(manifest), "2", "2")
