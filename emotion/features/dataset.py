"""From items to padded batches: audio (or a frozen encoder's cached states), acoustic features on the encoder's
frame grid and of the whole utterance, normalised labels."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion.data.audio import load_audio
from emotion.data.corpus import Item
from emotion.features.acoustic_cache import AcousticArrays, AcousticFiles
from emotion.features.encoder_cache import FeatureStore, Piece
from emotion.features.normalisation import OwnStatistics
from emotion.models.grid import FrameGrid


@dataclass
class Batch:
    speech: torch.Tensor  # zero-padded waves (B, samples), or cached encoder states (B, frames, layers, hidden)
    speech_lengths: torch.Tensor  # (B,) samples, or frames
    prosody: torch.Tensor  # (B, frames, features): the acoustic frames of the prosody branch, zero-padded
    labels: torch.Tensor  # (B, dimensions), normalised to [0, 1]; NaN where the item's corpus lacks a dimension
    indices: torch.Tensor  # (B,) the item each row comes from (several rows when a long item is chunked)
    # (B, 2) first frame and frame count of each row's training crop, taken from the states of the whole
    # wave once a frozen encoder has run on it; None: the speech is what the model sees.
    crop: torch.Tensor | None = None
    functionals: torch.Tensor | None = None  # (B, features) of each row's whole utterance, when the model uses them
    segments: torch.Tensor | None = None  # (B,) the dataset's segment each row is

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda tensor: tensor.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True), so that `to(cuda)` can copy asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, function) -> Batch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{name: None if value is None else function(value) for name, value in values.items()})

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Segment:
    """A stretch of an item: the whole of it, or one chunk of a long one. `start` is on the frame grid."""

    item: int
    start: int
    length: int | None  # samples; None: to the end


class UtteranceDataset(Dataset):
    """Segments of items with their acoustic features: waves decoded on demand, or, given `features`, a frozen
    encoder's states read from the feature cache. Acoustic features come from their cache (`acoustic`, one
    per item), standardised by each item's speaker or corpus first with `own` statistics. `labels`: the
    items' labels on [0, 1] (Corpus.labels); None for unlabelled recordings.

    Items longer than `chunk_seconds` are split into equal chunks: evaluation averages their predictions,
    training crops each. Training (`crop_seconds` set) crops a segment at a random offset that depends only
    on (seed, epoch, index), so any worker layout gives the same crops. Offsets are multiples of the
    encoder's hop, so a crop's frames are exactly frames of the whole file.

    How a crop is taken depends on the encoder. A fine-tuned one sees the cropped wave alone (its gradients
    must fit in memory). A frozen one is cropped in frame space, from the states of the whole segment, so
    that a crop keeps the context it has in evaluation: cached states are cropped here; without the cache
    (`crop_after_encoding`) the whole wave is returned with its crop window, which the model applies after
    encoding. Both give the same crops, so the feature cache changes speed only.

    `segments` replaces the chunks with stretches of one's own (prediction's windows, or the segments a
    resumed prediction has left); `waves` gives decoded audio for items that are not files.
    """

    def __init__(
        self,
        items: list[Item],
        durations: list[float],
        acoustic: list[AcousticFiles | AcousticArrays],
        labels: np.ndarray | None,
        grid: FrameGrid,
        sample_rate: int,
        chunk_seconds: float,
        crop_seconds: float | None = None,
        seed: int = 0,
        features: FeatureStore | None = None,
        crop_after_encoding: bool = False,
        own: OwnStatistics | None = None,
        segments: list[Segment] | None = None,
        waves: list[np.ndarray] | None = None,
    ):
        self.items = items
        self.acoustic = acoustic
        self.own = own
        self.targets = np.zeros((len(items), 0), np.float32) if labels is None else np.asarray(labels, np.float32)
        self.grid = grid
        self.sample_rate = sample_rate
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.seed = seed
        self.features = features
        self.crop_after_encoding = crop_after_encoding
        self.epoch = 0
        self.waves = waves
        self.n_samples = [round(seconds * sample_rate) for seconds in durations]
        if segments is None:
            segments = chunks(self.n_samples, chunk_seconds, sample_rate, grid.hop)
        self._set_segments(segments)

    def _set_segments(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.segment_samples = [_length(segment, self.n_samples) for segment in segments]
        self.lengths = [min(n, self.crop_samples or math.inf) for n in self.segment_samples]

    def with_segments(self, segments: list[Segment]) -> UtteranceDataset:
        """The same items and features, cut into `segments` instead."""
        other = copy.copy(self)
        other._set_segments(segments)
        return other

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.segments)

    def labels(self) -> np.ndarray:
        """Every item's labels (items, dimensions), normalised to [0, 1]."""
        return self.targets

    def piece(self, index: int) -> Piece:
        """The audio that segment `index` is: what the feature cache keeps states of."""
        segment = self.segments[index]
        item = self.items[segment.item]
        if item.span is not None:  # its states would be keyed by its file, from the file's start
            raise ValueError(f"{item.id}: a clip of a file has no place in the encoder feature cache")
        return Piece(item.path, segment.start, segment.length)

    def __getitem__(self, index: int) -> dict:
        segment = self.segments[index]
        example = {"labels": self.targets[segment.item], "index": segment.item, "segment": index}
        first_frame = self.segments[index].start // self.grid.hop
        if self.features:
            layers = self.features.open(self.piece(index))
            shift, n_frames = self._frame_crop(index, len(layers[0]))
            example["speech"] = np.stack([layer[shift : shift + n_frames] for layer in layers], axis=1)
        elif self.crop_after_encoding and self.crop_samples is not None:
            example["speech"] = self._segment_wave(index)
            shift, n_frames = self._frame_crop(index, self.grid.count(len(example["speech"])))
            example["crop"] = (shift, n_frames)
        else:
            example["speech"], shift = self._cropped_wave(index)
            n_frames = self.grid.count(len(example["speech"]))
        frames, functionals = self._acoustic_features(segment.item)
        example["prosody"] = frames[first_frame + shift : first_frame + shift + n_frames]
        if functionals is not None:
            example["functionals"] = functionals
        return example

    def _acoustic_features(self, item: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The item's acoustic frames and functionals (None when not used), standardised with its speaker's
        or corpus's own statistics, given `own`."""
        cached, of = self.acoustic[item], self.items[item]
        frames, functionals = cached.read_frames(), cached.read_functionals()
        if self.own:
            frames = self.own.frames(of, frames)
            if functionals is not None:
                functionals = self.own.functionals(of, functionals)
        return frames, functionals

    def _segment_wave(self, index: int) -> np.ndarray:
        segment = self.segments[index]
        if self.waves is None:  # only the segment is read: a window of an hour-long file stays small
            return load_audio(self.items[segment.item].audio, self.sample_rate, segment.start, segment.length)
        wave = self.waves[segment.item]
        return wave[segment.start : None if segment.length is None else segment.start + segment.length]

    def _cropped_wave(self, index: int) -> tuple[np.ndarray, int]:
        """The segment's samples, cropped; and the crop's offset in frames."""
        wave = self._segment_wave(index)
        if self.crop_samples is None or len(wave) <= self.crop_samples:
            return wave, 0
        shift = self._crop_shift(index, (len(wave) - self.crop_samples) // self.grid.hop)
        return wave[shift * self.grid.hop :][: self.crop_samples], shift

    def _frame_crop(self, index: int, total_frames: int) -> tuple[int, int]:
        """The training crop of a segment of `total_frames` states: its offset and its length in frames."""
        if self.crop_samples is None:
            return 0, total_frames
        n_frames = min(total_frames, self.grid.count(self.crop_samples))
        return self._crop_shift(index, total_frames - n_frames), n_frames

    def _crop_shift(self, index: int, room: int) -> int:
        """A random crop offset in [0, room] hops, the same for any worker layout and resumed runs."""
        if room <= 0:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(0, room + 1))


def _length(segment: Segment, n_samples: list[int]) -> int:
    return min(n_samples[segment.item] - segment.start, segment.length or math.inf)


def chunks(n_samples: list[int], chunk_seconds: float, sample_rate: int, hop: int) -> list[Segment]:
    """Each item whole, or, when longer than `chunk_seconds`, in equal chunks on the frame grid."""
    segments = []
    for item, total in enumerate(n_samples):
        pieces = math.ceil(total / (chunk_seconds * sample_rate))
        if pieces <= 1:
            segments.append(Segment(item, 0, None))
            continue
        chunk = math.ceil(total / pieces / hop) * hop
        segments += [Segment(item, start, chunk) for start in range(0, total, chunk)]
    return segments


def windows(
    n_samples: list[int], window_seconds: float, hop_seconds: float, min_seconds: float, sample_rate: int, hop: int
) -> list[Segment]:
    """Windows of `window_seconds` every `hop_seconds` over each item, on the frame grid; the last one of an
    item may be shorter, and is kept when it lasts at least `min_seconds`."""
    window, step = (max(hop, round(seconds * sample_rate / hop) * hop) for seconds in (window_seconds, hop_seconds))
    segments = []
    for item, total in enumerate(n_samples):
        for start in range(0, total, step):
            if start > 0 and total - start < min_seconds * sample_rate:
                break
            segments.append(Segment(item, start, window))
            if start + window >= total:
                break
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
        segments=torch.tensor([example["segment"] for example in examples]),
        crop=torch.tensor([example["crop"] for example in examples]) if "crop" in examples[0] else None,
        functionals=(
            torch.from_numpy(np.stack([example["functionals"] for example in examples]))
            if "functionals" in examples[0]
            else None
        ),
    )
