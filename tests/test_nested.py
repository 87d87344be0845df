"""The nested estimate: each test fold's configuration is chosen by that fold's own validation, blind to its
test speakers. Shown on a fabricated four-session corpus whose jobs' scores are computed from the sessions'
labels the way a next_session cross-validation uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion.report import summarise_sweep, write_summary
from tests.conftest import read_csv
from tests.test_report import direct_ccc, multirun, write_job

SESSIONS = (1, 2, 3, 4)
# Config a does better on sessions rated above the middle of the scale, b below it.
LEANING = {"a": 1.0, "b": -1.0}


def session_labels(means: dict[int, float]) -> dict[int, tuple[list[str], np.ndarray]]:
    """Each session: two speakers of ten utterances around its mean rating (speaker ids, valence labels)."""
    rng = np.random.default_rng(0)
    return {
        session: ([f"s{session}{'MF'[i // 10]}" for i in range(20)], mean + rng.normal(0, 0.4, 20))
        for session, mean in means.items()
    }


def write_world(sweep, labels) -> None:
    """A next_session cross-validation of configs a and b: fold f tests on session f, validates on the next
    session and trains on the other two. A run's validation score depends on its validation session's labels
    and (a little) on its training sessions'; its test predictions are the test session's labels with an error
    that depends on the config and the session."""
    multirun(sweep, ["+config=a,b", "data.fold=1,2,3,4"], report={"bootstrap": 0})
    for config, leaning in LEANING.items():
        for fold in SESSIONS:
            validation = fold % len(SESSIONS) + 1
            training = [s for s in SESSIONS if s not in (fold, validation)]
            val = 0.5 + 0.3 * leaning * (labels[validation][1].mean() - 3)
            val += 0.01 * np.mean([labels[s][1].mean() for s in training])
            speakers, true = labels[fold]
            rng = np.random.default_rng(fold)
            pred = true + rng.normal(0, 0.3 + 0.2 * leaning * np.sign(true.mean() - 3), len(true)) ** 2
            ids = [f"{fold}_{i}" for i in range(len(true))]
            write_job(
                sweep,
                [f"data.fold={fold}", f"+config={config}"],
                "completed",
                direct_ccc(np.round(pred, 4), np.round(true, 4)),
                val_v=val,
                val_a=val,
                predictions=(ids, true, pred, speakers),
            )


def mirrored(labels, session: int):
    """Every valence label of `session`'s speakers mirrored about the scale's middle (1–5 → 5–1)."""
    speakers, true = labels[session]
    return {**labels, session: (speakers, 6 - true)}


def choices(summary) -> dict[str, str]:
    return {choice.fold: summary.record_of(choice.row_index).config["+config"] for choice in summary.nested.choices}


def test_changing_every_label_of_a_folds_test_speakers_leaves_that_folds_choice_alone(tmp_path):
    labels = session_labels({1: 3.6, 2: 2.9, 3: 3.1, 4: 2.8})
    write_world(tmp_path / "original", labels)
    write_world(tmp_path / "mirrored", mirrored(labels, 1))
    original, changed = summarise_sweep(tmp_path / "original"), summarise_sweep(tmp_path / "mirrored")

    assert choices(original)["1"] == choices(changed)["1"]  # fold 1's choice never saw session 1
    fold_1 = [next(c for c in summary.nested.choices if c.fold == "1") for summary in (original, changed)]
    assert fold_1[0].test["ccc_v"] != pytest.approx(fold_1[1].test["ccc_v"])  # its test score did change
    # Fold 4 validates on session 1: its choice may follow session 1's labels, and here it does.
    assert choices(original)["4"] != choices(changed)["4"]
    # The ranking view's ★, chosen by validation averaged over folds, saw session 1 through fold 4.
    starred = [next(r.config["+config"] for r in summary.records if r.selected) for summary in (original, changed)]
    assert starred[0] != starred[1]


def test_the_nested_estimate_is_each_folds_choice_scored_on_that_fold(tmp_path):
    sweep = tmp_path / "sweep"
    write_world(sweep, session_labels({1: 3.6, 2: 2.9, 3: 3.1, 4: 2.8}))
    summary = summarise_sweep(sweep)
    nested = summary.nested
    chosen = choices(summary)
    assert set(chosen.values()) == {"a", "b"}  # the folds chose differently: no one row is the estimate
    tests, pooled = [], []
    for fold in ("1", "2", "3", "4"):
        runs = {config: sweep / f"data.fold={fold},+config={config}" for config in LEANING}
        validation = {config: read_validation(folder) for config, folder in runs.items()}
        assert chosen[fold] == max(validation, key=validation.get)
        rows = read_csv(runs[chosen[fold]] / "predictions.csv")
        true, pred = (np.array([float(row[f"valence_{kind}"]) for row in rows]) for kind in ("true", "pred"))
        tests.append(direct_ccc(pred, true))
        pooled.append((true, pred))
    assert nested.mean["ccc_v"] == pytest.approx(np.mean(tests), abs=1e-6)
    assert nested.std["ccc_v"] == pytest.approx(np.std(tests, ddof=1), abs=1e-6)
    true, pred = (np.concatenate([pair[i] for pair in pooled]) for i in (0, 1))
    assert nested.pooled["ccc_v"] == pytest.approx(direct_ccc(pred, true), abs=1e-6)

    text = write_summary(sweep).read_text()
    assert text.startswith("**Nested cross-validation: each fold's configuration was chosen without its test speakers")
    assert f"| nested | 1, 2, 3, 4 | {nested.mean['ccc_v']:.3f} ± {nested.std['ccc_v']:.3f} |" in text
    assert "**Configurations ranked by val CCC mean**" in text  # the per-row view stays, named as one
    nested_csv = read_csv(sweep / "nested.csv")
    assert [(row["fold"], row["+config"]) for row in nested_csv] == sorted(chosen.items())


def read_validation(folder) -> float:
    return json.loads((folder / "metrics.json").read_text())["val_best"]["ccc_mean"]
