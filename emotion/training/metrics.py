"""Concordance correlation coefficient: a split's scores, and the training loss on a batch."""

from __future__ import annotations

import numpy as np
import torch

from emotion.data.corpus import DIMENSIONS
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
    """Mean over dimensions of 1 − CCC on (batch, dimensions) tensors: the batch loss training descends."""
    return (1.0 - batch_ccc(pred.float(), true.float())).mean()


def ccc_scores(pred: np.ndarray, true: np.ndarray, dimensions: tuple[str, ...] = DIMENSIONS) -> dict[str, float | None]:
    """{'ccc_a', 'ccc_v', 'ccc_d', 'ccc_mean'} over a whole split of (items, dimensions) arrays, in float64.

    A corpus without some dimension gets None for it; the mean is over the dimensions it has.
    """
    per_dim = ccc(np.asarray(pred).T, np.asarray(true).T)  # one problem per dimension: along the items
    scores = {f"ccc_{dim[0]}": None for dim in DIMENSIONS}
    scores.update({f"ccc_{dim[0]}": float(value) for dim, value in zip(dimensions, per_dim, strict=True)})
    scores["ccc_mean"] = float(per_dim.mean())
    return scores


def format_scores(scores: dict) -> str:
    """`A 0.712 V 0.401 D 0.598 MEAN 0.570` for a log line."""
    return " ".join(
        f"{key.removeprefix('ccc_').upper()} {value:.3f}" for key, value in scores.items() if value is not None
    )
