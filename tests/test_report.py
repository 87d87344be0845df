"""The comparison table, from job folders written by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from emotion.report import configuration_label, default_settings, summarise, summarise_sweep, write_summary
from emotion.scores import ccc
from tests.conftest import ROOT, read_csv


def write_job(
    sweep,
    overrides,
    status=None,
    ccc_v=None,
    peak=1.0,
    seconds=60.0,
    val_v=0.5,
    predictions=None,
    seed=42,
    val_a=0.7,
    **extra,
):
    """A job folder as train.py leaves it; `predictions`: (ids, true, pred[, speakers]) of valence, for
    predictions.csv; `extra`: more metrics.json fields."""
    folder = sweep / ",".join(overrides)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["logger", "name"]}}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"seed": seed}}))
    if status == "completed":
        metrics = {
            "status": status,
            "profile": "max",
            "test": {"ccc_a": 0.8, "ccc_v": ccc_v, "ccc_d": None, "ccc_mean": 0.5},
            "val_best": {"ccc_a": val_a, "ccc_v": val_v, "ccc_d": None, "ccc_mean": (val_a + val_v) / 2},
            "peak_mem_gb": peak,
            "sec_per_epoch": seconds,
            "params": {"total": 3_000_000, "trainable": 2_000_000},
            **extra,
        }
    elif status == "failed":
        metrics = {"status": status, "profile": "max", "error": "ValueError: boom"}
    else:
        return folder  # still running: no metrics.json yet
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        ids, true, pred, *speakers = predictions
        with open(folder / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", *(["speaker"] if speakers else []), "valence_true", "valence_pred"])
            for i, item in enumerate(ids):
                writer.writerow([item, *(speaker[i] for speaker in speakers), f"{true[i]:.4f}", f"{pred[i]:.4f}"])
    return folder


def multirun(sweep, task: list[str], report: dict | None = None) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    config = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": None}}}
    if report is not None:
        config["report"] = report
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "multirun" / "capacity"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2,3"])
    for fold, ccc_v, peak, logger in ((1, 0.5, 10.0, "none"), (2, 0.6, 12.0, "wandb"), (3, 0.7, 11.0, "none")):
        write_job(
            sweep,
            [f"data.fold={fold}", "model.d_hidden=256", f"logger={logger}"],
            "completed",
            ccc_v,
            peak,
            seconds=60.0 * fold,
        )
    write_job(sweep, ["data.fold=1", "model.d_hidden=384"], "completed", 0.4, val_v=0.3)
    write_job(sweep, ["data.fold=2", "model.d_hidden=384"], "failed")
    write_job(sweep, ["data.fold=3", "model.d_hidden=384"])  # running
    return sweep


def test_rows_are_configurations_with_mean_and_sample_std_over_their_runs(sweep):
    columns, records = summarise(sweep)
    assert columns[:2] == ["profile", "model.d_hidden"]
    small, large = records
    assert (small.config["model.d_hidden"], large.config["model.d_hidden"]) == ("256", "384")
    assert small.scores["ccc_v"].mean == pytest.approx(0.6) and small.scores["ccc_v"].std == pytest.approx(0.1)
    assert (small.runs_done, small.runs_failed, small.runs_expected) == (3, 0, 3)
    assert small.peak_mem_gb == 12.0 and small.min_per_epoch == pytest.approx(2.0)
    assert small.params_m == 3.0
    assert (large.runs_done, large.runs_failed, large.runs_expected) == (1, 1, 3)
    assert large.scores["ccc_v"].mean == pytest.approx(0.4)
    assert large.missing == "fold 2 seed 42 (failed); fold 3 seed 42 (running or killed)"


def ranking_table(summary_md) -> list[str]:
    """The lines of summary.md from the ranking view's header on."""
    lines = summary_md.read_text().splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("|  | profile |")) :]


def test_the_markdown_table_shows_mean_std_failures_and_what_is_missing(sweep):
    table = ranking_table(write_summary(sweep))
    assert table[0].startswith(
        "|  | profile | model.d_hidden | params (M) | peak mem (GB) | min/epoch | val CCC mean |"
    )
    assert "| ★ | max | 256 | 3.00 | 12.0 | 2.00 | 0.600 | 0.600 ± 0.100 | 0.800 ± 0.000 | – |" in table[2]
    assert table[3].startswith("|  | max | 384 | 3.00 | 1.0 | 1.00 | 0.500 | 0.400 | 0.800 | – |")
    assert table[3].endswith("| 1/3 (1 failed) |")
    assert "- max d_hidden=384: fold 2 seed 42 (failed); fold 3 seed 42 (running or killed)" in table
    with open(sweep / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (sweep / "summary.png").stat().st_size > 1000


def test_validation_selects_and_ranks_even_against_a_better_test_score(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"])
    for fold in (1, 2):  # 384 is better on test, 256 on validation
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=384"], "completed", ccc_v=0.7, val_v=0.4)
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", ccc_v=0.5, val_v=0.6)
    _, records = summarise(sweep)
    assert [(r.config["model.d_hidden"], r.selected, r.reference) for r in records] == [
        ("256", True, True),
        ("384", False, False),
    ]
    assert records[0].validation == pytest.approx(0.65)
    # Ranked by another validation score, the selection follows it, never the test.
    columns, by_arousal = summarise(sweep, default_settings(select="val_ccc_a"))
    assert "val_ccc_a" in columns and [r.validation for r in by_arousal] == [pytest.approx(0.7)] * 2
    with pytest.raises(ValueError, match="report.select='test_ccc_v'"):
        default_settings(select="test_ccc_v")


def test_a_row_with_runs_missing_cannot_beat_complete_rows(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"])
    for fold in (1, 2):
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", ccc_v=0.5, val_v=0.5)
    write_job(sweep, ["data.fold=1", "model.d_hidden=384"], "completed", ccc_v=0.6, val_v=0.9)  # one lucky run
    _, records = summarise(sweep)
    assert [(r.config["model.d_hidden"], r.selected) for r in records] == [("256", True), ("384", False)]
    with pytest.raises(ValueError, match="give key=value overrides"):
        summarise(sweep, default_settings(reference="model.d_hidden"))


def test_a_row_with_more_runs_than_the_latest_sweep_asks_is_complete(tmp_path):
    sweep = tmp_path / "sweep"
    for fold in (1, 2, 3, 4, 5):  # an earlier sweep ran dropout 0.0 on every fold ...
        write_job(sweep, [f"data.fold={fold}", "model.dropout=0.0"], "completed", ccc_v=0.5, val_v=0.6)
    multirun(sweep, ["model.dropout=0.0,0.3", "data.fold=1,2"])  # ... the latest one asks for folds 1 and 2
    for fold in (1, 2):
        write_job(sweep, [f"data.fold={fold}", "model.dropout=0.3"], "completed", ccc_v=0.6, val_v=0.4)
    _, records = summarise(sweep)
    wide = next(r for r in records if r.config["model.dropout"] == "0.0")
    assert (wide.runs_done, wide.runs_expected, wide.complete, wide.selected) == (5, 2, True, True)
    assert "| 5/2 |" in write_summary(sweep).read_text()


def test_the_report_uses_the_sweeps_own_settings_unless_told_otherwise(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"], report={"select": "val_ccc_a", "bootstrap": 20})
    for fold in (1, 2):  # 256 is better on validation arousal, 384 on the validation mean
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", 0.5, val_v=0.2, val_a=0.8)
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=384"], "completed", 0.5, val_v=0.9, val_a=0.6)
    write_summary(sweep)
    rows = read_csv(sweep / "summary.csv")
    assert "val_ccc_a" in rows[0] and rows[0]["model.d_hidden"] == "256"
    assert "(20 resamples" in (sweep / "summary.md").read_text()
    report = [sys.executable, "-m", "emotion.report", str(sweep), "--select", "val_ccc_mean"]
    subprocess.run(report, cwd=ROOT, capture_output=True, check=True)
    rows = read_csv(sweep / "summary.csv")
    assert "val_ccc_mean" in rows[0] and rows[0]["model.d_hidden"] == "384"
    text = (sweep / "summary.md").read_text()
    assert "(20 resamples" in text  # what was not told stays the sweep's
    assert "but the jobs kept their best epochs by val CCC-A (the sweep's report.select)" in text


def test_rows_whose_test_speakers_a_model_had_seen_are_marked_and_never_chosen(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, ["model.d_hidden=64,128,256", "data.fold=1,2"])
    leak = "the model trained or validated on 2 of the evaluated speakers"
    for fold in (1, 2):
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=64"], "completed", 0.5, val_v=0.5)
        evaluated = {"data": {"seen_in_training": [leak]}}
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=128"], "completed", 0.9, val_v=0.9, **evaluated)
        started = {"init_from": {"checkpoint": "x/best.pt", "seen_test_speakers": 2, "warning": "w"}}
        write_job(sweep, [f"data.fold={fold}", "model.d_hidden=256"], "completed", 0.8, val_v=0.8, **started)
    summary = summarise_sweep(sweep)
    by_width = {r.config["model.d_hidden"]: r for r in summary.records}
    assert by_width["128"].seen == leak and "model.init_from" in by_width["256"].seen
    assert [r.config["model.d_hidden"] for r in summary.records if r.selected] == ["64"]
    assert {summary.record_of(choice.row_index).config["model.d_hidden"] for choice in summary.nested.choices} == {"64"}
    text = write_summary(sweep).read_text()
    assert "| ⚠ | max | 128 |" in text and f"- max d_hidden=128: {leak}" in text


def rng_predictions(rng, ids, true, noise):
    return ids, true, np.clip(true + rng.normal(0, noise, len(true)), 1, 5)


@pytest.fixture
def seeded_sweep(tmp_path):
    """Two configurations × 2 folds × 2 seeds, with test predictions; the wide one's seed 1, fold 2 failed."""
    sweep = tmp_path / "seeds"
    multirun(sweep, ["model.d_hidden=64,128", "data.fold=1,2", "trainer.seed=0,1"])
    rng = np.random.default_rng(0)
    truth = {fold: rng.uniform(1, 5, 40) for fold in (1, 2)}
    ids = {fold: [f"f{fold}_{i:02d}" for i in range(40)] for fold in (1, 2)}
    for width, noise in (("64", 0.6), ("128", 0.9)):
        for fold in (1, 2):
            for seed in (0, 1):
                overrides = [f"data.fold={fold}", f"model.d_hidden={width}", f"trainer.seed={seed}"]
                if (width, fold, seed) == ("128", 2, 1):
                    write_job(sweep, overrides, "failed", seed=seed)
                    continue
                predictions = rng_predictions(rng, ids[fold], truth[fold], noise)
                ccc_v = float(ccc(np.round(predictions[2], 4), np.round(predictions[1], 4)))
                val = 0.6 if width == "64" else 0.5
                write_job(
                    sweep, overrides, "completed", ccc_v, val_v=val + 0.01 * seed, predictions=predictions, seed=seed
                )
    return sweep


def read_predictions_csv(folder):
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [row["id"] for row in rows], np.array([[float(r["valence_true"]), float(r["valence_pred"])] for r in rows])


def test_repeats_pool_their_predictions_and_say_how_far_seeds_move_the_headline(seeded_sweep):
    _, records = summarise(seeded_sweep, default_settings(bootstrap=200))
    narrow, wide = records  # ranked by validation: 64 first
    assert (narrow.config["model.d_hidden"], narrow.runs_done, narrow.runs_expected) == ("64", 4, 4)
    assert (wide.runs_done, wide.runs_failed, wide.missing) == (3, 1, "fold 2 seed 1 (failed)")
    # Pooled by hand: per seed, both folds' predictions together, then the mean over seeds.
    per_seed, fold_means = [], []
    for seed in (0, 1):
        folders = [seeded_sweep / f"data.fold={fold},model.d_hidden=64,trainer.seed={seed}" for fold in (1, 2)]
        values = np.concatenate([read_predictions_csv(folder)[1] for folder in folders])
        per_seed.append(ccc(values[:, 1], values[:, 0]))
        fold_means.append(np.mean([json.loads((f / "metrics.json").read_text())["test"]["ccc_v"] for f in folders]))
    assert narrow.scores["ccc_v"].pooled == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert narrow.scores["ccc_v"].seed_std == pytest.approx(np.std(fold_means, ddof=1), abs=1e-12)
    assert np.isnan(narrow.scores["ccc_a"].pooled)  # no arousal predictions written


def test_the_reference_row_and_its_bootstrap_are_reproducible_and_named(seeded_sweep):
    settings = default_settings(reference="model.d_hidden=128", bootstrap=300, seed=7)
    _, records = summarise(seeded_sweep, settings)
    narrow = next(r for r in records if r.config["model.d_hidden"] == "64")
    assert next(r for r in records if r.config["model.d_hidden"] == "128").reference
    difference = narrow.comparison["ccc_v"].difference
    assert difference.folds == 2  # the failed run's fold still has the other seed
    low, high = difference.low, difference.high
    assert low < difference.pooled < high
    _, again = summarise(seeded_sweep, settings)
    assert next(r for r in again if r.config["model.d_hidden"] == "64").comparison["ccc_v"].difference.low == low
    reseeded_settings = default_settings(reference="model.d_hidden=128", bootstrap=300, seed=8)
    _, reseeded = summarise(seeded_sweep, reseeded_settings)
    assert next(r for r in reseeded if r.config["model.d_hidden"] == "64").comparison["ccc_v"].difference.low != low
    table = write_summary(seeded_sweep, settings).read_text()
    assert "Compared with max d_hidden=128 (the reference)" in table
    assert f"[{low:+.3f}, {high:+.3f}]" in table
    with pytest.raises(ValueError, match="names 0 rows"):
        summarise(seeded_sweep, default_settings(reference="model.d_hidden=512"))


def direct_ccc(pred, true) -> float:
    """Lin's CCC written out with numpy's population moments."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    covariance = np.mean((pred - pred.mean()) * (true - true.mean()))
    return 2 * covariance / (pred.var() + true.var() + (pred.mean() - true.mean()) ** 2)


SPEAKERS_PER_FOLD, UTTERANCES_PER_SPEAKER = 4, 12
NOISE = {"64": 0.5, "128": 0.8, "256": 0.9}  # the speaker-level part of each configuration's error


@pytest.fixture
def speaker_sweep(tmp_path):
    """Three configurations × 3 folds × 2 seeds; each fold has its own 4 speakers of 12 utterances. Errors are
    mostly per speaker (a speaker's utterances move together), as real predictions' are."""
    sweep = tmp_path / "speakers"
    multirun(sweep, ["model.d_hidden=64,128,256", "data.fold=1,2,3", "trainer.seed=0,1"])
    rng = np.random.default_rng(3)
    folds = {}
    for fold in (1, 2, 3):
        speakers = [f"f{fold}s{s}" for s in range(SPEAKERS_PER_FOLD) for _ in range(UTTERANCES_PER_SPEAKER)]
        truth = 3 + np.repeat(rng.normal(0, 0.8, SPEAKERS_PER_FOLD), UTTERANCES_PER_SPEAKER)
        folds[fold] = (
            [f"f{fold}_{i:02d}" for i in range(len(speakers))],
            truth + rng.normal(0, 0.3, len(truth)),
            speakers,
        )
    for width, noise in NOISE.items():
        for fold, (ids, truth, speakers) in folds.items():
            for seed in (0, 1):
                speaker_error = np.repeat(rng.normal(0, noise, SPEAKERS_PER_FOLD), UTTERANCES_PER_SPEAKER)
                pred = truth + speaker_error + rng.normal(0, 0.2, len(truth))
                overrides = [f"data.fold={fold}", f"model.d_hidden={width}", f"trainer.seed={seed}"]
                ccc_v = direct_ccc(np.round(pred, 4), np.round(truth, 4))
                val = {"64": 0.6, "128": 0.5, "256": 0.4}[width] + 0.01 * seed
                write_job(
                    sweep, overrides, "completed", ccc_v, val_v=val, seed=seed, predictions=(ids, truth, pred, speakers)
                )
    return sweep


def runs_by_fold(sweep, width) -> dict[int, list[dict]]:
    runs = {}
    for fold in (1, 2, 3):
        for seed in (0, 1):
            folder = sweep / f"data.fold={fold},model.d_hidden={width},trainer.seed={seed}"
            runs.setdefault(fold, []).append(json.loads((folder / "metrics.json").read_text()))
    return runs


def test_configurations_are_tested_over_folds_with_seeds_averaged_and_holm_adjusted(speaker_sweep):
    from statsmodels.stats.multitest import multipletests

    _, records = summarise(speaker_sweep, default_settings(bootstrap=50))
    by_width = {r.config["model.d_hidden"]: r for r in records}
    assert by_width["64"].reference  # the best validation: every other row is compared with it
    fold_means = {
        width: [np.mean([run["test"]["ccc_v"] for run in runs]) for runs in runs_by_fold(speaker_sweep, width).values()]
        for width in NOISE
    }
    p_values = []
    for width in ("128", "256"):
        expected = stats.ttest_rel(fold_means[width], fold_means["64"])  # n = 3 folds, not 6 runs
        difference = by_width[width].comparison["ccc_v"].difference
        assert difference.folds == 3
        assert difference.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert difference.mean == pytest.approx(np.mean(fold_means[width]) - np.mean(fold_means["64"]))
        p_values.append(expected.pvalue)
    _, holm, _, _ = multipletests(p_values, method="holm")
    assert [by_width[width].comparison["ccc_v"].holm_p for width in ("128", "256")] == pytest.approx(
        list(holm), rel=1e-9
    )
    assert holm[0] != pytest.approx(p_values[0])  # two comparisons: the adjustment moved something
    assert "n = folds" in write_summary(speaker_sweep, default_settings(bootstrap=50)).read_text()


def pooled_seed(sweep, width, seed):
    """A seed's predictions of every fold, concatenated: ids, speakers, true, pred."""
    folders = [sweep / f"data.fold={fold},model.d_hidden={width},trainer.seed={seed}" for fold in (1, 2, 3)]
    rows = [row for folder in folders for row in read_csv(folder / "predictions.csv")]
    true, pred = (np.array([float(row[f"valence_{kind}"]) for row in rows]) for kind in ("true", "pred"))
    return [row["id"] for row in rows], [row["speaker"] for row in rows], true, pred


def test_the_bootstrap_resamples_speakers_with_all_their_utterances(speaker_sweep):
    settings = default_settings(reference="model.d_hidden=64", bootstrap=400, seed=11)
    _, records = summarise(speaker_sweep, settings)
    wide = next(r for r in records if r.config["model.d_hidden"] == "128").comparison["ccc_v"].difference
    data = {width: [pooled_seed(speaker_sweep, width, seed) for seed in (0, 1)] for width in ("64", "128")}
    ids, speakers, true, _ = data["64"][0]
    speaker_names = sorted(set(speakers))

    def difference(chosen) -> float:
        """Pooled CCC difference (mean over seeds) on the utterances of the resampled speakers, concatenated."""
        rows = np.concatenate([[i for i, s in enumerate(speakers) if s == speaker_names[k]] for k in chosen])
        return np.mean(
            [
                direct_ccc(data["128"][s][3][rows], true[rows]) - direct_ccc(data["64"][s][3][rows], true[rows])
                for s in (0, 1)
            ]
        )

    assert wide.pooled == pytest.approx(difference(range(len(speaker_names))), abs=1e-7)
    # The same resamples, drawn by scipy from the same seed, computed by concatenating each resample's speakers.
    direct = stats.bootstrap(
        (np.arange(len(speaker_names)),),
        difference,
        n_resamples=400,
        batch=100,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert (wide.low, wide.high) == pytest.approx((direct.low, direct.high), abs=1e-7)
    # Resampling utterances as if independent gives a narrower interval on errors that cluster by speaker.
    utterance_rows = np.arange(len(ids))
    utterances = stats.bootstrap(
        (utterance_rows,),
        lambda rows: np.mean(
            [
                direct_ccc(data["128"][s][3][rows], true[rows]) - direct_ccc(data["64"][s][3][rows], true[rows])
                for s in (0, 1)
            ]
        ),
        n_resamples=400,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert utterances.high - utterances.low < 0.7 * (direct.high - direct.low)


def test_pooled_ccc_averages_only_seeds_that_have_every_fold_and_refuses_repeated_utterances(tmp_path):
    sweep = tmp_path / "pooled"
    multirun(sweep, ["data.fold=1,2", "trainer.seed=0,1"])
    rng = np.random.default_rng(0)
    truth = {fold: rng.uniform(1, 5, 30) for fold in (1, 2)}
    for fold, seed in ((1, 0), (2, 0), (1, 1)):  # seed 1 has no fold 2
        ids = [f"f{fold}_{i}" for i in range(30)]
        predictions = rng_predictions(rng, ids, truth[fold], 0.8)
        write_job(
            sweep, [f"data.fold={fold}", f"trainer.seed={seed}"], "completed", 0.5, seed=seed, predictions=predictions
        )
    (row,) = summarise(sweep)[1]
    values = np.concatenate([read_predictions_csv(sweep / f"data.fold={fold},trainer.seed=0")[1] for fold in (1, 2)])
    assert row.scores["ccc_v"].pooled == pytest.approx(direct_ccc(values[:, 1], values[:, 0]), abs=1e-7)
    # The same utterance tested in two runs of one seed: one of them would be dropped.
    duplicate = write_job(
        sweep, ["data.fold=2", "trainer.seed=1"], "completed", 0.5, seed=1, predictions=(["f1_0"], [3.0], [3.1])
    )
    with pytest.raises(ValueError, match=f"'f1_0' is in the test predictions of both .*{duplicate.name}"):
        summarise(sweep)


def test_the_report_command_prints_the_table(sweep):
    result = subprocess.run(
        [sys.executable, "-m", "emotion.report", str(sweep)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "0.600 ± 0.100" in result.stdout and "summary.md" in result.stdout


def test_the_report_never_imports_torch(seeded_sweep):
    """The report runs after every job of a sweep, and on any machine the job folders are copied to: numpy,
    scipy and matplotlib score and draw it, never the deep-learning stack."""
    script = (
        "import sys; from pathlib import Path; import emotion.report; "
        "assert 'torch' not in sys.modules, 'importing emotion.report imported torch'; "
        f"emotion.report.write_summary(Path({str(seeded_sweep)!r})); "
        "assert 'torch' not in sys.modules, 'writing the summary imported torch'"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    assert (seeded_sweep / "summary.csv").is_file()


@pytest.mark.slow
def test_the_report_command_logs_the_table_to_a_wandb_summary_run_offline(seeded_sweep):
    # A process of its own, as a user runs it (wandb.init would also leave its service in this one's environment).
    report = [sys.executable, "-m", "emotion.report", str(seeded_sweep), "--bootstrap", "50", "--wandb"]
    subprocess.run(report, cwd=ROOT, check=True, capture_output=True)
    (table_file,) = seeded_sweep.glob("wandb/offline-run-*/files/media/table/summary_table_*.table.json")
    table = json.loads(table_file.read_text())
    with open(seeded_sweep / "summary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert table["columns"] == rows[0] and table["data"] == rows[1:]
    assert list(seeded_sweep.glob("wandb/offline-run-*/files/media/images/summary_plot_*.png"))
    from tests.wandb_records import run_summary

    (run_file,) = seeded_sweep.glob("wandb/offline-run-*/run-*.wandb")
    run = run_summary(run_file)
    assert (run["job_type"], run["group"]) == ("summary", "seeds")


def test_jobs_nested_by_a_slash_in_a_value_are_found(sweep):
    write_job(sweep, ["data.fold=1", "model.d_hidden=512", "data.root=/corpora/x"], "completed", 0.3)
    _, records = summarise(sweep)
    assert ("512", "/corpora/x", 1) in [
        (r.config["model.d_hidden"], r.config["data.root"], r.runs_done) for r in records
    ]


def test_plot_labels_name_each_value_by_its_key():
    config = {"model.mamba_n_layers": "2", "data.batch_size": ""}
    assert configuration_label("standard", config, list(config)) == "standard mamba_n_layers=2"


def test_jobs_on_several_corpora_pool_on_0_to_1_only_the_utterances_that_rate_a_dimension(tmp_path):
    sweep = tmp_path / "multirun" / "multi"
    multirun(sweep, ["model.d_hidden=256,384", "data.fold=1,2"])
    rng = np.random.default_rng(0)
    scales = {"demo": (1, 5), "demo-b": (1, 7)}
    pooled = {}  # per row, per dimension: (true, pred) on [0, 1]
    for d_hidden in (256, 384):
        for fold in (1, 2):
            by_corpus = {
                name: {"test": {"ccc_a": 0.5, "ccc_v": 0.4, "ccc_d": dom, "ccc_mean": 0.5}}
                for name, dom in (("demo", 0.6), ("demo-b", None))
            }
            overrides = [f"data.fold={fold}", f"model.d_hidden={d_hidden}"]
            folder = write_job(sweep, overrides, "completed", 0.5, by_corpus=by_corpus)
            rows = []
            for i in range(12):
                corpus = "demo" if i % 2 else "demo-b"  # demo-b rates no dominance: its cells are empty
                low, high = scales[corpus]
                valence, dominance = rng.uniform(low, high, 2)
                noisy = [value + rng.normal(0, 0.5) for value in (valence, dominance)]
                for dim, true, pred in (("v", valence, noisy[0]), ("d", dominance, noisy[1])):
                    if dim == "v" or corpus == "demo":
                        pair = ((true - low) / (high - low), (pred - low) / (high - low))
                        pooled.setdefault((d_hidden, dim), []).append(pair)
                dom_cells = [f"{dominance:.4f}", f"{noisy[1]:.4f}"] if corpus == "demo" else ["", ""]
                who = [f"{corpus}/f{fold}_{i}", f"{corpus}/s{i % 4}", corpus, low, high]
                rows.append([*who, f"{valence:.4f}", f"{noisy[0]:.4f}", *dom_cells])
            with open(folder / "predictions.csv", "w", newline="") as f:
                writer = csv.writer(f)
                header = ["id", "speaker", "corpus", "scale_low", "scale_high"]
                writer.writerow([*header, "valence_true", "valence_pred", "dominance_true", "dominance_pred"])
                writer.writerows(rows)
    write_summary(sweep)
    records = {record.config["model.d_hidden"]: record for record in summarise_sweep(sweep).records}
    for (d_hidden, dim), pairs in pooled.items():
        true, pred = np.array(pairs).T
        assert records[str(d_hidden)].scores[f"ccc_{dim}"].pooled == pytest.approx(ccc(pred, true), abs=1e-3)
    summary = (sweep / "summary.md").read_text()
    assert "**By corpus**" in summary and "| demo-b |" in summary


def test_evaluations_under_conditions_get_a_table_by_condition_and_a_curve_against_snr_per_row(tmp_path):
    sweep = tmp_path / "multirun" / "robustness"
    multirun(sweep, ["ckpt=a,b"])
    for ckpt, drop in (("a", 0.1), ("b", 0.3)):
        conditions = {
            name: {"ccc_a": 0.8 - drop * k, "ccc_v": 0.4 - drop * k / 2, "ccc_d": None, "ccc_mean": 0.6 - drop * k}
            for k, name in enumerate(("clean", "snr20", "snr10", "snr0"))
        }
        write_job(sweep, [f"ckpt={ckpt}"], "completed", 0.4, conditions=conditions)
    write_summary(sweep)
    summary = (sweep / "summary.md").read_text()
    assert "**By condition**" in summary
    # At 0 dB, CCC-V and CCC-A as each row's job reported them: 0.4 − 3·drop/2 and 0.8 − 3·drop.
    assert "| max ckpt=a | snr0 | 0.250 ± – | 0.500 ± – | – | 1 |" in summary
    assert "| max ckpt=b | snr0 | -0.050 ± – | -0.100 ± – | – | 1 |" in summary
    assert (sweep / "robustness.png").stat().st_size > 0
