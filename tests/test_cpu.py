"""A job's CPU budget: where its thread count comes from, and what fits inside it."""

from __future__ import annotations

import os

import pytest
import torch
from threadpoolctl import threadpool_limits

from emotion.cpu import (
    SHARE_VARIABLE,
    THREAD_VARIABLES,
    apply,
    available_cores,
    cgroup_quota,
    cpu_budget,
    job_budget,
    share_environment,
)
from tests.conftest import settings_of


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    monkeypatch.delenv(SHARE_VARIABLE, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)


def test_alone_a_job_takes_the_cores_it_may_use_and_leaves_one_to_the_model():
    budget = cpu_budget("auto", "auto", None)
    cores = available_cores()
    assert (budget.threads, budget.source) == (cores, "the cores it may use")
    assert budget.loader_workers == min(4, cores - 1) and budget.feature_workers == cores


def test_a_launchers_share_then_slurm_then_the_setting_decide(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert (cpu_budget("auto", "auto", None).threads, cpu_budget("auto", "auto", None).loader_workers) == (8, 4)
    monkeypatch.setenv(SHARE_VARIABLE, "1")
    one = cpu_budget("auto", "auto", None)
    assert (one.threads, one.loader_workers, one.feature_workers) == (1, 0, 1)  # one thread: data in-process
    explicit = cpu_budget(3, 2, 5)
    assert (explicit.threads, explicit.loader_workers, explicit.feature_workers, explicit.source) == (
        3,
        2,
        5,
        "trainer.cpu_threads",
    )


@pytest.mark.parametrize(
    ("share", "num_workers", "expected"),
    [
        (1, "auto", (0, 1)),  # loading runs in the job's process
        (2, "auto", (1, 1)),
        (4, "auto", (3, 1)),
        (8, "auto", (4, 4)),  # at most 4 workers: the model keeps the rest
        (2, 3, (3, 1)),  # more workers than the share, by hand: the model keeps one thread
    ],
)
def test_loader_workers_share_the_jobs_cores_with_the_models_threads(share, num_workers, expected):
    budget = cpu_budget(share, num_workers, None)
    assert (budget.loader_workers, budget.model_threads, budget.feature_workers) == (*expected, share)


def test_applying_a_budget_runs_torch_and_blas_on_the_cores_the_loader_workers_leave(monkeypatch):
    for variable in THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)  # and as they were after the test (conftest)
    before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # restores the BLAS pools' sizes after the test
            apply(cpu_budget(4, 2, None))
            assert torch.get_num_threads() == 2
            assert {os.environ[variable] for variable in THREAD_VARIABLES} == {"2"}
    finally:
        torch.set_num_threads(before)


def test_a_job_training_on_the_cpu_loads_in_its_own_process_and_gives_the_model_every_core():
    budget = job_budget(settings_of(["experiment=demo", "trainer.device=cpu", "trainer.cpu_threads=4"]))
    assert (budget.loader_workers, budget.model_threads) == (0, 4)
    by_hand = job_budget(settings_of(["trainer.device=cpu", "trainer.cpu_threads=4", "data.num_workers=1"]))
    assert (by_hand.loader_workers, by_hand.model_threads) == (1, 3)


def test_the_baseline_loads_no_batches_so_its_whole_share_is_the_models():
    budget = job_budget(settings_of(["model=baseline", "trainer.cpu_threads=4"]))
    assert (budget.loader_workers, budget.model_threads) == (0, 4)


def test_side_by_side_jobs_split_the_cores_and_their_pools_wait_passively():
    env = share_environment(jobs_at_once=2)
    share = str(max(1, available_cores() // 2))
    assert env[SHARE_VARIABLE] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == share
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a quota of 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files
    ],
)
def test_a_containers_cpu_quota_is_read_from_its_cgroup(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_quota(tmp_path) == expected
