"""A Hydra launcher for one machine with several GPUs: one job per GPU at a time, the rest queued.

    python train.py -m hydra/launcher=gpu_pool hydra.launcher.devices=[0,1,2,3] data.fold=1,2,3,4,5

Each job runs in a process of its own with CUDA_VISIBLE_DEVICES set to its GPU, so it sees that GPU alone
(as cuda:0); when a job ends, the next queued one starts on the GPU it freed. Jobs run exactly as under
Hydra's basic launcher (same folders, same callbacks), only side by side. Without GPUs the devices are
just slots, so `devices=[0,1]` runs two jobs at a time on the CPU. Each job's threads get an equal share of
the CPU cores (OMP_NUM_THREADS, unless already set).

Several `launch` calls at once (a search starts one job at a time, from several threads) share the
devices: at most one job per device, whichever call started it.

Hydra's own submitit_local launcher starts every job at once with the same devices, and the joblib
launcher cannot give jobs different devices; hence this small plugin.
"""
# No `from __future__ import annotations` here: Hydra executes plugin modules before registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from emotion.cpu import share_environment
from emotion.signals import EXIT_INTERRUPTED, STOP

log = logging.getLogger(__name__)


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.emotion_launchers.gpu_pool_launcher.GpuPoolLauncher"
    # GPU indices to run on, one job per index at a time; null: every GPU this machine has (or 1 slot).
    devices: Optional[list[int]] = None  # noqa: UP045 (OmegaConf reads typing's Optional)
    poll_seconds: float = 0.5


ConfigStore.instance().store(group="hydra/launcher", name="gpu_pool", node=GpuPoolLauncherConf, provider="emotion")


@dataclass
class _Running:
    index: int
    process: subprocess.Popen
    result_file: Path


class GpuPoolLauncher(Launcher):
    def __init__(self, devices: list[int] | None = None, poll_seconds: float = 0.5) -> None:
        self.devices = list(devices) if devices is not None else None
        self.poll_seconds = poll_seconds
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._free: list[int] | None = None  # the devices no job runs on, once known
        self._free_lock = threading.Lock()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        work_dir = Path(str(self.config.hydra.sweep.dir)) / ".launcher"
        work_dir.mkdir(parents=True, exist_ok=True)
        devices = self.slots()
        threads = _cpu_share(len(devices))
        log.info(f"Launching {len(job_overrides)} jobs on devices {devices}, one job per device at a time")

        queue = list(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, _Running] = {}  # device → its job
        results: dict[int, JobReturn] = {}
        stop = STOP.install()
        passed_on = False  # the stop request, to the running jobs
        try:
            while running or (queue and not stop.requested):
                while queue and not stop.requested and (device := self._take_device()) is not None:
                    index, overrides = queue.pop(0)
                    running[device] = self._start(index, list(overrides), device, work_dir, threads)
                if stop.requested and not passed_on:
                    log.warning(f"stopping: {len(running)} running jobs save and stop, {len(queue)} do not start")
                    for job in running.values():
                        job.process.send_signal(signal.SIGTERM)
                    passed_on = True
                for device, job in list(running.items()):
                    if job.process.poll() is not None:
                        results[job.index] = _collect(job)
                        del running[device]
                        self._give_back(device)
                        log.info(f"\t#{job.index} ended on device {device}: {_outcome(job, results[job.index])}")
                time.sleep(self.poll_seconds)
        except BaseException:  # a second signal or an error here: take the running jobs down, not leave them orphaned
            _stop([job.process for job in running.values()])
            for device in running:
                self._give_back(device)
            raise
        if stop.requested:
            raise SystemExit(EXIT_INTERRUPTED)
        return [results[index] for index in sorted(results)]

    def slots(self) -> list[int]:
        """The devices jobs run on: one job at a time on each."""
        return self.devices if self.devices is not None else _all_devices()

    def _take_device(self) -> int | None:
        with self._free_lock:
            if self._free is None:
                self._free = list(self.slots())
            return self._free.pop(0) if self._free else None

    def _give_back(self, device: int) -> None:
        with self._free_lock:
            self._free.append(device)

    def _start(self, index: int, overrides: list[str], device: int, work_dir: Path, threads: dict) -> _Running:
        log.info(f"\t#{index} on device {device}: {' '.join(filter_overrides(overrides))}")
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        job_file, result_file = work_dir / f"job{index}.pkl", work_dir / f"job{index}.result.pkl"
        result_file.unlink(missing_ok=True)
        job_file.write_bytes(cloudpickle.dumps((self.hydra_context, self.task_function, sweep_config)))
        with open(work_dir / f"job{index}.log", "w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "hydra_plugins.emotion_launchers.pool_worker", str(job_file), str(result_file)],
                # The job imports what this process imports (the project too, installed or not).
                env={
                    **os.environ,
                    **threads,
                    "CUDA_VISIBLE_DEVICES": str(device),
                    "PYTHONPATH": os.pathsep.join(sys.path),
                },
                stdout=output,
                stderr=subprocess.STDOUT,
                # A session of its own: a Ctrl-C in the terminal reaches this process alone, which passes one
                # SIGTERM on (a second signal would stop the job at once, unsaved).
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        return _Running(index, process, result_file)


def _terminate_with_parent() -> None:
    """In the job's process, before it starts: a SIGTERM when the launcher dies (Linux), so that a killed
    launcher leaves no job running unseen; the job saves and stops as on any SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _stop(processes: list[subprocess.Popen], grace_seconds: float = 30.0) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()


def _cpu_share(jobs_at_once: int) -> dict[str, str]:
    """Each job's share of the CPU cores (its CPU budget, see emotion.cpu), except what the caller set in
    the environment: by default every job would take all of them, and jobs side by side slow each other
    down several times over."""
    return {key: value for key, value in share_environment(jobs_at_once).items() if key not in os.environ}


def _all_devices() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) or [0]


def _outcome(job: _Running, result: JobReturn) -> str:
    """What the log says of an ended job. A stopped job is no failure: it exits with EXIT_INTERRUPTED, or,
    when the stop reached it before it could take over SIGTERM, dies of the signal with nothing begun."""
    if job.process.returncode in (EXIT_INTERRUPTED, -signal.SIGTERM):
        return "INTERRUPTED (the same command resumes it)"
    return result.status.name


def _collect(job: _Running) -> JobReturn:
    """The job's own JobReturn, or a failed one when its process died before writing it."""
    try:
        return cloudpickle.loads(job.result_file.read_bytes())
    except (OSError, EOFError):
        ret = JobReturn()
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(
            f"job #{job.index} exited with code {job.process.returncode} before reporting; see its log in "
            f"{job.result_file.parent}"
        )
        return ret
