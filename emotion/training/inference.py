"""A model's outputs over a dataset: the one path from batches to predictions that validation, test,
evaluate.py and predict.py share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from emotion.cpu import worker_init
from emotion.data.sampler import CorpusDraws, LengthBucketSampler
from emotion.features.dataset import UtteranceDataset, collate
from emotion.training.devices import autocast


@dataclass(frozen=True)
class Outputs:
    """Per segment of a dataset, in its segment order: predictions (segments, dimensions) on the [0, 1] scale,
    and, when asked for, the pooled vectors (segments, features)."""

    predictions: np.ndarray
    embeddings: np.ndarray | None = None


@torch.no_grad()
def segment_outputs(
    model, loader: DataLoader, device, precision: str, embeddings: bool = False, show_bar: bool = False
) -> Outputs:
    model.eval()
    n_segments = len(loader.dataset)
    predictions, vectors = np.zeros((n_segments, len(model.heads))), None
    for batch in tqdm(loader, desc="predict", leave=False, disable=not show_bar):
        batch = batch.to(device)
        with autocast(device, precision):
            if embeddings:
                summary = model.embed(batch.speech, batch.speech_lengths, batch.prosody, functionals=batch.functionals)
                out = model.predict_from(summary)
            else:
                out = model(batch.speech, batch.speech_lengths, batch.prosody, functionals=batch.functionals)
        rows = batch.segments.cpu().numpy()
        predictions[rows] = out.float().cpu().numpy()
        if embeddings:
            if vectors is None:
                vectors = np.zeros((n_segments, summary.shape[1]), dtype=np.float32)
            vectors[rows] = summary.float().cpu().numpy()
    return Outputs(predictions, vectors)


def item_means(values: np.ndarray, dataset: UtteranceDataset) -> np.ndarray:
    """Per item, the mean of its segments' `values`, weighted by their lengths: a long item evaluated in
    chunks gets the mean of its chunks."""
    items = np.array([segment.item for segment in dataset.segments])
    return group_means(values, items, np.array(dataset.segment_samples, dtype=float), len(dataset.items))


def group_means(values: np.ndarray, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the weighted mean of its rows of `values` (rows, ...); NaN for a group without rows."""
    flat = values.reshape(len(values), math.prod(values.shape[1:]))  # -1 cannot be inferred for no rows
    total, weight = np.zeros((n_groups, flat.shape[1])), np.zeros((n_groups, 1))
    np.add.at(total, groups, flat * weights[:, None])
    np.add.at(weight, groups, weights[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / weight).reshape(n_groups, *values.shape[1:])


def predict(model, loader: DataLoader, device, precision: str) -> np.ndarray:
    """Predictions per item (items, dimensions) on the [0, 1] scale, in the dataset's item order."""
    return item_means(segment_outputs(model, loader, device, precision).predictions, loader.dataset)


def batch_loader(
    dataset: UtteranceDataset,
    batch_size: int,
    *,
    workers: int,
    device: torch.device,
    shuffle: bool = False,
    seed: int = 0,
    pool_batches: int = 32,
    max_batch_samples: int | None = None,
    draws: CorpusDraws | None = None,
) -> DataLoader:
    """Batches of similar lengths: shuffled (seeded) for training, longest first otherwise, where no batch
    holds more than `max_batch_samples` samples of audio (padding included). `draws`: see LengthBucketSampler."""
    batches = LengthBucketSampler(
        dataset.lengths,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        pool_batches=pool_batches,
        max_batch_samples=max_batch_samples,
        draws=draws,
    )
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Its own generator: worker seeds must not draw on the global one, or a resumed run would diverge.
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=worker_init,
    )
