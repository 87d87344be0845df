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
        submitted_after = time.time()
        previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
        try:
            return super().launch(job_overrides, initial_job_idx)
        except StopRequested as request:
            jobs = self._jobs_submitted_since(submitted_after)
            log.warning(f"{request}: cancelling SLURM jobs {' '.join(jobs)}; running ones save and stop")
            if jobs:
                subprocess.run(["scancel", *jobs], check=False)
                _wait_until_gone(jobs)
            raise SystemExit(EXIT_INTERRUPTED) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _jobs_submitted_since(self, started: float) -> list[str]:
        """SLURM ids of this sweep's jobs, from the folders submitit made for them (`.submitit/<job id>`)."""
        folders = Path(self.params["submitit_folder"].replace("%j", "")).glob("*")
        return sorted(folder.name for folder in folders if folder.is_dir() and folder.stat().st_mtime >= started - 1)


def _request_stop(signum, frame) -> None:
    raise StopRequested(f"{signal.Signals(signum).name} received")


def _wait_until_gone(jobs: list[str]) -> None:
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)], capture_output=True, text=True)
        if not queued.stdout.strip():  # none left (squeue fails outright once they are all purged)
            return
        time.sleep(1.0)
    log.warning(f"SLURM jobs still queued after {CANCEL_WAIT_SECONDS:.0f} s: {' '.join(jobs)}")
