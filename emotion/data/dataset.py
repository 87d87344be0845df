"""From items to padded batches: audio (or a frozen encoder's cached states), prosody contours on the encoder's
frame grid, normalised labels."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion.data.audio import load_audio
from emotion.data.corpus import Item, LabelScale
from emotion.data.feature_cache import FeatureStore, Piece
from emotion.data.prosody import FrameGrid
from emotion.data.prosody_cache import load_contours


@dataclass
class Batch:
    speech: torch.Tensor  # zero-padded waves (B, samples), or cached encoder states (B, frames, layers, hidden)
    speech_lengths: torch.Tensor  # (B,) samples, or frames
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
    """Segments of items with their prosody contours: waves decoded on demand, or, given `features`, a frozen
    encoder's states read from the feature cache.

    Items longer than `chunk_seconds` are split into equal chunks: evaluation averages their predictions,
    training crops each. Training (`crop_seconds` set) crops a segment at a random offset that depends only
    on (seed, epoch, index), so any worker layout gives the same crops. Offsets are multiples of the
    encoder's hop, so a crop's frames are exactly frames of the whole file; cached states are cropped in
    frame space, from the states of the whole segment.
    """

    def __init__(
        self,
        items: list[Item],
        durations: list[float],
        prosody_files: list[Path],
        scale: LabelScale,
        grid: FrameGrid,
        sample_rate: int,
        chunk_seconds: float,
        crop_seconds: float | None = None,
        seed: int = 0,
        features: FeatureStore | None = None,
    ):
        self.items = items
        self.prosody_files = prosody_files
        self.scale = scale
        self.grid = grid
        self.sample_rate = sample_rate
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.seed = seed
        self.features = features
        self.epoch = 0
        n_samples = [round(seconds * sample_rate) for seconds in durations]
        self.segments = _segments(n_samples, chunk_seconds, sample_rate, grid.hop)
        self.segment_samples = [min(n_samples[s.item] - s.start, s.length or math.inf) for s in self.segments]
        self.lengths = [min(n, self.crop_samples or math.inf) for n in self.segment_samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.segments)

    def piece(self, index: int) -> Piece:
        """The audio that segment `index` is: what the feature cache keeps states of."""
        segment = self.segments[index]
        return Piece(self.items[segment.item].path, segment.start, segment.length)

    def __getitem__(self, index: int) -> dict:
        segment = self.segments[index]
        speech, first_frame = self._cached_states(index) if self.features else self._wave(index)
        n_frames = len(speech) if self.features else self.grid.count(len(speech))
        contours = load_contours(self.prosody_files[segment.item])
        return {
            "speech": speech,
            "prosody": contours[first_frame : first_frame + n_frames],
            "labels": self.scale.normalise(self.items[segment.item].labels),
            "index": segment.item,
        }

    def _wave(self, index: int) -> tuple[np.ndarray, int]:
        """The segment's samples, cropped; and the index of its first frame in the whole file."""
        segment = self.segments[index]
        wave = load_audio(self.items[segment.item].path, self.sample_rate)
        start, stop = segment.start, len(wave) if segment.length is None else segment.start + segment.length
        if self.crop_samples is not None and stop - start > self.crop_samples:
            start += self.grid.hop * self._crop_shift(index, (stop - start - self.crop_samples) // self.grid.hop)
            stop = start + self.crop_samples
        return wave[start:stop], start // self.grid.hop

    def _cached_states(self, index: int) -> tuple[np.ndarray, int]:
        """The segment's encoder states (frames, layers, hidden), cropped; and the index of its first frame."""
        piece = self.piece(index)
        layers = self.features.open(piece)
        total = len(layers[0])
        crop_frames = total if self.crop_samples is None else min(total, self.grid.count(self.crop_samples))
        shift = self._crop_shift(index, total - crop_frames) if crop_frames < total else 0
        states = np.stack([layer[shift : shift + crop_frames] for layer in layers], axis=1)
        return states, piece.start // self.grid.hop + shift

    def _crop_shift(self, index: int, room: int) -> int:
        """A random crop offset in [0, room] hops, the same for any worker layout and resumed runs."""
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(0, room + 1))


def _segments(n_samples: list[int], chunk_seconds: float, sample_rate: int, hop: int) -> list[Segment]:
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
    lengths = [len(example["speech"]) for example in examples]
    frames = [len(example["prosody"]) for example in examples]
    first = torch.from_numpy(examples[0]["speech"])
    speech = torch.zeros(len(examples), max(lengths), *first.shape[1:], dtype=first.dtype)
    prosody = torch.zeros(len(examples), max(frames), examples[0]["prosody"].shape[1])
    for row, example in enumerate(examples):
        speech[row, : lengths[row]] = torch.from_numpy(example["speech"])
        prosody[row, : frames[row]] = torch.from_numpy(example["prosody"])
    return Batch(
        speech=speech,
        speech_lengths=torch.tensor(lengths),
        prosody=prosody,
        labels=torch.from_numpy(np.stack([example["labels"] for example in examples])),
        indices=torch.tensor([example["index"] for example in examples]),
    )
