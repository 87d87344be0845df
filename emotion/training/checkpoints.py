"""Checkpoints hold tensors and plain containers only, are written atomically and loaded with weights_only.

`last.pt` keeps the one before it as `last.prev.pt`, so a truncated or corrupt file (a full disk, a kill
during a copy) falls back to the previous good one.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, state: dict, keep_previous: bool = False) -> None:
    """Write to a temporary file, flush it to disk, then rename: a reader never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def previous(path: Path) -> Path:
    return path.with_suffix(".prev.pt")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Refuses anything but tensors and plain containers (torch raises pickle.UnpicklingError)."""
    return torch.load(path, map_location=device, weights_only=True)


def load_latest(path: Path, device: torch.device | str = "cpu") -> dict | None:
    """`path`, or the one saved before it when `path` is unreadable; None when there is neither."""
    for candidate in (path, previous(path)):
        if not candidate.exists():
            continue
        try:
            return load_checkpoint(candidate, device)
        except (RuntimeError, EOFError, OSError) as err:  # truncated or corrupt, not a refused pickle
            log.warning("%s is unreadable (%s); falling back to the checkpoint before it", candidate, err)
    return None


def rng_state() -> dict:
    """Every random generator's state, as tensors and plain values (numpy's array as a tensor)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
