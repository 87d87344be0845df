"""SIGTERM and SIGINT stop work at the next safe point, after writing what resumes it, instead of killing it.

The first signal raises a flag for the whole process: training stops after its current step (writing
last.pt), the other long phases (acoustic features, the feature cache) stop between pieces of work, and a sweep
starts no further job. A second signal stops at once (Ctrl-C twice).

Worker processes (data loaders, extraction pools) ignore both signals. A signal sent to the whole process
group (Ctrl-C in a terminal, `kill -- -<pgid>`, SLURM) reaches them too, and dying of it mid-batch would
turn a clean stop into a failure; their parent ends them when it stops.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

# EX_TEMPFAIL: stopped on request, nothing lost; run the same command again to continue.
EXIT_INTERRUPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Work stopped on a signal after saving everything needed to resume."""

    exit_code = EXIT_INTERRUPTED


class GracefulStop:
    """A stop request: `install()` makes SIGTERM and SIGINT raise it; work checks it at safe points.

    SIGUSR2, SLURM's timeout warning, is left to submitit, which requeues the job; the requeued job
    resumes from its last checkpoint.
    """

    def __init__(self):
        self.received: int | None = None

    def install(self) -> GracefulStop:
        """Take over SIGTERM and SIGINT for this process (Python allows handlers in the main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return self.received is not None

    def request(self, why: str) -> None:
        """Stop as a SIGTERM would: the work that checks this request saves and stops at its next safe point."""
        if not self.requested:
            self.received = signal.SIGTERM
            log.warning("stopping: %s; running work saves and stops", why)

    def check(self, what: str = "last.pt holds everything to resume") -> None:
        """Raise Interrupted when a stop was requested; `what` tells what is kept."""
        if self.requested:
            raise Interrupted(f"stopped by {signal.Signals(self.received).name}; {what}")

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.received = signum
        log.warning("%s received: finishing the current step, saving, then stopping", signal.Signals(signum).name)


# The process's stop request: jobs of a sweep run one after another in one process and share it, so a
# signal during one job also keeps the next from starting.
STOP = GracefulStop()


def ignore_stop_signals(*_) -> None:
    """In a worker process: leave SIGTERM and SIGINT to the parent (a DataLoader worker_init_fn or a
    process pool's initializer)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
