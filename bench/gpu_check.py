"""Peak GPU memory and seconds per training step of the model profiles, on a CUDA machine.

Each profile, without and with gradient checkpointing of the WavLM layers, fine-tunes a WavLM-Large-sized
encoder (randomly initialised, so nothing is downloaded) on its own batch size of worst-case utterances
(`data.max_seconds` long), with the trainer's own step: autocast, CCC loss, backward, clipping, AdamW.
Then the Mamba kernel path is compared with the PyTorch path when mamba-ssm is installed, in float32 and
bfloat16, outputs and gradients; the script exits with an error when they disagree beyond tolerance.

    python bench/gpu_check.py [--profiles standard max] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.data.corpus import DIMENSIONS  # noqa: E402
from emotion.models.mamba import PARITY_TOLERANCE, kernel_available, kernel_parity  # noqa: E402
from emotion.models.model import count_parameters  # noqa: E402
from emotion.settings import JobSettings  # noqa: E402
from emotion.training.devices import resolve_precision  # noqa: E402
from emotion.training.loop import train_one_epoch  # noqa: E402
from emotion.training.optim import Optimisation  # noqa: E402
from emotion.training.preflight import WorstBatch, synthetic_batch  # noqa: E402
from emotion.training.recipe import new_model  # noqa: E402

# microsoft/wavlm-large's architecture.
WAVLM_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_bias": True,
}


def measure_profile(profile: str, checkpointing: bool, steps: int, device: torch.device) -> None:
    overrides = [
        f"model={profile}",
        "encoder.source=null",
        "encoder.freeze=false",
        "local=none",
        f"model.grad_checkpointing={checkpointing}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    cfg.encoder.random_init = OmegaConf.create(WAVLM_LARGE)
    settings = JobSettings.of(cfg)
    torch.manual_seed(0)
    model = new_model(settings.model, settings.encoder, DIMENSIONS).to(device)
    data = settings.data
    worst = WorstBatch("training step", data.batch_size, int(data.max_seconds * data.sample_rate), "waves")
    batch = synthetic_batch(worst, model).to(device)
    precision = resolve_precision(settings.trainer.precision, device)
    optimisation = Optimisation.build(
        model,
        settings.optim,
        accumulation_steps=1,
        total_steps=steps + 1,
        scale_loss=precision == "fp16",
        device_type=device.type,
    )

    def run(n_steps: int) -> float:
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        train_one_epoch(model, [batch] * n_steps, optimisation, device, precision)
        torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / n_steps

    run(1)  # warm-up: allocator, cuDNN/cuBLAS heuristics
    torch.cuda.reset_peak_memory_stats(device)
    sec_per_step = run(steps)
    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
    params = count_parameters(model)
    print(
        f"profile={profile} batch={data.batch_size}x{data.max_seconds:g}s precision={precision} "
        f"params={params['total'] / 1e6:.1f}M trainable={params['trainable'] / 1e6:.1f}M "
        f"grad_checkpointing={checkpointing} peak_vram_gb={peak_gb:.2f} sec_per_step={sec_per_step:.3f}",
        flush=True,
    )


def check_kernel_parity() -> bool:
    """The mamba-ssm kernel against the PyTorch scan (as tests/test_mamba.py does); False when they disagree."""
    if not kernel_available():
        print("mamba_kernel_parity: not measured (mamba-ssm is not installed)", flush=True)
        return True
    agree = True
    for dtype, tolerance in PARITY_TOLERANCE.items():
        differences = kernel_parity(dtype)
        worst = max(differences, key=differences.get)
        agree &= differences[worst] <= tolerance
        print(
            f"mamba_kernel_parity dtype={str(dtype).removeprefix('torch.')} max_rel_diff_out={differences['out']:.2e} "
            f"max_rel_diff_grads={max(v for k, v in differences.items() if k != 'out'):.2e} (worst: {worst}) "
            f"tolerance={tolerance:.0e} {'ok' if differences[worst] <= tolerance else 'DISAGREE'}",
            flush=True,
        )
    return agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["standard", "max"])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device")
    device = torch.device("cuda")
    print(f"device={torch.cuda.get_device_name(device)} torch={torch.__version__}", flush=True)
    for profile in args.profiles:
        for checkpointing in (False, True):
            measure_profile(profile, checkpointing, args.steps, device)
            torch.cuda.empty_cache()  # the last run's tensors are gone; hand their blocks back
    if not check_kernel_parity():
        sys.exit("gpu_check: the mamba-ssm kernel and the PyTorch scan disagree beyond tolerance")


if __name__ == "__main__":
    main()
