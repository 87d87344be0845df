"""The one validation score that selects (`report.select`): the epoch a job keeps (early stopping and
best.pt), the value a job returns to Hydra, what a search's pruner and study see, and the table's choices.
One quantity everywhere, so that the checkpoint a table reports is the one its ranking chose."""

from __future__ import annotations

# The validation scores that can select, with their headings.
SELECTABLE = {
    "val_ccc_mean": "val CCC mean",
    "val_ccc_v": "val CCC-V",
    "val_ccc_a": "val CCC-A",
    "val_ccc_d": "val CCC-D",
}
DIMENSION_OF = {"val_ccc_a": "arousal", "val_ccc_v": "valence", "val_ccc_d": "dominance"}


def score_key(select: str) -> str:
    """The key of `select` in a job's validation scores (metrics.json's val_best): ccc_mean for val_ccc_mean."""
    return select.removeprefix("val_")


def select_problems(select, dimensions: tuple[str, ...] | None) -> list[str]:
    """What is wrong with report.select for a corpus labelled with `dimensions` (None: not known yet)."""
    if select not in SELECTABLE:
        return [f"report.select={select!r}: must be one of {', '.join(SELECTABLE)}"]
    dimension = DIMENSION_OF.get(select)
    if dimensions is not None and dimension is not None and dimension not in dimensions:
        return [
            f"report.select={select}: the corpus has no {dimension} labels (it has {', '.join(dimensions)}); "
            "select on one it has, e.g. report.select=val_ccc_mean"
        ]
    return []
