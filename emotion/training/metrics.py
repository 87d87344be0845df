"""Concordance correlation coefficient: a split's scores, and the training loss on a batch."""

from __future__ import annotations

import numpy as np
import torch

from emotion.data.corpus import DIMENSIONS, Corpus, Item
from emotion.scores import EPSILON, ccc


def batch_ccc(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """emotion.scores.ccc in torch, along the first axis (items), differentiable: the CCC of the batch at hand,
    which the training loss needs. Not a score: scores come from emotion.scores.ccc over a whole split
    (ccc_scores), and a split's CCC is not the mean of its batches'.

    >>> round(batch_ccc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 4.0])).item(), 4)  # as ccc's
    0.5714
    """
    pred_mean, true_mean = pred.mean(dim=0), true.mean(dim=0)
    pred_var = ((pred - pred_mean) ** 2).mean(dim=0)
    true_var = ((true - true_mean) ** 2).mean(dim=0)
    covariance = ((pred - pred_mean) * (true - true_mean)).mean(dim=0)
    return 2 * covariance / (pred_var + true_var + (pred_mean - true_mean) ** 2 + EPSILON)


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 − CCC on (batch, dimensions) tensors: the batch loss training descends.

    A NaN label (an item of a corpus that does not rate that dimension, data=multi) is masked out: each
    dimension's CCC is over the items that have it, and a dimension with fewer than two such items in the
    batch adds nothing (the CCC of one item is undefined)."""
    pred, true = pred.float(), true.float()
    rated = torch.isfinite(true)
    if bool(rated.all()):
        return (1.0 - batch_ccc(pred, true)).mean()
    losses = [
        1.0 - batch_ccc(pred[rated[:, dim], dim], true[rated[:, dim], dim])
        for dim in range(true.shape[1])
        if int(rated[:, dim].sum()) >= 2
    ]
    # No dimension rated twice: a zero that still depends on the predictions, so backward runs as always.
    return torch.stack(losses).mean() if losses else pred.sum() * 0.0


def ccc_scores(pred: np.ndarray, true: np.ndarray, dimensions: tuple[str, ...] = DIMENSIONS) -> dict[str, float | None]:
    """{'ccc_a', 'ccc_v', 'ccc_d', 'ccc_mean'} over a whole split of (items, dimensions) arrays, in float64.

    A corpus without some dimension gets None for it; the mean is over the dimensions it has. Items whose
    label of a dimension is NaN (their corpus does not rate it) are left out of that dimension's score.
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    rated = np.isfinite(true)
    # One problem per dimension, along the items; an unrated item weighs nothing.
    per_dim = ccc(pred.T, np.where(rated, true, 0.0).T, weights=rated.T)
    per_dim = np.where(rated.sum(axis=0) >= 2, per_dim, np.nan)
    scores = {f"ccc_{dim[0]}": None for dim in DIMENSIONS}
    scores.update({f"ccc_{dim[0]}": _number(value) for dim, value in zip(dimensions, per_dim, strict=True)})
    scored = per_dim[np.isfinite(per_dim)]
    scores["ccc_mean"] = float(scored.mean()) if len(scored) else None
    return scores


def split_scores(
    corpus: Corpus, items: list[Item], pred: np.ndarray, true: np.ndarray, focus: str | None = None
) -> tuple[dict[str, float | None], dict[str, dict] | None]:
    """A split's scores (ccc_scores) and, for corpora trained on together, each corpus's: then the split's
    scores are, key by key, the mean over the corpora that have the key, each corpus counting once whatever
    its size; or, with `focus` (data.val_corpus), that corpus's own."""
    if not corpus.parts:
        return ccc_scores(pred, true, corpus.dimensions), None
    by_corpus = {}
    for part in corpus.parts:
        rows = [row for row, item in enumerate(items) if item.corpus == part.name]
        if rows:
            columns = [corpus.dimensions.index(dim) for dim in part.dimensions]
            by_corpus[part.name] = ccc_scores(pred[rows][:, columns], true[rows][:, columns], part.dimensions)
    if focus is not None:
        return by_corpus[focus], by_corpus
    mean = {}
    for key in by_corpus[next(iter(by_corpus))]:
        values = [scores[key] for scores in by_corpus.values() if scores[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
    return mean, by_corpus


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def format_scores(scores: dict) -> str:
    """`A 0.712 V 0.401 D 0.598 MEAN 0.570` for a log line."""
    return " ".join(
        f"{key.removeprefix('ccc_').upper()} {value:.3f}" for key, value in scores.items() if value is not None
    )
