"""Names of a sweep's job folders.

A job's folder is named by its overrides (`hydra.job.override_dirname`), so that the same sweep run again
finds its finished jobs. A `/` in a value (`data.manifest=/data/x/manifest.csv`) is written as `%2F`, or
every one would nest a folder. A sweep with many overrides can make the name longer than file systems allow
(255 bytes), so long names are cut and end with a hash of the whole name: still deterministic, still unique.
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_NAME_BYTES = 200  # below the usual 255, leaving room for editors' and tools' suffixes
DIGEST_CHARS = 12


def job_folder(override_dirname: str) -> str:
    flat = override_dirname.replace("/", "%2F")
    name = flat.encode()
    if len(name) <= MAX_NAME_BYTES:
        return flat
    digest = hashlib.blake2b(name, digest_size=DIGEST_CHARS // 2).hexdigest()
    kept = name[: MAX_NAME_BYTES - DIGEST_CHARS - 1].decode(errors="ignore")  # never half a character
    return f"{kept}-{digest}"


def register_resolver() -> None:
    """`${emotion.job_folder:...}` in conf/train.yaml. Every process that resolves hydra.sweep.subdir needs it:
    train.py registers it, and so does importing the sweep callback, which Hydra unpickles in the GPU pool's
    and SLURM's job processes before it names their folders."""
    OmegaConf.register_new_resolver("emotion.job_folder", job_folder, replace=True)
