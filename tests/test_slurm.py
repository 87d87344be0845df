"""A demo sweep through submitit on a real SLURM cluster (scripts/slurm-cluster.sh; .ci/run starts one).

Skipped when no cluster answers, unless EMOTION_REQUIRE_SLURM=1 (as in CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from emotion.signals import EXIT_INTERRUPTED
from tests.conftest import SMALL_DEMO, run_train, wait_for_checkpoint

pytestmark = pytest.mark.slow  # every test here trains, sweeps or starts processes


def cluster_answers() -> bool:
    if not shutil.which("sbatch"):
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0


@pytest.fixture
def slurm():
    if not cluster_answers():
        if os.environ.get("EMOTION_REQUIRE_SLURM") == "1":
            pytest.fail("EMOTION_REQUIRE_SLURM=1 but no SLURM cluster answers: start one with scripts/slurm-cluster.sh")
        pytest.skip("no SLURM cluster here; scripts/slurm-cluster.sh starts one")


ON_THE_TEST_CLUSTER = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=15",
    "experiment=demo",
    "data.fold=1,2",
    "logger=none",
    *SMALL_DEMO,
]


def accounted_states(slurm_ids: set[str], wait_s: float = 60.0) -> str:
    """sacct's states of the jobs once none is still running: a job's result reaches submitit a moment
    before slurmd has reported the job's end to the accounting database."""
    deadline = time.monotonic() + wait_s
    while True:
        states = subprocess.run(
            ["sacct", "-n", "-X", "-o", "JobID,State", "-j", ",".join(slurm_ids)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if ("RUNNING" not in states and "COMPLETING" not in states) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_a_demo_sweep_runs_as_slurm_jobs_stops_on_sigint_and_the_same_command_resumes_it(
    slurm, cache_dir, tmp_path, start_train
):
    command = [*ON_THE_TEST_CLUSTER, "trainer.max_epochs=2", "trainer.checkpoint_every_steps=1", "name=stopped"]
    sweep = tmp_path / "multirun" / "stopped"
    process = start_train(command, cache_dir, tmp_path / "submit.out", cwd=tmp_path)
    wait_for_checkpoint(sweep / "*", process, lambda p: p["batches_done"] >= 1, timeout=600)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=400) == EXIT_INTERRUPTED, (tmp_path / "submit.out").read_text()[-3000:]
    statuses = [json.loads(path.read_text())["status"] for path in sweep.glob("*/metrics.json")]
    assert "interrupted" in statuses and "completed" not in statuses
    assert "RUNNING" not in accounted_states(slurm_ids(sweep))  # cancelled, none left behind

    run_train(command, cache_dir, cwd=tmp_path)
    jobs = sorted(path.parent for path in sweep.glob("*/metrics.json"))
    assert len(jobs) == 2 and all(
        json.loads((job / "metrics.json").read_text())["status"] == "completed" for job in jobs
    )
    assert any("resuming from" in (job / "train.log").read_text() for job in jobs)
    ran_as = slurm_ids(sweep)
    assert None not in ran_as and len(ran_as) == 2  # two SLURM jobs ran them
    assert accounted_states(ran_as).count("COMPLETED") == 2
    assert {job["omp_num_threads"] for job in job_records(sweep)} == {"1"}  # hydra.launcher.cpus_per_task=1
    assert "| 2/2 |" in (sweep / "summary.md").read_text()


def job_records(sweep) -> list[dict]:
    """Each job's job.json: where its last run ran (every run writes it), and its folder's name."""
    return [{**json.loads(path.read_text()), "folder": path.parent.name} for path in sweep.glob("*/job.json")]


def slurm_ids(sweep) -> set[str]:
    return {job["slurm_job_id"] for job in job_records(sweep)}


def test_a_search_runs_its_trials_as_slurm_jobs_side_by_side(slurm, cache_dir, tmp_path):
    import optuna

    from emotion.sweeps.folders import study_storage

    on_the_cluster = [item for item in ON_THE_TEST_CLUSTER if not item.startswith("data.fold=")]
    # Blind to fold 1 (the default), each trial on fold 2; then the choice trains on fold 1.
    search = ["sweep=search", "name=search", "search.n_trials=2", "search.folds=1", "search.pruner=none"]
    space = ["~search.space", "+search.space={model.dropout: 'interval(0.0, 0.3)'}", "trainer.max_epochs=1"]
    run_train([*on_the_cluster, *search, *space], cache_dir, cwd=tmp_path)
    sweep = tmp_path / "multirun" / "search"
    trials = [record for record in job_records(sweep) if "data.exclude_fold=1" in record["folder"]]
    assert len(trials) == 2 and len(slurm_ids(sweep)) == 3 and None not in slurm_ids(sweep)
    assert max(r["started"] for r in trials) < min(r["ended"] for r in trials)  # side by side
    study = optuna.load_study(study_name="search-fold1", storage=study_storage(sweep))
    values = sorted(trial.value for trial in study.trials)
    metrics = [json.loads(path.read_text()) for path in sweep.glob("*data.exclude_fold=1*/metrics.json")]
    assert values == pytest.approx(sorted(m["val_best"]["ccc_mean"] for m in metrics))
    (chosen,) = [path for path in sweep.glob("*/metrics.json") if "exclude_fold" not in path.parent.name]
    assert json.loads(chosen.read_text())["status"] == "completed" and "data.fold=1" in chosen.parent.name
    assert "Trained on fold 1, which none of the study's jobs saw: test CCC-V" in (sweep / "summary.md").read_text()
