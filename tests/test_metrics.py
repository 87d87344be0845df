"""CCC against values computed by hand; the training loss's torch CCC against the score's numpy one."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from emotion import scores
from emotion.scores import ccc
from emotion.training import metrics
from emotion.training.metrics import batch_ccc, ccc_loss, ccc_scores


def test_ccc_matches_a_hand_computed_value():
    # x = [1, 2, 3, 4]: mean 2.5, var 1.25.   y = [2, 2, 4, 5]: mean 3.25, var 1.6875.
    # cov = mean((x - 2.5)(y - 3.25)) = (1.875 + 0.625 + 0.375 + 2.625) / 4 = 1.375
    # ccc = 2·1.375 / (1.25 + 1.6875 + 0.75²) = 2.75 / 3.5 = 11/14
    assert float(ccc([1.0, 2, 3, 4], [2.0, 2, 4, 5])) == pytest.approx(11 / 14, abs=1e-6)


def test_ccc_is_one_for_agreement_and_punishes_bias_and_scale_unlike_pearson():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert float(ccc(y, y)) == pytest.approx(1.0, abs=1e-6)
    assert float(ccc(y + 1.0, y)) == pytest.approx(2.5 / 3.5, abs=1e-6)  # perfectly correlated, shifted by 1
    assert float(ccc(2 * y, y)) == pytest.approx(5.0 / 12.5, abs=1e-6)  # perfectly correlated, doubled
    assert float(ccc(-y, y)) == pytest.approx(-1.0 * 2 * 1.25 / (2.5 + 25.0), abs=1e-6)


def test_ccc_of_constant_equal_predictions_and_labels_is_zero_not_nan():
    assert float(ccc([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])) == 0.0


def test_weights_count_items_as_repeated():
    pred, true = np.array([1.0, 4.0, 2.0, 5.0]), np.array([2.0, 3.0, 2.5, 4.0])
    repeated = ccc(np.repeat(pred, [3, 0, 1, 2]), np.repeat(true, [3, 0, 1, 2]))
    assert float(ccc(pred, true, weights=[3, 0, 1, 2])) == pytest.approx(float(repeated), abs=1e-12)


def test_whole_split_ccc_differs_from_the_mean_of_batch_cccs():
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    true = np.array([2.0, 1.0, 4.0, 3.0])
    # Whole set: equal means (2.5), var 1.25 each, cov = mean(−1.5·−0.5, −0.5·−1.5, 0.5·1.5, 1.5·0.5) = 0.75,
    # so ccc = 1.5 / 2.5 = 0.6.
    assert float(ccc(pred, true)) == pytest.approx(0.6, abs=1e-6)
    # Batches [1,2]→[2,1] and [3,4]→[4,3] are each perfectly anti-concordant: CCC −1 apiece.
    batch_mean = (ccc(pred[:2], true[:2]) + ccc(pred[2:], true[2:])) / 2
    assert float(batch_mean) == pytest.approx(-1.0, abs=1e-6)


def test_the_losss_torch_ccc_is_the_scores_ccc_per_dimension():
    rng = np.random.default_rng(0)
    true = rng.uniform(1, 5, (50, 3))
    pred = true + rng.normal(0, 0.8, (50, 3))
    per_dimension = batch_ccc(torch.as_tensor(pred), torch.as_tensor(true)).numpy()
    assert per_dimension == pytest.approx(ccc(pred.T, true.T), abs=1e-12)


def test_scores_are_per_dimension_over_the_whole_split_with_their_mean():
    true = np.tile([[1.0], [2.0], [3.0], [4.0]], (1, 3))
    pred = np.column_stack([[1.0, 2, 3, 4], [2.0, 2, 4, 5], [2.0, 3, 4, 5]])  # exact, the example above, shifted
    split_scores = ccc_scores(pred, true)
    assert list(split_scores) == ["ccc_a", "ccc_v", "ccc_d", "ccc_mean"]
    assert split_scores["ccc_a"] == pytest.approx(1.0)
    assert split_scores["ccc_v"] == pytest.approx(11 / 14)
    assert split_scores["ccc_d"] == pytest.approx(2.5 / 3.5)
    assert split_scores["ccc_mean"] == pytest.approx((1.0 + 11 / 14 + 2.5 / 3.5) / 3)


def test_a_corpus_without_a_dimension_scores_none_for_it_and_averages_the_others():
    true = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    pred = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 4.0], [4.0, 5.0]], dtype=np.float32)
    split_scores = ccc_scores(pred, true, ("arousal", "valence"))
    assert split_scores == pytest.approx({"ccc_a": 1.0, "ccc_v": 11 / 14, "ccc_d": None, "ccc_mean": (1 + 11 / 14) / 2})


def test_loss_is_the_mean_of_one_minus_ccc_per_dimension():
    true = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    pred = torch.tensor([[1.0, 2.0], [2.0, 2.0], [3.0, 4.0], [4.0, 5.0]])
    assert ccc_loss(pred, true).item() == pytest.approx(((1 - 1.0) + (1 - 11 / 14)) / 2, abs=1e-6)


def test_docstring_examples_hold():
    assert doctest.testmod(scores).failed == 0
    assert doctest.testmod(metrics).failed == 0
