"""Two jobs on one machine: one after the other against side by side, each within its CPU budget.

Runs the demo's fold 1 and fold 2 (frozen tiny encoder, 2 epochs) through the GPU pool launcher on CPU slots:
with one slot (one job after the other) and with two (side by side, each with half the cores). A warm-up run
fills the caches first (demo corpus, acoustic features, encoder states), so that both runs time training.

    python bench/parallel.py [--epochs 2]

Prints each run's wall time, then `parallel_vs_sequential: <x>` last (side by side over one after the other;
at most 1.1 on 2 cores, below 1 where there are cores to spare).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.cpu import available_cores  # noqa: E402


def sweep(name: str, devices: str, epochs: int, workdir: Path, env: dict) -> float:
    """Seconds the two-job sweep takes on `devices` (CPU slots), start to end."""
    args = [
        "-m",
        "experiment=demo",
        "data.fold=1,2",
        f"trainer.max_epochs={epochs}",
        "trainer.patience=100",
        "logger=none",
        "local=none",
        "trainer.progress_bar=false",
        "hydra/launcher=gpu_pool",
        f"hydra.launcher.devices={devices}",
        f"name={name}",
    ]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=workdir, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # The caller's thread settings would override the budgets being measured.
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "EMOTION_CPU_THREADS"}
        env.update(EMOTION_CACHE=str(workdir / "cache"), HF_HUB_OFFLINE="1")
        print(f"{available_cores()} CPU cores; warming the caches up: {sweep('warmup', '[0]', 1, workdir, env):.0f} s")
        sequential = sweep("sequential", "[0]", args.epochs, workdir, env)
        print(f"sequential_seconds: {sequential:.1f}")
        parallel = sweep("parallel", "[0,1]", args.epochs, workdir, env)
        print(f"parallel_seconds: {parallel:.1f}")
        print(f"parallel_vs_sequential: {parallel / sequential:.2f}")


if __name__ == "__main__":
    main()
