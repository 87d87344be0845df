"""Where a model runs and in what precision, and how much memory it took there."""

from __future__ import annotations

import resource
from contextlib import nullcontext

import torch

from emotion.checks import PRECISIONS


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """`auto`: CUDA where there is, else CPU. `key` names the setting in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key}={name} but CUDA is not available here; use {key}=auto or cpu.")
    return device


def resolve_precision(name: str, device: torch.device, key: str = "trainer.precision") -> str:
    """`auto`: bf16 on CUDA cards with bf16 units, fp16 (with loss scaling) on older cards, fp32 on CPU."""
    if name not in PRECISIONS:
        raise ValueError(f"{key}={name!r} is not one of {PRECISIONS}.")
    if name != "auto":
        return name
    if device.type != "cuda":
        return "fp32"
    # Without the hardware, bf16 is emulated and slower than fp16.
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9, "mem_kind": "cuda_max_allocated"}
    # ru_maxrss is in kilobytes on Linux: the whole process's peak, which includes the Python runtime.
    return {"peak_mem_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "mem_kind": "cpu_peak_rss"}
