"""From items to padded batches: audio, prosody contours on the encoder's frame grid, normalised labels."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion.data.audio import load_audio
from emotion.data.corpus import Item, LabelScale
from emotion.data.prosody import FrameGrid
from emotion.data.prosody_cache import load_contours


@dataclass
class Batch:
    waves: torch.Tensor  # (B, samples), zero-padded
    wave_lengths: torch.Tensor  # (B,)
    prosody: torch.Tensor  # (B, frames, features), zero-padded
    labels: torch.Tensor  # (B, dimensions), normalised to [0, 1]
    indices: torch.Tensor  # (B,) the item each row comes from (several rows when a long item is chunked)

    def to(self, device: torch.device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True), so that `to(cuda)` can copy asynchronously."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Segment:
    """A stretch of an item: the whole of it, or one chunk of a long one. `start` is on the frame grid."""

    item: int
    start: int
    length: int | None  # samples; None: to the end


class UtteranceDataset(Dataset):
    """Segments of items, decoded on demand, with their prosody contours sliced from the cache.

    Training (`crop_seconds` set) takes one segment per item and crops it at a random offset that
    depends only on (seed, epoch, index), so any worker layout gives the same crops. Evaluation
    (`chunk_seconds` set) sees items whole, split into equal chunks only when longer than that.
    Offsets are multiples of the encoder's hop, so a crop's frames are exactly frames of the whole file.
    """

    def __init__(
        self,
        items: list[Item],
        durations: list[float],
        prosody_files: list[Path],
        scale: LabelScale,
        grid: FrameGrid,
        sample_rate: int,
        crop_seconds: float | None = None,
        chunk_seconds: float | None = None,
        seed: int = 0,
    ):
        self.items = items
        self.prosody_files = prosody_files
        self.scale = scale
        self.grid = grid
        self.sample_rate = sample_rate
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.seed = seed
        self.epoch = 0
        n_samples = [round(seconds * sample_rate) for seconds in durations]
        self.segments = _segments(n_samples, chunk_seconds, sample_rate, grid.hop)
        self.lengths = [
            min(n_samples[s.item] - s.start, s.length or math.inf, self.crop_samples or math.inf) for s in self.segments
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> dict:
        segment = self.segments[index]
        wave = load_audio(self.items[segment.item].path, self.sample_rate)
        start, stop = segment.start, len(wave) if segment.length is None else segment.start + segment.length
        if self.crop_samples is not None and stop - start > self.crop_samples:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            start += self.grid.hop * int(rng.integers(0, (stop - start - self.crop_samples) // self.grid.hop + 1))
            stop = start + self.crop_samples
        first_frame = start // self.grid.hop
        contours = load_contours(self.prosody_files[segment.item])
        return {
            "wave": wave[start:stop],
            "prosody": contours[first_frame : first_frame + self.grid.count(stop - start)],
            "labels": self.scale.normalise(self.items[segment.item].labels),
            "index": segment.item,
        }


def _segments(n_samples: list[int], chunk_seconds: float | None, sample_rate: int, hop: int) -> list[Segment]:
    if chunk_seconds is None:
        return [Segment(item, 0, None) for item in range(len(n_samples))]
    segments = []
    for item, total in enumerate(n_samples):
        pieces = math.ceil(total / (chunk_seconds * sample_rate))
        if pieces <= 1:
            segments.append(Segment(item, 0, None))
            continue
        chunk = math.ceil(total / pieces / hop) * hop
        segments += [Segment(item, start, chunk) for start in range(0, total, chunk)]
    return segments


def collate(examples: list[dict]) -> Batch:
    lengths = [len(example["wave"]) for example in examples]
    frames = [len(example["prosody"]) for example in examples]
    n_features = examples[0]["prosody"].shape[1]
    waves = torch.zeros(len(examples), max(lengths))
    prosody = torch.zeros(len(examples), max(frames), n_features)
    for row, example in enumerate(examples):
        waves[row, : lengths[row]] = torch.from_numpy(example["wave"])
        prosody[row, : frames[row]] = torch.from_numpy(example["prosody"])
    return Batch(
        waves=waves,
        wave_lengths=torch.tensor(lengths),
        prosody=prosody,
        labels=torch.from_numpy(np.stack([example["labels"] for example in examples])),
        indices=torch.tensor([example["index"] for example in examples]),
    )
