"""Audio files known by their content, so that caches survive moves and renames and never serve stale entries.

A file's key is the BLAKE2 hash of its bytes. Hashing reads every byte, so the hash of each (path, size,
mtime) is remembered in an index that the caches of one cache folder share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from emotion.files import locked, write_atomically

INDEX_NAME = "content_index.json"


def content_hashes(paths: list[Path], cache_dir: Path) -> dict[Path, str]:
    """The content hash of each file, from the index in `cache_dir` where the file is unchanged."""
    index_file = Path(cache_dir) / INDEX_NAME
    index = _read_index(index_file)
    hashes, new = {}, {}
    for path in paths:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in index:
            index[key] = new[key] = hash_file(path)
        hashes[path] = index[key]
    if new:
        index_file.parent.mkdir(parents=True, exist_ok=True)
        # Another job may have added entries since we read the index: keep theirs too.
        with locked(index_file.with_name(f".{INDEX_NAME}.lock")):
            write_atomically(index_file, json.dumps({**_read_index(index_file), **new}))
    return hashes


def hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _read_index(index_file: Path) -> dict[str, str]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(index_file.read_text())
    return {}
