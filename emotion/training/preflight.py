"""Memory preflight: one training step on the worst-case batch before the real run, so that a batch that
will not fit stops the job in its first minute, with a fix, instead of hours in."""

from __future__ import annotations

import logging
import resource

import torch
from omegaconf import DictConfig

from emotion.data.dataset import Batch
from emotion.data.prosody import PROSODY_FEATURES
from emotion.models.encoder import SpeechEncoder
from emotion.models.model import MambaEMA
from emotion.training.metrics import ccc_loss

log = logging.getLogger(__name__)

# Leave this share of the card free: the allocator's fragmentation and the CUDA context need room.
HEADROOM = 0.05


class PreflightError(RuntimeError):
    pass


def worst_case_batch(
    batch_size: int, seconds: float, sample_rate: int, encoder: SpeechEncoder, n_dims: int, cached: bool = False
) -> Batch:
    """A batch of `batch_size` utterances of `seconds` each, the longest a training crop can be: waves, or
    the encoder states that the feature cache would give (`cached`)."""
    generator = torch.Generator().manual_seed(0)
    n_samples = int(seconds * sample_rate)
    n_frames = encoder.grid.count(n_samples)
    if cached:
        speech = torch.randn(batch_size, n_frames, len(encoder.layers), encoder.hidden_size, generator=generator)
        speech, lengths = speech.half(), torch.full((batch_size,), n_frames)
    else:
        speech, lengths = torch.randn(batch_size, n_samples, generator=generator), torch.full((batch_size,), n_samples)
    return Batch(
        speech=speech,
        speech_lengths=lengths,
        prosody=torch.randn(batch_size, n_frames, len(PROSODY_FEATURES), generator=generator),
        labels=torch.rand(batch_size, n_dims, generator=generator),
        indices=torch.arange(batch_size),
    )


def preflight(model: MambaEMA, cfg: DictConfig, device: torch.device, autocast, cached: bool = False) -> float:
    """Run forward + backward on the worst-case batch and return the peak memory in GB (GPU, or the process's
    RSS on CPU). `cached`: the model reads encoder states from the feature cache. Random generators and
    gradients are left as they were, so training is unchanged."""
    batch = worst_case_batch(
        cfg.data.batch_size, cfg.data.max_seconds, cfg.data.sample_rate, model.encoder, len(model.heads), cached
    ).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model.train()
            with autocast:
                pred = model(batch.speech, batch.speech_lengths, batch.prosody)
            ccc_loss(pred, batch.labels).backward()
    except torch.cuda.OutOfMemoryError as err:
        properties = torch.cuda.get_device_properties(device)
        needed = torch.cuda.max_memory_allocated(device) / 1e9
        raise PreflightError(
            memory_advice(cfg, needed, properties.total_memory / 1e9, properties.name, "the preflight step ran out")
        ) from err
    finally:
        model.zero_grad(set_to_none=True)
    if device.type != "cuda":
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        log.info("preflight: a step on %d × %g s peaks at %.2f GB RSS", len(batch), cfg.data.max_seconds, peak_gb)
        return peak_gb
    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
    # AdamW's two moments are allocated at the first optimizer step, which the preflight does not take.
    optimizer_gb = 2 * 4 * sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e9
    properties = torch.cuda.get_device_properties(device)
    total_gb = properties.total_memory / 1e9
    needed = peak_gb + optimizer_gb
    log.info(
        "preflight: a step on %d × %g s needs %.1f GB (%.1f peak + %.1f optimizer state) of %.1f GB on %s",
        len(batch),
        cfg.data.max_seconds,
        needed,
        peak_gb,
        optimizer_gb,
        total_gb,
        properties.name,
    )
    if needed > (1 - HEADROOM) * total_gb:
        raise PreflightError(memory_advice(cfg, needed, total_gb, properties.name, "will not fit"))
    torch.cuda.reset_peak_memory_stats(device)  # metrics.json reports the training's own peak
    return peak_gb


def memory_advice(cfg: DictConfig, needed_gb: float, total_gb: float, device_name: str, what: str) -> str:
    """What to change when a job's memory does not fit its card, in this job's own numbers."""
    batch, accumulation = cfg.data.batch_size, cfg.trainer.accumulation_steps
    smaller = max(1, batch // 2)
    fixes = [
        f"data.batch_size={smaller} trainer.accumulation_steps={accumulation * batch // smaller} (the same "
        f"utterances per optimizer step, but not the same step: the CCC loss is computed per micro-batch of "
        f"{smaller}, and a CCC over {smaller} utterances is a noisier estimate than over {batch})",
        f"a shorter data.max_seconds (now {cfg.data.max_seconds})",
    ]
    if not cfg.encoder.freeze and not cfg.model.grad_checkpointing:
        fixes.append("model.grad_checkpointing=true")
    fixes += ["model=conservative", "encoder.freeze=true"]
    return (
        f"{what} on {device_name}: {needed_gb:.1f} GB of {total_gb:.1f} GB with model={cfg.model.profile}, "
        f"data.batch_size={batch}, data.max_seconds={cfg.data.max_seconds}, encoder.freeze={cfg.encoder.freeze}. "
        f"Try {'; or '.join(fixes)}."
    )
