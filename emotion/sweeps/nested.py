"""The sweep's headline: a nested cross-validation estimate. For each test fold, the configuration chosen by
that fold's own validation score, and that configuration's test score on the fold.

Why nested: with data.validation=next_session, fold k validates on session k+1, which is fold k+1's test
session. One configuration chosen for every fold by validation averaged over folds has had fold k+1's test
labels take part in the choice whose fold k+1 test score is then reported. Here fold k's choice reads the
validation scores of fold k's own runs alone; their validation speakers are never fold k's test speakers
(under either validation protocol), so no label of fold k's test speakers can change the choice made for it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from emotion.sweeps.comparison import RowResults, by_fold, pooled_ccc


@dataclass(frozen=True)
class FoldChoice:
    """What one test fold's validation chose, and how the choice scored on the fold's test split."""

    fold: str | None  # None for a corpus with fixed splits
    row_index: int  # the chosen row: its index in the rows given
    validation: float  # its validation score on this fold (report.select; mean over its seeds)
    test: dict[str, float]  # its test CCC on this fold per score (ccc_v, …), mean over its seeds
    candidates: int  # rows with a validation score on this fold


@dataclass(frozen=True)
class NestedEstimate:
    choices: list[FoldChoice]
    mean: dict[str, float]  # per score (ccc_v, …): mean over folds of each fold's choice's test CCC
    std: dict[str, float]  # the sample std over folds (NaN for one fold)
    pooled: dict[str, float]  # CCC over the chosen runs' test predictions of every fold together, mean over seeds

    @property
    def folds(self) -> list:
        return [choice.fold for choice in self.choices]


def choose_per_fold(results: list[RowResults], eligible: list[bool]) -> list[FoldChoice]:
    """For each fold any eligible row ran: the eligible row with the best validation score on that fold.
    Ties go to the earlier row. A fold's choice reads nothing but that fold's validation scores."""
    validation = [by_fold(row.validation) if ok else {} for row, ok in zip(results, eligible, strict=True)]
    folds = sorted({fold for per_fold in validation for fold in per_fold}, key=lambda fold: (fold is None, str(fold)))
    choices = []
    for fold in folds:
        candidates = [i for i, per_fold in enumerate(validation) if not math.isnan(per_fold.get(fold, math.nan))]
        if not candidates:
            continue
        chosen = max(candidates, key=lambda i: (validation[i][fold], -i))
        test = {score: results[chosen].fold_means(score).get(fold, math.nan) for score in _scores(results[chosen])}
        choices.append(FoldChoice(fold, chosen, validation[chosen][fold], test, len(candidates)))
    return choices


def nested_estimate(results: list[RowResults], eligible: list[bool], scores: list[str]) -> NestedEstimate | None:
    """Each fold's choice (choose_per_fold) and, over folds, the mean ± std and pooled CCC of their test scores.
    None when no eligible row has a validation score."""
    choices = choose_per_fold(results, eligible)
    if not choices:
        return None
    mean, std, pooled = {}, {}, {}
    folds = [choice.fold for choice in choices]
    # Each fold's predictions come from its own choice's runs: pooled over them as over one row's folds.
    predictions = {
        run: prediction
        for choice in choices
        for run, prediction in results[choice.row_index].predictions.items()
        if run[0] == choice.fold
    }
    for score in scores:
        values = [choice.test.get(score, math.nan) for choice in choices]
        values = [value for value in values if not math.isnan(value)]
        mean[score] = statistics.fmean(values) if values else math.nan
        std[score] = statistics.stdev(values) if len(values) > 1 else math.nan
        pooled[score] = pooled_ccc(predictions, score, folds)
    return NestedEstimate(choices, mean, std, pooled)


def _scores(row: RowResults) -> set[str]:
    """The scores (ccc_v, …) any of the row's runs has."""
    return {score for run_scores in row.scores.values() for score, value in run_scores.items() if value is not None}
