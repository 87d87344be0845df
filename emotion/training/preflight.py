"""Memory preflight: before any long work, every phase of a job runs once on its worst-case batch (a training
step, an evaluation batch, a batch of the feature-cache build), so that a batch that will not fit stops the
job in its first minute, with a fix, instead of at the end of epoch 1 or hours in.

Evaluation and the cache build see whole utterances, up to `data.eval_chunk_seconds`, and WavLM's attention
grows with the square of their length: their batches are cut by their total length rather than by count. The
cut starts at a training batch's audio and is halved until the phase's worst batch fits; only an utterance
that does not fit even alone stops the job.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from emotion.data.sampler import capped_batches
from emotion.features.dataset import Batch, UtteranceDataset
from emotion.models.model import MambaEMA
from emotion.settings import DataSettings, JobSettings
from emotion.training.devices import peak_memory
from emotion.training.metrics import ccc_loss

log = logging.getLogger(__name__)

# Leave this share of the card free: the allocator's fragmentation and the CUDA context need room.
HEADROOM = 0.05


class PreflightError(RuntimeError):
    pass


@dataclass(frozen=True)
class WorstBatch:
    """The largest batch of one phase: `rows` inputs of `samples` samples of audio each."""

    phase: str  # training step | evaluation | feature cache build
    rows: int
    samples: int
    inputs: str  # waves | states (from the feature cache) | whole waves (a frozen encoder's crops follow)
    crop_samples: int | None = None  # whole waves: the crop taken from their states

    def describe(self, sample_rate: int) -> str:
        return f"{self.phase} ({self.rows} × {self.samples / sample_rate:.1f} s of {self.inputs})"


@dataclass(frozen=True)
class BatchCuts:
    """The most audio, in samples, that one batch of each phase over whole utterances may hold."""

    evaluation: int
    cache_build: int

    @classmethod
    def first(cls, data: DataSettings) -> BatchCuts:
        """Both at the first cut, as when no preflight runs."""
        return cls(evaluation=first_batch_cap(data), cache_build=first_batch_cap(data))


def first_batch_cap(data: DataSettings) -> int:
    """The first cut of batches over whole utterances, in samples: a training batch's audio."""
    return int(data.batch_size * data.max_seconds * data.sample_rate)


def training_worst(train: UtteranceDataset, rows: int, cached: bool) -> WorstBatch:
    """`rows`: the most items a training batch holds."""
    longest = max(train.segment_samples)
    crop = min(longest, train.crop_samples or longest)
    if cached:
        return WorstBatch("training step", rows, crop, "states")
    if train.crop_after_encoding:
        return WorstBatch("training step", rows, longest, "whole waves", crop_samples=crop)
    return WorstBatch("training step", rows, crop, "waves")


def capped_worst(lengths: list[int], batch_size: int, cap: int, phase: str, inputs: str) -> list[WorstBatch]:
    """The batches that strain memory most when `lengths` are cut longest first under `cap`: the one with
    the longest item, and the one with the most audio in all."""
    batches = capped_batches(lengths, batch_size, cap)
    widest = max(batches, key=lambda batch: len(batch) * lengths[batch[0]])
    unique = dict.fromkeys(map(tuple, [batches[0], widest]))
    return [WorstBatch(phase, len(batch), lengths[batch[0]], inputs) for batch in unique]


def synthetic_batch(worst: WorstBatch, model: MambaEMA) -> Batch:
    """Random inputs of the worst batch's shape: waves, or the encoder states the feature cache would give."""
    encoder, rows = model.encoder, worst.rows
    generator = torch.Generator().manual_seed(0)
    n_frames = encoder.grid.count(worst.crop_samples or worst.samples)
    crop = None
    if worst.inputs == "states":
        speech = torch.randn(rows, n_frames, len(encoder.layers), encoder.hidden_size, generator=generator).half()
        lengths = torch.full((rows,), n_frames)
    else:
        speech, lengths = torch.randn(rows, worst.samples, generator=generator), torch.full((rows,), worst.samples)
        if worst.crop_samples is not None:
            crop = torch.tensor([[0, n_frames]] * rows)
    functionals = None
    if model.functionals is not None:
        functionals = torch.randn(rows, len(model.functionals_norm.mean), generator=generator)
    return Batch(
        speech=speech,
        speech_lengths=lengths,
        prosody=torch.randn(rows, n_frames, len(model.prosody_norm.mean), generator=generator),
        labels=torch.rand(rows, len(model.heads), generator=generator),
        indices=torch.arange(rows),
        crop=crop,
        functionals=functionals,
    )


class Preflight:
    """Runs worst-case batches of `model` on `device` and says whether they fit."""

    def __init__(self, model: MambaEMA, settings: JobSettings, device: torch.device, autocast):
        self.model, self.settings, self.device, self.autocast = model, settings, device, autocast
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # AdamW's two moments, allocated at the first step and kept through training and evaluation.
        self.optimizer_gb = 2 * 4 * trainable / 1e9
        if device.type == "cuda":
            properties = torch.cuda.get_device_properties(device)
            self.card, self.card_gb = properties.name, properties.total_memory / 1e9
        else:
            self.card, self.card_gb = "CPU", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9

    def check(self, datasets: tuple[UtteranceDataset, ...], training_rows: int, cached: bool) -> BatchCuts:
        """Every phase, worst case first; returns the cuts under which evaluation and cache-build batches fit.
        With `cached`, the feature cache is built first (encoder on the device) and training reads states
        (encoder on the CPU): each phase is checked where it will run. The encoder ends on the device."""
        train, *evaluated = datasets
        encoder = self.model.encoder.wavlm
        if cached:
            encoder.to("cpu")
        self.require(training_worst(train, training_rows, cached))
        eval_lengths = [n for dataset in evaluated for n in dataset.segment_samples]
        evaluation = self._fitting_cap(eval_lengths, "evaluation", "states" if cached else "waves")
        if not cached:
            return BatchCuts(evaluation=evaluation, cache_build=evaluation)
        encoder.to(self.device)
        build_lengths = [n for dataset in datasets for n in dataset.segment_samples]
        return BatchCuts(evaluation, cache_build=self._fitting_cap(build_lengths, "feature cache build", "waves"))

    def _fitting_cap(self, lengths: list[int], phase: str, inputs: str) -> int:
        """Halve the cut until the worst batches of `phase` fit; one utterance alone must (and, where
        halving cannot help, the first cut)."""
        cap = first_batch_cap(self.settings.data)
        while True:
            for worst in capped_worst(lengths, self.settings.data.batch_size, cap, phase, inputs):
                if worst.rows == 1 or not self.halving_helps:
                    self.require(worst)
                elif not self.fits(self.measure(worst)):
                    cap //= 2
                    log.info(
                        "preflight: %s does not fit; cutting its batches at %.0f s of audio",
                        worst.describe(self.settings.data.sample_rate),
                        cap / self.settings.data.sample_rate,
                    )
                    break
            else:
                return cap

    @property
    def halving_helps(self) -> bool:
        """On the CPU the measure is the job's peak RSS so far, which a smaller batch cannot lower."""
        return self.device.type == "cuda"

    def measure(self, worst: WorstBatch) -> float:
        """GB that the phase needs: its peak (GPU, or the process's RSS on CPU), plus the optimizer's state
        for phases that run while it exists. Random generators and gradients are left as they were."""
        batch = synthetic_batch(worst, self.model).to(self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with torch.random.fork_rng(devices=[self.device] if cuda else []):
                self._run(worst, batch)
        except torch.cuda.OutOfMemoryError:
            return float("inf")
        finally:
            self.model.zero_grad(set_to_none=True)
        if not cuda:
            needed = peak_memory(self.device)["peak_mem_gb"]  # the job's peak RSS so far, not an earlier job's
        else:
            needed = torch.cuda.max_memory_allocated(self.device) / 1e9
            needed += self.optimizer_gb if worst.phase != "feature cache build" else 0.0
            torch.cuda.reset_peak_memory_stats(self.device)  # metrics.json reports the training's own peak
        log.info(
            "preflight: %s needs %.2f GB%s",
            worst.describe(self.settings.data.sample_rate),
            needed,
            "" if cuda else " (the process's peak RSS)",
        )
        return needed

    def _run(self, worst: WorstBatch, batch: Batch) -> None:
        if worst.phase == "feature cache build":
            with torch.no_grad(), self.autocast:
                self.model.encoder.hidden_states(batch.speech, batch.speech_lengths)
            return
        training = worst.phase == "training step"
        self.model.train(training)
        with torch.set_grad_enabled(training), self.autocast:
            pred = self.model(batch.speech, batch.speech_lengths, batch.prosody, batch.crop, batch.functionals)
        if training:
            ccc_loss(pred, batch.labels).backward()

    def fits(self, needed_gb: float) -> bool:
        """Within the card (or the machine's memory) less its headroom."""
        return needed_gb <= (1 - HEADROOM) * self.card_gb

    def require(self, worst: WorstBatch) -> None:
        """Measure `worst`; stop the job with advice when it does not fit."""
        needed_gb = self.measure(worst)
        if not self.fits(needed_gb):
            what = f"the worst {worst.describe(self.settings.data.sample_rate)} will not fit"
            raise PreflightError(memory_advice(self.settings, needed_gb, self.card_gb, self.card, what))


def memory_advice(settings: JobSettings, needed_gb: float, total_gb: float, device_name: str, what: str) -> str:
    """What to change when a job's memory does not fit its card, in this job's own numbers."""
    batch, accumulation = settings.data.batch_size, settings.trainer.accumulation_steps
    smaller = max(1, batch // 2)
    fixes = [
        f"data.batch_size={smaller} trainer.accumulation_steps={accumulation * batch // smaller} (the same "
        f"utterances per optimizer step, but not the same step: the CCC loss is computed per micro-batch of "
        f"{smaller}, and a CCC over {smaller} utterances is a noisier estimate than over {batch})",
        f"a shorter data.max_seconds (now {settings.data.max_seconds})",
        f"a shorter data.eval_chunk_seconds (now {settings.data.eval_chunk_seconds}; evaluation and the feature "
        "cache see utterances whole up to it)",
    ]
    if not settings.encoder.freeze and not settings.model.grad_checkpointing:
        fixes.append("model.grad_checkpointing=true")
    if settings.encoder.freeze and not settings.encoder.feature_cache:
        fixes.append("encoder.feature_cache=true (training then reads states instead of running the encoder)")
    fixes += ["model=conservative", "encoder.freeze=true"]
    needed = "more than the card has" if needed_gb == float("inf") else f"{needed_gb:.1f} GB"
    return (
        f"{what} on {device_name}: {needed} of {total_gb:.1f} GB with model={settings.model.profile}, "
        f"data.batch_size={batch}, data.max_seconds={settings.data.max_seconds}, "
        f"encoder.freeze={settings.encoder.freeze}. "
        f"Try {'; or '.join(fixes)}."
    )
