"""Where a model runs and in what precision, and how much memory it took there."""

from __future__ import annotations

import logging
import resource
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import get_args

import torch

from emotion.settings import Precision

log = logging.getLogger(__name__)

# Linux: the process's peak resident memory (VmHWM, in kB), and what resets it. getrusage's ru_maxrss
# cannot be reset, and it is carried over from the parent through fork and exec.
PEAK_RSS, PEAK_RSS_RESET = Path("/proc/self/status"), Path("/proc/self/clear_refs")


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
    if name not in get_args(Precision):
        raise ValueError(f"{key}={name!r} is not one of {get_args(Precision)}.")
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


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring the job's peak memory from here: Hydra's basic launcher runs a sweep's jobs one after
    another in one process, whose peak would otherwise be the largest earlier job's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        PEAK_RSS_RESET.write_text("5")  # Linux: VmHWM becomes the current resident size
    except OSError as error:
        log.warning("%s: %s; peak_mem_gb is then the process's peak since it started", PEAK_RSS_RESET, error)


def peak_memory(device: torch.device) -> dict:
    """The peak since the last reset_peak_memory: the GPU's allocated memory, or on the CPU the process's
    resident memory (data loader workers, other processes, are not counted)."""
    if device.type == "cuda":
        return {"peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9, "mem_kind": "cuda_max_allocated"}
    try:
        status = PEAK_RSS.read_text()
        kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # no /proc (macOS): the process's lifetime peak, which nothing resets
        kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return {"peak_mem_gb": kilobytes * 1024 / 1e9, "mem_kind": "cpu_peak_rss"}
