"""Names of job folders: a single run's, and a sweep's jobs'.

A single run goes to `outputs/<date>/<time>/`, unless an unfinished run of the same configuration waits
under `outputs/`: then to that one, so that running the same command again continues it.

A sweep's job folder is named by its overrides (`hydra.job.override_dirname`), so that the same sweep run again
finds its finished jobs. A `/` in a value (`data.manifest=/data/x/manifest.csv`) is written as `%2F`, or
every one would nest a folder. A sweep with many overrides can make the name longer than file systems allow
(255 bytes), so long names are cut and end with a hash of the whole name: still deterministic, still unique.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from emotion.files import held_by_another
from emotion.training.outputs import read_metrics

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


def run_folder(outputs: str, *, _root_: DictConfig) -> str:
    """A single run's folder: the newest unfinished run under `outputs` whose configuration is this one's
    (with `trainer.resume=auto`), else a new `outputs/<date>/<time>`.

    Decided once per process: Hydra may read hydra.run.dir again once the folder exists."""
    if outputs not in _chosen_run_folders:
        _chosen_run_folders[outputs] = _unfinished_run(Path(outputs), _root_) or str(
            Path(outputs) / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        )
    return _chosen_run_folders[outputs]


_chosen_run_folders: dict[str, str] = {}


def _unfinished_run(outputs: Path, root: DictConfig) -> str | None:
    if OmegaConf.select(root, "trainer.resume") != "auto":
        return None
    ignored = list(OmegaConf.select(root, "hydra.job.config.override_dirname.exclude_keys", default=[]))
    config = _comparable(root, ignored)
    for folder in sorted(outputs.glob("*/*/"), reverse=True):
        if _resumable(folder) and _comparable(OmegaConf.load(folder / ".hydra" / "config.yaml"), ignored) == config:
            return str(folder)
    return None


def _resumable(folder: Path) -> bool:
    """Holds a checkpoint to go on from, did not complete, and no running process holds it."""
    if not (folder / "checkpoints" / "last.pt").is_file() or not (folder / ".hydra" / "config.yaml").is_file():
        return False
    metrics = read_metrics(folder / "metrics.json")  # None: killed before it could write one
    if metrics is not None and metrics.get("status") == "completed":
        return False
    return not held_by_another(folder / JOB_LOCK)


def _comparable(config: DictConfig, ignored: list[str]) -> dict:
    """The job's config as written, without Hydra's part and keys that change no result (the logger…)."""
    config = OmegaConf.to_container(config, resolve=False)
    config.pop("hydra", None)
    for key in ignored:
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


# A search's study (emotion.sweeps.search), in its sweep's folder.
STUDY_FILE = "search.db"


def study_storage(sweep_dir: Path) -> str:
    """The study's storage URL, as Optuna and optuna-dashboard take it."""
    return f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


# Held by the process running a job, for the job's whole life.
JOB_LOCK = ".job.lock"


def register_resolver() -> None:
    """`${emotion.job_folder:...}` and `${emotion.run_folder:...}` in conf/train.yaml. Every process that names
    a job's folder needs them: train.py registers them, and so does importing the sweep callback, which Hydra
    unpickles in the GPU pool's and SLURM's job processes before it names their folders."""
    OmegaConf.register_new_resolver("emotion.job_folder", job_folder, replace=True)
    OmegaConf.register_new_resolver("emotion.run_folder", run_folder, replace=True)
