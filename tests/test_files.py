"""Files shared between jobs, machines and people: whole or absent, and as readable as the umask says."""

from __future__ import annotations

import os
import signal
import stat

import pytest
import soundfile as sf

from emotion.data.content import INDEX_NAME, content_hashes
from emotion.files import held_by_another, locked, process_lock, write_atomically
from emotion.signals import GracefulStop, Interrupted
from tests.conftest import lock_held_elsewhere
from tests.trees import speech


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_permissions_that_open_gives_under_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomically(tmp_path / "metrics.json", "{}")
        (tmp_path / "plain.txt").write_text("")
        sf.write(tmp_path / "a.wav", speech(0)[0], 16000)
        content_hashes([tmp_path / "a.wav"], tmp_path / "cache")  # writes the shared content index
    finally:
        os.umask(previous)
    assert mode(tmp_path / "metrics.json") == mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert mode(tmp_path / "cache" / INDEX_NAME) == 0o666 & ~umask
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(("lock", "call"), [(locked, "flock"), (process_lock, "lockf")], ids=["locked", "process_lock"])
def test_a_stop_ends_the_wait_for_a_lock_another_process_holds(tmp_path, lock, call):
    lock_file = tmp_path / "job.lock"
    with lock_held_elsewhere(lock_file, call):
        assert held_by_another(lock_file) == (call == "lockf")  # held_by_another sees POSIX locks
        stop, waited = GracefulStop(), []
        stop.received = signal.SIGINT  # as the handler records it
        with (
            pytest.raises(Interrupted, match="stopped by SIGINT; nothing was started while waiting"),
            lock(lock_file, lambda: waited.append(True), stop),
        ):
            pytest.fail("the lock is held by another process")
        assert waited == [True]
    with lock(lock_file, stop=GracefulStop()):  # taken at once when its holder is gone
        pass
