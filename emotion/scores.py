"""The score of dimensional emotion recognition, Lin's concordance correlation coefficient (CCC), on numpy
arrays. A utility: numpy alone, so that the report and its statistics score without loading torch. Training
scores its splits with it too (emotion.training.metrics.ccc_scores); only the training loss, which must be
differentiable, has a torch twin (emotion.training.metrics.batch_ccc)."""

from __future__ import annotations

import numpy as np

# Keeps the score defined when predictions and labels are both constant and equal (0/0): it is then 0, as for
# any constant prediction. Beside a variance of labels on a 1–5 or 1–7 scale it moves no score by more than
# about 1e-8.
EPSILON = 1e-8


def ccc(pred, true, weights=None) -> np.ndarray:
    """Lin's concordance correlation coefficient along the last axis, with population (1/n) moments:

        ccc = 2 cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))² + ε),  ε = 1e-8

    in float64. `true` and `weights` broadcast against `pred`; leading axes are independent problems. `weights`
    count each item so many times (a bootstrap resample's multiplicities): the CCC of the items repeated so.
    CCC is not additive: a whole split's CCC is not the mean of its batches', so a split is scored once, over
    every one of its predictions.

    >>> float(ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]).round(4))  # 2·(2/3) / (2/3 + 2/3 + 1²)
    0.5714
    >>> float(ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], weights=[2, 1, 1]).round(4))  # [1, 1, 2, 3] vs [2, 2, 3, 4]
    0.5789
    >>> ccc([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], [1.0, 2.0, 3.0]).round(4)  # two problems, one truth
    array([ 1., -1.])
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    shape = np.broadcast_shapes(pred.shape, true.shape, np.shape(weights) if weights is not None else ())
    weights = np.ones(shape) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), shape)
    total = weights.sum(axis=-1, keepdims=True)

    def mean(values: np.ndarray) -> np.ndarray:
        return (weights * values).sum(axis=-1, keepdims=True) / total

    pred_mean, true_mean = mean(pred), mean(true)
    pred_var, true_var = mean((pred - pred_mean) ** 2), mean((true - true_mean) ** 2)
    covariance = mean((pred - pred_mean) * (true - true_mean))
    return (2 * covariance / (pred_var + true_var + (pred_mean - true_mean) ** 2 + EPSILON))[..., 0]
