"""hydra-submitit-launcher's SLURM launcher, stoppable like the project's other launchers.

The first SIGINT or SIGTERM to the submitting process cancels the sweep's SLURM jobs: SLURM sends each a
SIGTERM, on which a running job saves and ends `interrupted`, and pending ones never start. The launcher
waits for them to leave the queue and exits with 75; the same command resumes the sweep. (Without this, a
Ctrl-C would end the submitting process alone and leave the jobs running, unwatched.)
"""
# No `from __future__ import annotations`: Hydra executes plugin modules before registering them.

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from emotion.signals import EXIT_INTERRUPTED, STOP_SIGNALS

log = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 300.0  # SLURM's KillWait (30 s by default) and the jobs' own saving, with room


class StopRequested(Exception):
    pass


class StoppableSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # The sweep's jobs carry its folder as their SLURM comment: a stop finds every one of them, even one
        # that sbatch accepted a moment before submitit could record its id.
        self.params["comment"] = _sweep_comment(self.config.hydra.sweep.dir)
        if threading.current_thread() is not threading.main_thread():
            # Launched by a search, a job at a time from its threads: the search takes the signals and
            # calls cancel_jobs (Python lets the main thread alone handle them).
            return super().launch(job_overrides, initial_job_idx)
        previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
        try:
            return super().launch(job_overrides, initial_job_idx)
        except StopRequested as request:
            for sig in STOP_SIGNALS:  # a second signal must not cut the cancelling short
                signal.signal(sig, _ignore_while_cancelling)
            log.warning(f"{request}: cancelling the sweep's SLURM jobs; running ones save and stop")
            self.cancel_jobs()
            raise SystemExit(EXIT_INTERRUPTED) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def cancel_jobs(self) -> None:
        """Cancel the sweep's queued and running SLURM jobs and wait until they have left the queue."""
        jobs = _queued_jobs(_sweep_comment(self.config.hydra.sweep.dir))
        if jobs:
            log.warning(f"cancelling SLURM jobs {' '.join(jobs)}")
            subprocess.run(["scancel", *jobs], check=False)
            _wait_until_gone(jobs)


def _sweep_comment(sweep_dir: str) -> str:
    """What marks this sweep's jobs: its folder, which no other sweep shares."""
    return f"emotion sweep {Path(sweep_dir).resolve()}"


def _queued_jobs(comment: str) -> list[str]:
    """This user's queued or running SLURM jobs with `comment`, by their (array) job id."""
    queue = subprocess.run(["squeue", "--me", "-h", "-o", "%F|%k"], capture_output=True, text=True)
    tagged = (line.split("|", 1) for line in queue.stdout.splitlines() if "|" in line)
    return sorted({job for job, tag in tagged if tag == comment})


def _request_stop(signum, frame) -> None:
    raise StopRequested(f"{signal.Signals(signum).name} received")


def _ignore_while_cancelling(signum, frame) -> None:
    log.warning(f"{signal.Signals(signum).name} received: still cancelling the sweep's SLURM jobs")


def _wait_until_gone(jobs: list[str]) -> None:
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)], capture_output=True, text=True)
        if not queued.stdout.strip():  # none left (squeue fails outright once they are all purged)
            return
        time.sleep(1.0)
    log.warning(f"SLURM jobs still queued after {CANCEL_WAIT_SECONDS:.0f} s: {' '.join(jobs)}")
