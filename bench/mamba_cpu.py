"""The project's Mamba blocks against mambapy (pure-PyTorch parallel scan), forward + backward on the CPU.

Two residual Mamba layers, batch 8, 500 frames, d_model 256, expand 2, at d_state 16 (the default) and 64.
Both get the same weights (the parameter names are the same); outputs and gradients are compared first,
then each is timed (best of --repeats after a warm-up) and its peak memory measured in a process of its own.

    pip install -e '.[bench]' && python bench/mamba_cpu.py

The last two lines are `speedup_vs_mambapy_d64: <x>` and `speedup_vs_mambapy: <x>` (d_state 16).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from mambapy.mamba import Mamba as MambapyMamba
from mambapy.mamba import MambaConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.models.mamba import ResidualMamba  # noqa: E402

BATCH, FRAMES, D_MODEL, LAYERS = 8, 500, 256, 2


def build(impl: str, d_state: int) -> torch.nn.Module:
    """The two-layer stack; both implementations get the weights of ours, drawn from seed 0."""
    torch.manual_seed(0)
    ours = torch.nn.Sequential(*[ResidualMamba(D_MODEL, d_state=d_state) for _ in range(LAYERS)])
    if impl == "ours":
        return ours
    reference = MambapyMamba(MambaConfig(d_model=D_MODEL, n_layers=LAYERS, d_state=d_state, pscan=True))
    reference.load_state_dict({f"layers.{key}": value for key, value in ours.state_dict().items()})
    return reference


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, FRAMES, D_MODEL, generator=generator)
    return x, torch.randn(BATCH, FRAMES, D_MODEL, generator=generator)


def forward_backward(model: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    out = model(x)
    out.backward(grad_out)
    return out


def check_agreement(d_state: int) -> float:
    """Largest difference between the two, over the outputs and every gradient, relative to its scale."""
    x, grad_out = inputs()
    worst = 0.0
    models = {impl: build(impl, d_state) for impl in ("ours", "mambapy")}
    outputs = {impl: forward_backward(model, x, grad_out) for impl, model in models.items()}
    pairs = [(outputs["ours"], outputs["mambapy"])]
    ours, reference = dict(models["ours"].named_parameters()), dict(models["mambapy"].named_parameters())
    pairs += [(ours[name].grad, reference[f"layers.{name}"].grad) for name in ours]
    for a, b in pairs:
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item())
    return worst


def seconds(impl: str, d_state: int, repeats: int) -> float:
    model, (x, grad_out) = build(impl, d_state), inputs()
    forward_backward(model, x, grad_out)  # warm-up
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        forward_backward(model, x, grad_out)
        times.append(time.perf_counter() - started)
    return min(times)


def peak_memory_mb(impl: str, d_state: int) -> float:
    """Peak resident memory that one forward + backward adds, measured in a fresh process."""
    result = subprocess.run(
        [sys.executable, __file__, "--peak-of", impl, str(d_state)], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    from the parent through fork and exec, so a child of a large parent would seem to need nothing."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def _print_peak(impl: str, d_state: int) -> None:
    model, (x, grad_out) = build(impl, d_state), inputs()
    before = _peak_rss_mb()
    forward_backward(model, x, grad_out)
    print(_peak_rss_mb() - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-of", nargs=2, metavar=("IMPL", "D_STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        _print_peak(args.peak_of[0], int(args.peak_of[1]))
        return
    print(
        f"{LAYERS} layers, batch {BATCH} × {FRAMES} frames, d_model {D_MODEL}, expand 2, "
        f"{torch.get_num_threads()} threads; forward + backward, best of {args.repeats}",
        flush=True,
    )
    speedup = {}
    for d_state in (16, 64):
        difference = check_agreement(d_state)
        if difference > 1e-4:
            sys.exit(f"d_state {d_state}: outputs or gradients differ from mambapy by {difference:.1e} (relative)")
        time_ours, time_reference = seconds("ours", d_state, args.repeats), seconds("mambapy", d_state, args.repeats)
        memory_ours, memory_reference = peak_memory_mb("ours", d_state), peak_memory_mb("mambapy", d_state)
        speedup[d_state] = time_reference / time_ours
        print(
            f"d_state {d_state}: agree to {difference:.1e}; ours {time_ours:.3f} s, +{memory_ours:.0f} MB; "
            f"mambapy {time_reference:.3f} s, +{memory_reference:.0f} MB; speed ×{speedup[d_state]:.2f}, "
            f"memory ×{memory_ours / memory_reference:.2f}",
            flush=True,
        )
    print(f"speedup_vs_mambapy_d64: {speedup[64]:.2f}")
    print(f"speedup_vs_mambapy: {speedup[16]:.2f}")


if __name__ == "__main__":
    main()
