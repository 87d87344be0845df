"""A frozen-encoder sweep with and without the feature cache: the wall-clock time of each, and the speedup.

The sweep is the demo's, 4 configurations × 2 folds (two layer sets × two Mamba depths), with a frozen
encoder the size of WavLM-Base (12 layers, hidden 768, 512-channel convolutions), randomly initialised and
saved as a local checkpoint, so that jobs load it as they would load WavLM-Base itself. Both sweeps start
from the same prepared corpus and acoustic features, each in a cache folder of its own; the cached sweep
starts without encoder states, so its time includes building them. The layer set [3,6,9,12] runs first,
and [6,12] is then served by its entries.

    python bench/feature_cache.py            # about 20 minutes on 2 CPU cores

The last line is `speedup: <x>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import WavLMConfig, WavLMModel
from transformers.utils import logging as transformers_logging

from emotion.training.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

# WavLM-Base's sizes, with WavLM-Large's layer norm so that both sweeps encode in padded batches.
WAVLM_BASE_SIZED = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_dim": [512] * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}
SWEEP = ["model.speech_encoder_layers=[3,6,9,12],[6,12]", "model.mamba_n_layers=1,2", "data.fold=1,2"]


def train(args: list[str], cache: Path) -> float:
    """Run train.py with `args`; the wall-clock seconds it took."""
    env = {**os.environ, "EMOTION_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "train.py"), *args, "local=none", "logger=none", "trainer.progress_bar=false"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


def test_ccc(sweep_dir: Path) -> dict[str, float]:
    """Each job's test CCC (mean over dimensions), by job number."""
    return {
        metrics.parent.name: read_metrics(metrics)["test"]["ccc_mean"] for metrics in sweep_dir.glob("*/metrics.json")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--utterances-per-voice", type=int, default=8, help="10 voices; 8 gives 80 utterances")
    args = parser.parse_args()
    job = [
        "experiment=demo",
        "encoder=wavlm_base_plus",
        f"data.utterances_per_voice={args.utterances_per_voice}",
        f"trainer.patience={args.epochs}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        transformers_logging.disable_progress_bar()
        WavLMModel(WavLMConfig(**WAVLM_BASE_SIZED)).save_pretrained(tmp / "encoder")
        job.append(f"encoder.source={tmp / 'encoder'}")
        print("preparing the corpus and its acoustic features", flush=True)
        prepared = tmp / "prepared"
        warm_up = ["trainer.max_epochs=1", "model.speech_encoder_layers=[12]", "encoder.feature_cache=false"]
        train([*job, *warm_up, f"hydra.run.dir={tmp / 'warm-up'}"], prepared)
        job.append(f"trainer.max_epochs={args.epochs}")
        seconds, scores = {}, {}
        for cached in ("false", "true"):
            cache = tmp / f"cache-{cached}"
            shutil.copytree(prepared, cache)
            sweep_dir = tmp / f"sweep-{cached}"
            # Jobs in folders by number: both sweeps number them alike.
            folders = [f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}"]
            seconds[cached] = train(["-m", *job, *SWEEP, f"encoder.feature_cache={cached}", *folders], cache)
            scores[cached] = test_ccc(sweep_dir)
            print(f"encoder.feature_cache={cached}: {len(scores[cached])} jobs in {seconds[cached]:.0f} s", flush=True)
    differences = [abs(scores["true"][name] - scores["false"][name]) for name in scores["false"]]
    print(
        f"test CCC (mean of A/V/D) of the same job, cached vs not: differ by {statistics.mean(differences):.4f} "
        f"on average, {max(differences):.4f} at most"
    )
    print(f"speedup: {seconds['false'] / seconds['true']:.2f}")


if __name__ == "__main__":
    main()
