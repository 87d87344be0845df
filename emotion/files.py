"""Files that several processes share: written whole or not at all, and changed by one writer at a time."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def locked(lock_file: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if need be), calling `on_wait` first if another process
    holds it. Closing the file releases the lock, and so does the kernel when the holder dies."""
    with open(lock_file, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextmanager
def process_lock(lock_file: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Like `locked`, but a POSIX lock, which belongs to this process alone: processes it forks (data loader
    workers) do not hold it too, so it ends the moment this process dies, even when its workers linger."""
    with open(lock_file, "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EACCES or EAGAIN: held elsewhere
            if on_wait is not None:
                on_wait()
            fcntl.lockf(f, fcntl.LOCK_EX)
        yield


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
