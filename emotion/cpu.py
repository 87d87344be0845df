"""A job's CPU budget: how many threads it may run, and every pool in it sized to fit.

Each library sizes its thread pool for the whole machine as if it were alone: torch's intra-op threads,
OpenMP and BLAS, data loader workers, the acoustic feature processes. Two jobs side by side on two cores then
run several times slower than one after the other. A launcher that runs jobs side by side (the GPU pool,
SLURM) tells each job its share in EMOTION_CPU_THREADS; `trainer.cpu_threads` overrides it; otherwise a job
takes the cores it may run on (its CPU affinity, capped by its cgroup's CPU quota).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from emotion.settings import JobSettings

log = logging.getLogger(__name__)

SHARE_VARIABLE = "EMOTION_CPU_THREADS"  # set by a launcher: this job's share of the machine's cores
# What OpenMP, MKL, OpenBLAS and numexpr read when they start their pools.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MAX_LOADER_WORKERS = 4  # decoding and cropping audio: more than this only takes cores from the model


@dataclass(frozen=True)
class CpuBudget:
    threads: int  # the job's share of the cores, which the model's threads and the loader workers split
    loader_workers: int  # data loader processes, one thread each, running while the model computes
    feature_workers: int  # acoustic feature processes, before training (nothing else runs): one per core
    source: str  # where `threads` comes from

    @property
    def model_threads(self) -> int:
        """torch's intra-op threads and BLAS in the job's own process: the share less the loader workers,
        which run at the same time; one at least."""
        return max(1, self.threads - self.loader_workers)

    def record(self) -> dict:
        """What job.json keeps: the budget and what torch runs with."""
        import torch

        return {**asdict(self), "torch_threads": torch.get_num_threads()}


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, math.floor(quota))) if quota else cores


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use per period (cgroup v2 cpu.max, v1 cfs quota); None: no limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def job_budget(settings: JobSettings) -> CpuBudget:
    """A training job's budget. The baseline loads no batches: its share is all scikit-learn's."""
    loader_workers = 0 if settings.model.kind == "baseline" else settings.data.num_workers
    feeds_gpu = _feeds_a_gpu(settings.trainer.device)
    return cpu_budget(settings.trainer.cpu_threads, loader_workers, settings.data.acoustic_workers, feeds_gpu)


def _feeds_a_gpu(device: str) -> bool:
    """Whether the job's model runs on a GPU, which loader workers keep fed while the CPU is free."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def cpu_budget(cpu_threads, num_workers, feature_workers, feeds_gpu: bool = True) -> CpuBudget:
    """The budget of a job from `trainer.cpu_threads` (auto or a number), `data.num_workers` (auto or a
    number) and `data.acoustic_workers` (None: the budget's threads). With `num_workers` auto, a job whose
    model runs on the CPU (not `feeds_gpu`) loads in its own process: there the model's threads are the work,
    and a worker would take a core from them to save a little loading (the demo on 2 cores: 15 s an epoch
    with one model thread and one worker, 7.6 s with two threads and none)."""
    if cpu_threads != "auto":
        threads, source = int(cpu_threads), "trainer.cpu_threads"
    elif os.environ.get(SHARE_VARIABLE):
        threads, source = int(os.environ[SHARE_VARIABLE]), f"its launcher's share ({SHARE_VARIABLE})"
    elif os.environ.get("SLURM_CPUS_PER_TASK"):
        threads, source = int(os.environ["SLURM_CPUS_PER_TASK"]), "SLURM_CPUS_PER_TASK"
    else:
        threads, source = available_cores(), "the cores it may use"
    if num_workers != "auto":
        workers = int(num_workers)
    elif feeds_gpu:  # inside the share: the cores beyond the model's one (at most 4); the model the rest
        workers = min(MAX_LOADER_WORKERS, threads - 1)
    else:
        workers = 0
    return CpuBudget(threads, workers, feature_workers or threads, source)


def apply(budget: CpuBudget) -> None:
    """Size this process's pools to the budget; the processes it starts read the environment."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(budget.model_threads)
    threadpool_limits(budget.model_threads)  # BLAS and OpenMP pools numpy and scikit-learn already started
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(budget.model_threads)
    log.info(
        "CPU budget: %d core(s) (%s): %d model thread(s) and %d data loader worker(s); %d feature process(es)",
        budget.threads,
        budget.source,
        budget.model_threads,
        budget.loader_workers,
        budget.feature_workers,
    )


def single_threaded(*_) -> None:
    """In a worker process (data loader, feature pool): BLAS and OpenMP on one thread, so that workers
    never compete with the model for cores. (torch itself runs data loader workers on one thread.)"""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"


def worker_init(*_) -> None:
    """A data loader worker's or feature process's start: single-threaded, and stop signals left to the
    job's own process."""
    from emotion.signals import ignore_stop_signals

    ignore_stop_signals()
    single_threaded()


def share_environment(jobs_at_once: int) -> dict[str, str]:
    """What a launcher running `jobs_at_once` jobs side by side sets in each job's environment: its share
    of the cores, also for the pools that start before the job reads its budget. OpenMP threads wait
    passively, so that an idle pool does not spin on a core another job needs."""
    share = str(max(1, available_cores() // jobs_at_once))
    return {SHARE_VARIABLE: share, **dict.fromkeys(THREAD_VARIABLES, share), "OMP_WAIT_POLICY": "PASSIVE"}
