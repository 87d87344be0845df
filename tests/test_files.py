"""Files shared between jobs, machines and people: whole or absent, and as readable as the umask says."""

from __future__ import annotations

import os
import stat

import pytest
import soundfile as sf

from emotion.data.content import INDEX_NAME, content_hashes
from emotion.files import write_atomically
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
