"""Nothing lost: a killed job resumes from its own folder and ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from emotion.training.checkpoints import load_checkpoint, load_latest, previous, save_checkpoint
from emotion.training.signals import EXIT_INTERRUPTED
from tests.conftest import ROOT, WITHOUT_LOCAL, run_train
from tests.wandb_records import run_summary

# 48 training utterances in batches of 8: 6 optimizer steps an epoch, a checkpoint every 2.
RUN = [
    "experiment=demo",
    "data.utterances_per_voice=8",
    "trainer.max_epochs=3",
    "trainer.patience=5",
    "trainer.checkpoint_every_steps=2",
    "logger=none",
]


def read_history(job):
    with open(job / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def wait_for_checkpoint(job, process, condition, timeout=300):
    """Poll last.pt until `condition(progress)` holds; returns that progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = load_checkpoint(job / "checkpoints" / "last.pt")
        except (OSError, RuntimeError, EOFError):  # not there yet, or being replaced
            time.sleep(0.05)
            continue
        if condition(state["progress"]):
            return state["progress"]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint met the condition; the job exited with {process.poll()}")


def start_train(args, cache_dir):
    env = {**os.environ, "EMOTION_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, WITHOUT_LOCAL, "trainer.progress_bar=false"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_job_killed_in_the_middle_of_epoch_2_resumes_to_the_same_result(cache_dir, tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    run_train([*RUN, f"hydra.run.dir={uninterrupted}"], cache_dir)

    process = start_train([*RUN, f"hydra.run.dir={interrupted}"], cache_dir)
    at_kill = wait_for_checkpoint(interrupted, process, lambda p: p["epoch"] == 2 and p["batches_done"] >= 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert at_kill["epoch"] == 2 and 2 <= at_kill["batches_done"] < 6  # a mid-epoch checkpoint
    assert not (interrupted / "metrics.json").exists()

    rerun = run_train([*RUN, f"hydra.run.dir={interrupted}"], cache_dir)
    assert "resuming from" in rerun.stdout + rerun.stderr

    expected = json.loads((uninterrupted / "metrics.json").read_text())
    actual = json.loads((interrupted / "metrics.json").read_text())
    for split in ("test", "val_best"):
        for key, value in expected[split].items():
            assert actual[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert actual["best_epoch"] == expected["best_epoch"] and actual["epochs"] == expected["epochs"] == 3
    history, reference = read_history(interrupted), read_history(uninterrupted)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]  # each epoch once
    for row, ref in zip(history, reference, strict=True):
        for key in ("train_loss", "val_ccc_mean", "lr", "padding"):
            assert float(row[key]) == pytest.approx(float(ref[key]), abs=1e-6), (row["epoch"], key)


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


def test_sigterm_saves_last_checkpoint_exits_with_its_code_and_a_rerun_resumes(cache_dir, tmp_path):
    job = tmp_path / "job"
    args = [*RUN, "logger=wandb", f"hydra.run.dir={job}"]
    process = start_train(args, cache_dir)
    wait_for_checkpoint(job, process, lambda p: p["epoch"] == 1 and p["batches_done"] >= 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "SIGTERM" in metrics["error"]
    stopped_at = load_checkpoint(job / "checkpoints" / "last.pt")["progress"]
    assert not stopped_at["finished"]
    (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
    run = run_summary(run_file)
    assert run["preempting"] and run["exit_code"] == EXIT_INTERRUPTED

    rerun = run_train(args, cache_dir)
    assert f"epoch {stopped_at['epoch']}, {stopped_at['batches_done']} batches into it" in rerun.stdout + rerun.stderr
    assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
    assert [row["epoch"] for row in read_history(job)] == ["1", "2", "3"]
