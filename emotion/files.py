"""Files that several processes share: written whole or not at all, and changed by one writer at a time."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emotion.signals import GracefulStop


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write a uniquely named temporary file beside `path`, then rename it: readers see all or nothing,
    and jobs on other machines sharing the folder never write the same temporary file.

    The file gets the permissions `open()` would give it (0666 less the umask), not the temporary file's
    private 0600, so that a cache or results folder shared with a group stays readable to it."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        f.write(data.encode() if isinstance(data, str) else data)
        os.fchmod(f.fileno(), 0o666 & ~current_umask())
    os.replace(f.name, path)


def current_umask() -> int:
    """The process's umask. Linux reports it in /proc; elsewhere it can only be read by setting it, briefly."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# How often a waiting lock is tried again; between tries a stop request is honoured.
LOCK_POLL_SECONDS = 0.5


@contextmanager
def locked(
    lock_file: Path, on_wait: Callable[[], None] | None = None, stop: GracefulStop | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if need be), calling `on_wait` first if another process
    holds it; a `stop` requested while waiting raises Interrupted. Closing the file releases the lock, and so
    does the kernel when the holder dies."""
    with open(lock_file, "a") as f:
        _wait_for(lambda: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB), on_wait, stop)
        yield


@contextmanager
def process_lock(
    lock_file: Path, on_wait: Callable[[], None] | None = None, stop: GracefulStop | None = None
) -> Iterator[None]:
    """Like `locked`, but a POSIX lock, which belongs to this process alone: processes it forks (data loader
    workers) do not hold it too, so it ends the moment this process dies, even when its workers linger."""
    with open(lock_file, "a+") as f:
        _wait_for(lambda: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB), on_wait, stop)
        yield


def _wait_for(try_lock: Callable[[], None], on_wait: Callable[[], None] | None, stop: GracefulStop | None) -> None:
    """Call `try_lock` until it stops raising OSError (EACCES, EAGAIN: held elsewhere). It polls rather than
    blocks, because a blocking call is resumed after a signal's handler returns: a stop would go unheard."""
    if _acquired(try_lock):
        return
    if on_wait is not None:
        on_wait()
    while not _acquired(try_lock):
        if stop is not None:
            stop.check("nothing was started while waiting")
        time.sleep(LOCK_POLL_SECONDS)


def _acquired(try_lock: Callable[[], None]) -> bool:
    try:
        try_lock()
    except OSError:
        return False
    return True


def held_by_another(lock_file: Path) -> bool:
    """Whether another process holds the `process_lock` on `lock_file` (False when there is no such file)."""
    try:
        with open(lock_file) as f:
            fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False
