"""SIGTERM and SIGINT stop training at the next safe point, after writing last.pt, instead of killing it."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

# EX_TEMPFAIL: stopped on request, nothing lost; run the same command again to continue.
EXIT_INTERRUPTED = 75


class Interrupted(Exception):
    """Training stopped on a signal after saving everything needed to resume."""

    exit_code = EXIT_INTERRUPTED


class GracefulStop:
    """While active, the first SIGTERM or SIGINT only raises a flag that the loop checks between steps;
    a second one stops at once (Ctrl-C twice). SIGUSR2, SLURM's timeout warning, is left to submitit,
    which requeues the job; the requeued job resumes from the last periodic checkpoint."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def check(self) -> None:
        if self.requested:
            raise Interrupted(f"stopped by {signal.Signals(self.received).name}; last.pt holds everything to resume")

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.received = signum
        log.warning("%s received: finishing this step, saving last.pt, then stopping", signal.Signals(signum).name)
