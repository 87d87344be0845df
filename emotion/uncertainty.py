"""Whether an ensemble's spread says when to trust it: how well the disagreement of its models ranks the error
of their mean, on labelled audio.

An ensemble's spread (the standard deviation of its models' predictions) is only worth printing beside a
prediction if larger spreads go with larger errors. Two views of that, per dimension:

- `spearman`: Spearman's rank correlation between spread and absolute error of the mean (with its p-value);
  above 0 the spread ranks errors, about 0 it says nothing.
- `ccc_certain`, `ccc_uncertain`: the CCC of the half of the items the models agree on most, and of the other
  half; a useful spread gives the first clearly above the second.

`mean_spread` says how much the models disagree, on the [0, 1] scale training maps every rating scale to.
"""

from __future__ import annotations

import numpy as np

from emotion.scores import ccc


def spread_ranking(members: np.ndarray, true: np.ndarray, dimensions: tuple[str, ...]) -> dict[str, dict]:
    """`members`: (items, models, dimensions), each model's predictions; `true`: (items, dimensions) on the same
    scale, NaN where an item is not rated on a dimension. Per dimension, the measures above and the items."""
    from scipy.stats import spearmanr  # seconds to import; evaluation alone needs it

    mean, spread = members.mean(axis=1), members.std(axis=1)
    ranking = {}
    for column, dimension in enumerate(dimensions):
        rated = ~np.isnan(true[:, column])
        pred, label, disagreement = mean[rated, column], true[rated, column], spread[rated, column]
        if len(label) < 4:  # two items per half at least
            ranking[dimension] = {"items": int(len(label)), "spearman": None}
            continue
        correlation = spearmanr(disagreement, np.abs(pred - label))
        order = np.argsort(disagreement, kind="stable")
        certain, uncertain = order[: len(order) // 2], order[len(order) // 2 :]
        ranking[dimension] = {
            "items": int(len(label)),
            "spearman": _number(correlation.statistic),
            "p": _number(correlation.pvalue),
            "ccc_certain": float(ccc(pred[certain], label[certain])),
            "ccc_uncertain": float(ccc(pred[uncertain], label[uncertain])),
            "mean_spread": float(disagreement.mean()),
        }
    return ranking


def _number(value: float) -> float | None:
    """None where the statistic is undefined (a constant spread or error)."""
    return None if np.isnan(value) else float(value)
