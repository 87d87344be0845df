"""Concordance correlation coefficient, the score of dimensional emotion recognition."""

from __future__ import annotations

import numpy as np
import torch

from emotion.data.corpus import DIMENSIONS


def ccc(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's concordance correlation coefficient along the first axis.

        ccc = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))²)

    with population (1/n) moments. It is not additive: the CCC of a whole split is not the mean of its
    batches' CCCs, so scores are computed once over every prediction of the split, while the training
    loss 1 - ccc uses the batch at hand.

    >>> round(ccc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 4.0])).item(), 4)  # 2·(2/3) / (2/3 + 2/3 + 1)
    0.5714
    """
    pred_mean, true_mean = pred.mean(dim=0), true.mean(dim=0)
    pred_var = ((pred - pred_mean) ** 2).mean(dim=0)
    true_var = ((true - true_mean) ** 2).mean(dim=0)
    covariance = ((pred - pred_mean) * (true - true_mean)).mean(dim=0)
    return 2 * covariance / (pred_var + true_var + (pred_mean - true_mean) ** 2 + eps)


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 - CCC, on (batch, dimensions) tensors."""
    return (1.0 - ccc(pred.float(), true.float())).mean()


def ccc_scores(pred: np.ndarray, true: np.ndarray, dimensions: tuple[str, ...] = DIMENSIONS) -> dict[str, float | None]:
    """{'ccc_a', 'ccc_v', 'ccc_d', 'ccc_mean'} over a whole split of (items, dimensions) arrays.

    A corpus without some dimension gets None for it; the mean is over the dimensions it has.
    """
    per_dim = ccc(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(true, dtype=torch.float64))
    scores = {f"ccc_{dim[0]}": None for dim in DIMENSIONS}
    scores.update({f"ccc_{dim[0]}": float(value) for dim, value in zip(dimensions, per_dim, strict=True)})
    scores["ccc_mean"] = float(per_dim.mean())
    return scores


def format_scores(scores: dict) -> str:
    """`A 0.712 V 0.401 D 0.598 MEAN 0.570` for a log line."""
    return " ".join(
        f"{key.removeprefix('ccc_').upper()} {value:.3f}" for key, value in scores.items() if value is not None
    )
