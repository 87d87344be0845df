"""Nothing lost: a killed job resumes from its own folder and ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import signal

import pytest
import torch

from emotion.signals import EXIT_INTERRUPTED
from emotion.training.checkpoints import load_checkpoint, load_latest, previous, save_checkpoint
from tests.conftest import SMALL_DEMO, run_train, wait_for_checkpoint
from tests.wandb_records import run_summary

# 24 training utterances in batches of 4: 6 optimizer steps an epoch, a checkpoint every 2.
RUN = [
    "experiment=demo",
    *SMALL_DEMO,
    "data.batch_size=4",
    "trainer.max_epochs=3",
    "trainer.patience=5",
    "trainer.checkpoint_every_steps=2",
    "logger=none",
]


def read_history(job):
    with open(job / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, tmp_path_factory):
    """The run the interrupted ones must end like."""
    job = tmp_path_factory.mktemp("uninterrupted") / "job"
    run_train([*RUN, f"hydra.run.dir={job}"], cache_dir)
    return job


def assert_same_results(job, reference):
    expected = json.loads((reference / "metrics.json").read_text())
    actual = json.loads((job / "metrics.json").read_text())
    for split in ("test", "val_best"):
        for key, value in expected[split].items():
            assert actual[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert actual["best_epoch"] == expected["best_epoch"] and actual["epochs"] == expected["epochs"] == 3
    history, reference_history = read_history(job), read_history(reference)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]  # each epoch once
    for row, ref in zip(history, reference_history, strict=True):
        for key in ("train_loss", "train_ccc_mean", "val_ccc_mean", "lr", "padding"):
            assert float(row[key]) == pytest.approx(float(ref[key]), abs=1e-6), (row["epoch"], key)


@pytest.mark.slow
def test_a_job_killed_in_the_middle_of_epoch_2_resumes_to_the_same_result(
    cache_dir, tmp_path, uninterrupted, start_train
):
    process = start_train(RUN, cache_dir, tmp_path / "killed.out", cwd=tmp_path)  # into outputs/<date>/<time>/
    job, at_kill = wait_for_checkpoint(
        tmp_path / "outputs/*/*", process, lambda p: p["epoch"] == 2 and p["batches_done"] >= 2
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert at_kill["epoch"] == 2 and 2 <= at_kill["batches_done"] < 6  # a mid-epoch checkpoint
    assert not (job / "metrics.json").exists()

    rerun = run_train(RUN, cache_dir, cwd=tmp_path)  # the same command
    assert f"resuming from {job / 'checkpoints' / 'last.pt'}" in rerun.stdout + rerun.stderr
    assert list(tmp_path.glob("outputs/*/*")) == [job]
    assert_same_results(job, uninterrupted)


@pytest.mark.slow
def test_sigint_saves_exits_with_its_code_and_the_same_command_resumes_to_the_same_result(
    cache_dir, tmp_path, uninterrupted, start_train
):
    command = [*RUN, "logger=wandb"]
    process = start_train(command, cache_dir, tmp_path / "stopped.out", cwd=tmp_path)
    job, _ = wait_for_checkpoint(tmp_path / "outputs/*/*", process, lambda p: p["epoch"] == 2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    assert "run the same command again to resume (exit code 75)" in (tmp_path / "stopped.out").read_text()
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "SIGINT" in metrics["error"]
    stopped_at = load_checkpoint(job / "checkpoints" / "last.pt")["progress"]
    assert not stopped_at["finished"]
    (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
    run = run_summary(run_file)
    assert run["preempting"] and run["exit_code"] == EXIT_INTERRUPTED

    rerun = run_train(command, cache_dir, cwd=tmp_path)
    log = rerun.stdout + rerun.stderr
    assert f"{job}: its previous run ended interrupted: stopped by SIGINT" in log
    assert f"epoch {stopped_at['epoch']}, {stopped_at['batches_done']} batches into it" in log
    assert list(tmp_path.glob("outputs/*/*")) == [job]
    assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
    assert_same_results(job, uninterrupted)  # (which runs a rerun continues: tests/test_configs.py)


LAUNCHERS = {"basic": [], "gpu_pool": ["hydra/launcher=gpu_pool", "hydra.launcher.devices=[0]"]}
FOLDS = {"basic": "1,2,3", "gpu_pool": "1,2"}  # the pool's jobs start slower: two show it


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.slow
def test_sigint_to_a_sweeps_process_group_stops_the_sweep_and_the_same_command_resumes_it(
    cache_dir, tmp_path, launcher, start_train
):
    sweep_args = [
        "-m",
        *LAUNCHERS[launcher],
        "experiment=demo",
        *SMALL_DEMO,
        f"data.fold={FOLDS[launcher]}",
        "trainer.max_epochs=2",
        "trainer.checkpoint_every_steps=1",
        "logger=none",
        "name=stopped",
    ]
    sweep = tmp_path / "multirun" / "stopped"
    process = start_train(sweep_args, cache_dir, tmp_path / "sweep.out", cwd=tmp_path, own_group=True)
    first, _ = wait_for_checkpoint(sweep / "*", process, lambda p: p["epoch"] == 1 and p["batches_done"] >= 1)
    os.killpg(process.pid, signal.SIGINT)  # the driver and its data loader workers, as Ctrl-C does
    process.wait(timeout=120)
    output = (tmp_path / "sweep.out").read_text()
    assert process.returncode == EXIT_INTERRUPTED, output[-3000:]
    assert "is killed by signal" not in output and "FAILED" not in output
    if launcher == "gpu_pool":
        assert "#0 ended on device 0: INTERRUPTED (the same command resumes it)" in output
    assert json.loads((first / "metrics.json").read_text())["status"] == "interrupted"
    assert [path.parent for path in sweep.glob("*/.hydra")] == [first]  # no second job started

    run_train(sweep_args, cache_dir, cwd=tmp_path)
    assert f"resuming from {first / 'checkpoints' / 'last.pt'}" in (first / "train.log").read_text()
    statuses = [json.loads(path.read_text())["status"] for path in sweep.glob("*/metrics.json")]
    assert statuses == ["completed"] * len(FOLDS[launcher].split(","))


@pytest.mark.slow
def test_resume_never_starts_over(cache_dir, tmp_path):
    job = tmp_path / "job"
    args = [
        "experiment=demo",
        "data.utterances_per_voice=4",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.run.dir={job}",
    ]
    run_train(args, cache_dir)
    (job / "metrics.json").unlink()  # as if it had stopped before the test
    again = run_train([*args, "trainer.resume=never"], cache_dir)
    log = again.stdout + again.stderr
    assert "trainer.resume=never: starting over" in log and "resuming from" not in log
    assert len(read_history(job)) == 1


def test_a_truncated_last_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path, caplog):
    last = tmp_path / "last.pt"
    save_checkpoint(last, {"step": torch.tensor(1)}, keep_previous=True)
    save_checkpoint(last, {"step": torch.tensor(2)}, keep_previous=True)
    assert previous(last).exists()
    last.write_bytes(last.read_bytes()[:100])  # a kill in the middle of a copy, a full disk
    with caplog.at_level(logging.WARNING):
        state = load_latest(last)
    assert state["step"].item() == 1
    assert "last.pt is unreadable" in caplog.text and "falling back" in caplog.text


class NotATensor:
    pass


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        load_latest(path)  # refused, not mistaken for a corrupt file and skipped
