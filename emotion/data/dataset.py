"""From items to padded batches: audio, prosody contours on the encoder's frame grid, normalised labels."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion.data.audio import load_audio, random_crop
from emotion.data.corpus import Item, LabelScale
from emotion.data.prosody import FrameGrid, prosody_contours


@dataclass
class Batch:
    waves: torch.Tensor  # (B, samples), zero-padded
    wave_lengths: torch.Tensor  # (B,)
    prosody: torch.Tensor  # (B, frames, features), zero-padded
    labels: torch.Tensor  # (B, dimensions), normalised to [0, 1]
    indices: torch.Tensor  # (B,) positions in the dataset, to find the items again

    def to(self, device: torch.device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True), so that `to(cuda)` can copy asynchronously."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return len(self.indices)


class UtteranceDataset(Dataset):
    """Items decoded on demand. Training crops long utterances at a random offset that depends only on
    (seed, epoch, index), so any worker layout gives the same crops."""

    def __init__(
        self,
        items: list[Item],
        scale: LabelScale,
        grid: FrameGrid,
        sample_rate: int,
        crop_seconds: float | None = None,
        seed: int = 0,
    ):
        self.items = items
        self.scale = scale
        self.grid = grid
        self.sample_rate = sample_rate
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        wave = load_audio(item.path, self.sample_rate)
        if self.crop_samples is not None:
            wave = random_crop(wave, self.crop_samples, np.random.default_rng([self.seed, self.epoch, index]))
        return {
            "wave": wave,
            "prosody": prosody_contours(wave, self.sample_rate, self.grid),
            "labels": self.scale.normalise(item.labels),
            "index": index,
        }


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
