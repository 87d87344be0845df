"""A trained model used: checkpoints that rebuild it, predict.py, evaluate.py, load_model, model.init_from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from emotion import load_model
from emotion.cli import quote_paths
from emotion.data.corpora import load_corpus
from emotion.features.dataset import Segment, windows
from emotion.models.encoder import EncoderNotFoundError, load_wavlm
from emotion.prediction import InputError, run_predict
from emotion.report import summarise
from emotion.settings import DataSettings, EncoderSettings, JobSettings
from emotion.trained import STATISTICS, TrainedModel, find_checkpoints
from emotion.training.checkpoints import load_checkpoint, save_checkpoint
from emotion.training.metrics import ccc_loss
from emotion.training.recipe import (
    CheckpointError,
    initialise_from,
    model_recipe,
    read_checkpoint,
    rebuild,
    seen_speakers,
)
from tests.conftest import (
    SHORT,
    SMALL_DEMO,
    Trained,
    compose_config,
    data_settings,
    evaluate_in_process,
    predict_config,
    read_csv,
    recorded_elsewhere,
    run_script,
    run_train,
    untrained_model,
)
from tests.trees import csv_tree

DIMS = ("arousal", "valence", "dominance")


def predict_py(cache_dir, *args: str, check: bool = True):
    return run_script("predict.py", [*args, "predict.progress_bar=false"], cache_dir, check=check)


def predictions_by_file(table: Path) -> dict[str, np.ndarray]:
    return {Path(row["path"]).stem: np.array([float(row[dim]) for dim in DIMS]) for row in read_csv(table)}


def manifest_of(paths, folder: Path, speakers=None) -> Path:
    """A prediction manifest listing `paths` through links in `folder/audio` (a manifest's paths stay inside its
    folder), with their `speakers` (default: none)."""
    paths = [Path(path) for path in paths]
    (folder / "audio").mkdir(exist_ok=True)
    for path in paths:
        if not (folder / "audio" / path.name).is_symlink():
            (folder / "audio" / path.name).symlink_to(path)
    rows = zip(paths, speakers or [""] * len(paths), strict=True)
    manifest = folder / "manifest.csv"
    manifest.write_text("path,speaker\n" + "".join(f"audio/{path.name},{speaker}\n" for path, speaker in rows))
    return manifest


@pytest.mark.slow
def test_predict_py_gives_each_file_the_prediction_its_training_job_wrote(trained, cache_dir, tmp_path):
    files = trained.test_files(1)
    out = tmp_path / "preds.csv"
    input_ = manifest_of(files.values(), tmp_path)
    predict_py(cache_dir, f"ckpt={trained.jobs[1]}", f"input={input_}", f"output={out}", "predict.embeddings=true")

    predicted, expected = predictions_by_file(out), trained.job_predictions(1)
    assert sorted(predicted) == sorted(expected)
    assert np.ptp([values[1] for values in expected.values()]) > 0.05  # the model tells the files apart
    for item_id, values in expected.items():
        np.testing.assert_allclose(predicted[item_id], values, atol=1e-4)
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "duration_s", *DIMS]  # one model: no spread; its name is in preds.json
    described = json.loads((tmp_path / "preds.json").read_text())
    assert [(model["kind"], model["path"]) for model in described["models"]] == [
        ("torch", str(trained.jobs[1] / "checkpoints" / "best.pt"))
    ]
    assert described["scale"] == [1.0, 5.0] and described["spread"] is None
    assert float(rows[0]["duration_s"]) == pytest.approx(sf.info(files[Path(rows[0]["path"]).stem]).duration, abs=1e-3)
    # The pooled vectors, in the CSV's row order, are what the Python API's embed gives.
    vectors = np.load(tmp_path / "preds.embeddings.npy")
    wave, rate = sf.read(tmp_path / rows[-1]["path"])
    vector = load_model(trained.jobs[1]).embed(wave, rate)
    assert vectors.shape == (len(rows), len(vector))
    np.testing.assert_allclose(vectors[-1], vector, atol=1e-4)
    assert read_csv(tmp_path / "preds.skipped.csv") == []
    assert not (tmp_path / "preds.partial").exists()


@pytest.mark.slow
def test_load_model_predicts_as_the_job_did(trained):
    model = load_model(trained.jobs[1] / "checkpoints" / "best.pt", device="cpu")
    assert (model.dimensions, model.scale.low, model.scale.high) == (DIMS, 1.0, 5.0)
    expected = trained.job_predictions(1)
    for item_id, path in list(trained.test_files(1).items())[:3]:
        wave, rate = sf.read(path)
        predicted = model.predict(wave, rate)
        assert list(predicted) == list(DIMS)
        np.testing.assert_allclose([predicted[dim] for dim in DIMS], expected[item_id], atol=1e-4)


@pytest.mark.slow
def test_evaluate_py_reproduces_the_jobs_test_scores(trained, cache_dir, tmp_path):
    out = tmp_path / "evaluation"
    run_script(
        "evaluate.py",
        [f"ckpt={trained.jobs[1]}", *SMALL_DEMO, "data.fold=1", f"hydra.run.dir={out}", "evaluate.progress_bar=false"],
        cache_dir,
    )
    metrics, job = (json.loads((folder / "metrics.json").read_text()) for folder in (out, trained.jobs[1]))
    assert metrics["status"] == "evaluated"
    for key, value in job["test"].items():
        assert metrics["test"][key] == pytest.approx(value, abs=1e-6)
    assert metrics["checkpoints"] == [str(trained.jobs[1] / "checkpoints" / "best.pt")]
    assert metrics["data"] == {
        "name": "demo",
        "fold": 1,
        "test_set": None,
        "split": "test",
        "normalise": "training",
        "normalise_asked": "auto",  # auto, on the corpus it trained on: as in training
        "items": 8,
        "speakers": 2,
        "seen_speakers": 0,
        "seen_in_training": [],
    }
    assert metrics["val_best"] == job["val_best"]  # what the checkpoint was kept for, not a test score
    assert metrics["scale"]["mapped"] is False
    assert read_csv(out / "predictions.csv") == read_csv(trained.jobs[1] / "predictions.csv")


@pytest.mark.slow
def test_a_model_scored_on_a_corpus_recorded_elsewhere_keeps_its_score_with_that_corpus_statistics(
    trained, cache_dir, tmp_path
):
    elsewhere = recorded_elsewhere(tmp_path / "demo-elsewhere", cache_dir)

    def evaluated(out: str, *args: str) -> dict:
        every_item = ["evaluate.split=all", "data.fold=null"]
        return evaluate_in_process([f"ckpt={trained.jobs[1]}", *args, *every_item], tmp_path / out)

    original = evaluated("original", *SMALL_DEMO)["test"]["ccc_mean"]
    by_training = evaluated("training", "data=csv", f"data.manifest={elsewhere}", "evaluate.normalise=training")
    by_default = evaluated("auto", "data=csv", f"data.manifest={elsewhere}")
    assert by_default["data"]["normalise"] == "corpus"  # auto: another corpus gets its own statistics
    shifted, kept = (record["test"]["ccc_mean"] for record in (by_training, by_default))
    assert abs(kept - original) < abs(shifted - original)


@pytest.mark.slow
def test_a_model_standardised_by_another_corpus_gets_its_stored_statistics_back_when_asked_as_trained(
    trained, cache_dir
):
    model = load_model(trained.jobs[1])

    def statistics() -> dict:
        return {name: tensor.clone() for name, tensor in model.model.named_buffers() if name.endswith(STATISTICS)}

    stored = statistics()
    items = load_corpus(data_settings(["data=demo_b", *SMALL_DEMO, "data.fold=1"])).splits.test
    acoustic = model.acoustic_cache(cache_dir).ensure([item.path for item in items], 1)
    own = model.standardise_inputs("corpus", items, acoustic)
    assert set(own.by_group) == {""} and not torch.equal(statistics()["prosody_norm.mean"], stored["prosody_norm.mean"])
    assert model.standardise_inputs("training", items, acoustic) is None
    assert all(torch.equal(tensor, stored[name]) for name, tensor in statistics().items())


@pytest.mark.slow
def test_robustness_conditions_score_the_same_items_corrupted_and_clean_is_the_jobs_test(trained, cache_dir, tmp_path):
    out = tmp_path / "robustness"
    args = [f"ckpt={trained.jobs[1]}", *SMALL_DEMO, "data.fold=1"]
    metrics = evaluate_in_process([*args, "evaluate.conditions=[clean,snr20,snr0,reverb]"], out)
    job = json.loads((trained.jobs[1] / "metrics.json").read_text())
    conditions = metrics["conditions"]
    assert list(conditions) == ["clean", "snr20", "snr0", "reverb"]
    assert metrics["test"] == conditions["clean"] == pytest.approx(job["test"], abs=1e-6)
    clean = read_csv(out / "predictions.csv")
    change = {}
    for condition in ("snr20", "snr0", "reverb"):
        corrupted = read_csv(out / f"predictions.{condition}.csv")
        assert [row["id"] for row in corrupted] == [row["id"] for row in clean]
        pairs = zip(corrupted, clean, strict=True)
        change[condition] = np.mean(
            [abs(float(a[f"{d}_pred"]) - float(b[f"{d}_pred"])) for a, b in pairs for d in DIMS]
        )
    assert 0 < change["snr20"] < change["snr0"]  # the more noise, the further from what the clean audio gets
    assert change["reverb"] > 0
    assert (out / "robustness.png").stat().st_size > 0
    with pytest.raises(ValueError, match="'snr-x' is not a condition; use clean, snrN"):
        evaluate_in_process([*args, "evaluate.conditions=[clean,snr-x]"], tmp_path / "typo")


@pytest.mark.slow
def test_evaluating_a_fold_the_model_trained_on_says_it_is_no_test(trained, cache_dir, tmp_path):
    out = tmp_path / "evaluation"
    args = [f"ckpt={trained.jobs[2]}", *SMALL_DEMO, "data.fold=1", f"hydra.run.dir={out}"]
    result = run_script("evaluate.py", args, cache_dir)
    data = json.loads((out / "metrics.json").read_text())["data"]
    # Fold 2's model trained on sessions 4, 5 and 1: both speakers of session 1.
    reason = "the model trained or validated on 2 of the 2 speakers of its test split (demo): the scores are not a test"
    assert (data["speakers"], data["seen_speakers"]) == (2, 2)
    assert data["seen_in_training"] == [f"{trained.jobs[2] / 'checkpoints' / 'best.pt'}: {reason}"]
    assert reason in result.stderr + result.stdout


def untrained_checkpoint(overrides: list[str], path: Path) -> Path:
    """A checkpoint as training writes it (model_recipe), of a model that never trained: what its recipe says
    of its corpus and speakers is what is tested, not its predictions."""
    cfg = compose_config(["experiment=demo", *overrides])
    corpus = load_corpus(DataSettings.of(cfg.data))
    model = untrained_model(cfg, corpus.dimensions)
    recipe = model_recipe(JobSettings.of(cfg), corpus, model)
    save_checkpoint(path, {"model": model.checkpoint_state(), "recipe": recipe})
    return path


@pytest.mark.slow
def test_a_checkpoint_records_the_speakers_it_trained_and_validated_on_hashed(trained):
    recipe = read_checkpoint(trained.jobs[1] / "checkpoints" / "best.pt")["recipe"]
    corpus = load_corpus(data_settings([*SHORT, "data.fold=1"]))
    # Fold 1: tests session 1, validates on session 2, trains on sessions 3–5, two speakers each.
    assert {item.fold for item in corpus.splits.val} == {2}
    assert recipe["speakers"] == {
        "trained": sorted(corpus.speaker_keys(corpus.splits.train)),
        "validated": sorted(corpus.speaker_keys(corpus.splits.val)),
    }
    assert (len(recipe["speakers"]["trained"]), len(recipe["speakers"]["validated"])) == (6, 2)
    assert not {item.speaker for item in corpus.splits.all} & {*recipe["speakers"]["trained"]}  # no ids kept


@pytest.mark.slow
def test_an_ensemble_evaluated_on_every_item_without_a_fold_counts_the_speakers_any_model_knows(trained, tmp_path):
    metrics = evaluate_in_process(
        [f"ckpt={trained.sweep}", *SMALL_DEMO, "evaluate.split=all", "data.fold=null"], tmp_path / "all"
    )
    reason = (
        "the model trained or validated on 8 of the 10 speakers of the whole corpus (demo): the scores are not a test"
    )
    assert metrics["fold"] is None
    assert metrics["data"] == {
        "name": "demo",
        "fold": None,
        "test_set": None,
        "split": "all",
        "normalise": "training",
        "normalise_asked": "auto",
        "items": 40,
        "speakers": 10,
        "seen_speakers": 10,  # fold 1's model never saw session 1, fold 2's never session 2: together, all
        "seen_in_training": [f"{trained.jobs[fold] / 'checkpoints' / 'best.pt'}: {reason}" for fold in (1, 2)],
    }


def test_a_model_of_one_csv_corpus_is_tested_cleanly_on_another_and_not_on_its_own(cache_dir, tmp_path):
    columns = ["path", "speaker", "arousal", "valence", "dominance", "fold"]
    manifest = {name: csv_tree(tmp_path / name, columns) for name in ("ravdess", "cremad")}
    ckpt = untrained_checkpoint(["data=csv", f"data.manifest={manifest['ravdess']}", "data.fold=1"], tmp_path / "r.pt")
    every_item = ["evaluate.split=all", "data.fold=null"]
    # Both corpora name their six speakers s0…s5: different people, told apart by the corpus's name.
    other = evaluate_in_process(
        [f"ckpt={ckpt}", "data=csv", f"data.manifest={manifest['cremad']}", *every_item], tmp_path / "c"
    )
    assert (other["data"]["name"], other["data"]["speakers"]) == ("cremad", 6)
    assert (other["data"]["seen_speakers"], other["data"]["seen_in_training"]) == (0, [])
    own = evaluate_in_process(
        [f"ckpt={ckpt}", "data=csv", f"data.manifest={manifest['ravdess']}", *every_item], tmp_path / "r"
    )
    # Fold 1 (speaker % 3 + 1) tests s0 and s3; the model validated on s1, s4 and trained on s2, s5.
    assert (own["data"]["speakers"], own["data"]["seen_speakers"]) == (6, 4)
    assert own["data"]["seen_in_training"] == [
        f"{ckpt}: the model trained or validated on 4 of the 6 speakers of the whole corpus (ravdess): the scores "
        "are not a test"
    ]


def test_speaker_folds_made_with_another_seed_are_no_test_of_the_same_fold(cache_dir, tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "valence", "dominance"])
    data = ["data=csv", f"data.manifest={manifest}", "data.n_folds=3", "data.fold=1"]
    ckpt = untrained_checkpoint([*data, "data.split_seed=0"], tmp_path / "seed0.pt")
    tests = {
        seed: {i.speaker for i in load_corpus(data_settings([*data, f"data.split_seed={seed}"])).splits.test}
        for seed in (0, 1)
    }
    assert tests == {0: {"s3", "s4"}, 1: {"s1", "s4"}}  # s1 is among seed 0's training or validation speakers
    metrics = evaluate_in_process([f"ckpt={ckpt}", *data, "data.split_seed=1"], tmp_path / "seed1")
    assert (metrics["data"]["speakers"], metrics["data"]["seen_speakers"]) == (2, 1)
    assert metrics["data"]["seen_in_training"] == [
        f"{ckpt}: the model trained or validated on 1 of the 2 speakers of its test split (corpus): the scores are "
        "not a test"
    ]


@pytest.mark.slow
def test_a_checkpoint_without_speakers_still_loads_and_is_compared_by_corpus_and_fold(trained, tmp_path):
    state = load_checkpoint(trained.jobs[2] / "checkpoints" / "best.pt")
    del state["recipe"]["speakers"]  # as checkpoints were written before they recorded speakers
    old = tmp_path / "old.pt"
    torch.save(state, old)
    metrics = evaluate_in_process([f"ckpt={old}", *SMALL_DEMO, "data.fold=1"], tmp_path / "evaluation")
    assert (metrics["data"]["speakers"], metrics["data"]["seen_speakers"]) == (2, None)
    assert metrics["data"]["seen_in_training"] == [
        f"{old}: the model was trained on demo with data.fold=2, so its test split may hold speakers it trained or "
        "validated on: the scores are not a test (approximate: its checkpoint records no speakers, so only the "
        "corpus name and the fold were compared)"
    ]
    corpus = load_corpus(data_settings([*SHORT, "data.fold=2"]))
    assert seen_speakers(state["recipe"], corpus, corpus.splits.test, "its test split", "test", 2).warning is None


@pytest.mark.slow
def test_evaluate_py_maps_predictions_to_another_rating_scale_and_says_so(trained, cache_dir, tmp_path):
    out = tmp_path / "evaluation"
    args = [f"ckpt={trained.jobs[1]}", *SMALL_DEMO, "data.label_range=[1,7]", f"hydra.run.dir={out}"]
    run_script("evaluate.py", args, cache_dir)
    scale = json.loads((out / "metrics.json").read_text())["scale"]
    assert (scale["model"], scale["data"], scale["mapped"]) == ([1.0, 5.0], [1.0, 7.0], True)
    on_five = {row["id"]: row for row in read_csv(trained.jobs[1] / "predictions.csv")}
    for row in read_csv(out / "predictions.csv"):
        trained_scale = float(on_five[row["id"]]["valence_pred"])
        assert float(row["valence_pred"]) == pytest.approx((trained_scale - 1) / 4 * 6 + 1, abs=2e-4)


@pytest.mark.slow
def test_a_configuration_folder_predicts_with_the_mean_of_its_fold_models(trained, cache_dir, tmp_path):
    files = trained.test_files(1)
    out = tmp_path / "ensemble.csv"
    predict_py(cache_dir, f"ckpt={trained.sweep}", f"input={manifest_of(files.values(), tmp_path)}", f"output={out}")
    ensemble = {Path(row["path"]).stem: row for row in read_csv(out)}
    singles = [load_model(trained.jobs[fold]) for fold in (1, 2)]
    for item_id, path in files.items():
        wave, rate = sf.read(path)
        each = np.array([[model.predict(wave, rate)[dim] for dim in DIMS] for model in singles])
        np.testing.assert_allclose([float(ensemble[item_id][dim]) for dim in DIMS], each.mean(axis=0), atol=1e-4)
        # The spread beside the mean: the two models' standard deviation.
        spread = [float(ensemble[item_id][f"{dim}_std"]) for dim in DIMS]
        np.testing.assert_allclose(spread, each.std(axis=0), atol=1e-4)
    described = json.loads(out.with_suffix(".json").read_text())
    assert [model["path"] for model in described["models"]] == [
        str(trained.jobs[fold] / "checkpoints" / "best.pt") for fold in (1, 2)
    ]
    assert described["spread"] == "<dimension>_std: the standard deviation of the 2 models' predictions"


@pytest.mark.slow
def test_a_job_folder_whose_name_looks_like_a_pattern_is_taken_as_written(trained, tmp_path):
    job = shutil.copytree(trained.jobs[1], tmp_path / "data.fold=1,model.speech_encoder_layers=[6,12,18,24]")
    assert find_checkpoints(job) == [job / "checkpoints" / "best.pt"]
    assert find_checkpoints(tmp_path / "data.fold=1,*") == [job / "checkpoints" / "best.pt"]  # a pattern


@pytest.mark.slow
def test_a_folder_of_several_configurations_is_not_averaged(trained, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(trained.sweep, sweep)
    other = sweep / "model.d_hidden=8"
    shutil.copytree(trained.jobs[1], other)
    overrides = other / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- model.d_hidden=8\n")
    with pytest.raises(CheckpointError, match="2 configurations"):
        load_model(sweep)


@pytest.mark.slow
def test_a_checkpoint_rebuilds_its_model_after_its_job_folder_is_gone(trained, tmp_path):
    job = shutil.copytree(trained.jobs[2], tmp_path / "job")
    kept = shutil.copy(job / "checkpoints" / "best.pt", tmp_path / "model.pt")
    shutil.rmtree(job)
    recipe = read_checkpoint(Path(kept))["recipe"]
    # The tiny encoder is random-init: its weights travel in the checkpoint, as a fine-tuned one's do.
    assert (recipe["encoder_weights"], recipe["dimensions"], recipe["label_scale"]) == (
        "checkpoint",
        list(DIMS),
        [1, 5],
    )
    assert recipe["encoder"]["name"] == "tiny" and recipe["model"]["d_hidden"] == 256
    wave, rate = sf.read(next(iter(trained.test_files(2).values())))
    assert load_model(kept).predict(wave, rate) == load_model(trained.jobs[2]).predict(wave, rate)


def write_tone(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(3 * t))) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, np.repeat(wave[:, None], channels, axis=1), rate)


@pytest.mark.slow
def test_a_folder_with_bad_files_predicts_the_good_ones_and_lists_the_bad(trained, cache_dir, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is not audio\n")
    write_tone(folder / "stereo48k.wav", 2.0, 48000, channels=2)
    write_tone(folder / "mono16k.wav", 1.5, 16000, seed=1)
    (folder / "readme.txt").write_text("not a recording, not an audio extension: ignored\n")
    out = tmp_path / "out" / "preds.csv"
    predict_py(cache_dir, f"ckpt={trained.jobs[1]}", f"input={folder}", f"output={out}")

    predicted = predictions_by_file(out)
    assert sorted(predicted) == ["mono16k", "stereo48k"]
    skipped = {Path(row["path"]).name: row["reason"] for row in read_csv(out.with_name("preds.skipped.csv"))}
    assert sorted(skipped) == ["empty.wav", "notes.wav"]
    assert all(reason.startswith("unreadable") for reason in skipped.values())
    wave, rate = sf.read(folder / "stereo48k.wav")
    assert wave.shape[1] == 2 and rate == 48000
    api = load_model(trained.jobs[1]).predict(wave, rate)
    np.testing.assert_allclose(predicted["stereo48k"], [api[dim] for dim in DIMS], atol=1e-4)


@pytest.mark.slow
def test_predict_py_windows_cover_each_file(trained, cache_dir, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    write_tone(folder / "long.wav", 2.5, 16000)
    write_tone(folder / "short.wav", 0.6, 16000, seed=1)
    out = tmp_path / "preds.csv"
    args = ["predict.window_seconds=1.0", "predict.window_hop_seconds=0.5"]
    predict_py(cache_dir, f"ckpt={trained.jobs[1]}", f"input={folder}", f"output={out}", *args)
    rows = read_csv(tmp_path / "preds.windows.csv")
    spans = {
        name: [(float(r["start_s"]), float(r["end_s"])) for r in rows if Path(r["path"]).stem == name]
        for name in ("long", "short")
    }
    assert spans["long"] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]
    assert spans["short"] == [(0.0, 0.6)]
    # A file shorter than the window is one window: the file itself.
    short = next(r for r in rows if Path(r["path"]).stem == "short")
    np.testing.assert_allclose([float(short[dim]) for dim in DIMS], predictions_by_file(out)["short"], atol=1e-4)
    # The same output again without windows replaces the table and leaves no windows of the run before.
    predict_py(cache_dir, f"ckpt={trained.jobs[1]}", f"input={folder / 'long.wav'}", f"output={out}")
    assert list(predictions_by_file(out)) == ["long"] and not (tmp_path / "preds.windows.csv").exists()


def test_windows_step_on_the_frame_grid_and_keep_a_last_one_long_enough():
    # 2.5 s at 16 kHz, 1 s windows every 0.5 s on a 320-sample grid.
    spans = windows([40000, 4000], 1.0, 0.5, 0.25, 16000, 320)
    assert [(s.item, s.start) for s in spans] == [(0, 0), (0, 8000), (0, 16000), (0, 24000), (1, 0)]
    assert {s.length for s in spans} == {16000}
    # 2.1 s in 1 s windows leaves 0.1 s for a third: dropped below min_seconds, kept above it.
    assert [s.start for s in windows([33600], 1.0, 1.0, 0.25, 16000, 320)] == [0, 16000]
    assert windows([33600], 1.0, 1.0, 0.05, 16000, 320)[-1] == Segment(0, 32000, 16000)


@pytest.mark.slow
def test_an_interrupted_prediction_resumes_where_it_stopped(trained, cache_dir, tmp_path, monkeypatch):
    files = list(trained.test_files(1).values())

    def predict_cfg(output: Path, resume: bool):
        resuming = ["predict.save_every=3", "predict.workers=0", f"predict.resume={str(resume).lower()}"]
        return predict_config(trained.jobs[1], manifest_of(files, tmp_path), output, *resuming)

    fresh = run_predict(predict_cfg(tmp_path / "fresh.csv", resume=False))
    blocks = []
    real_outputs = TrainedModel.outputs

    def interrupted_after_two_blocks(self, dataset, *args, **kwargs):
        blocks.append(len(dataset))
        if len(blocks) == 3:
            raise KeyboardInterrupt
        return real_outputs(self, dataset, *args, **kwargs)

    def counted(self, dataset, *args, **kwargs):
        blocks.append(len(dataset))
        return real_outputs(self, dataset, *args, **kwargs)

    monkeypatch.setattr(TrainedModel, "outputs", interrupted_after_two_blocks)
    output = tmp_path / "preds.csv"
    with pytest.raises(KeyboardInterrupt):
        run_predict(predict_cfg(output, resume=False))
    assert not output.exists()  # nothing half-written
    assert len(list((tmp_path / "preds.partial").glob("*.npz"))) == 2

    blocks.clear()
    monkeypatch.setattr(
        TrainedModel,
        "outputs",
        lambda self, dataset, *a, **k: blocks.append(len(dataset)) or real_outputs(self, dataset, *a, **k),
    )
    run_predict(predict_cfg(output, resume=True))
    assert blocks == [len(files) - 6]  # only what the interrupted run had left
    assert output.read_text() == fresh.table.read_text()
    assert not (tmp_path / "preds.partial").exists()


@pytest.mark.slow
def test_a_resumed_prediction_whose_speakers_changed_reuses_no_block(trained, tmp_path, monkeypatch):
    files, output = list(trained.test_files(1).values()), tmp_path / "preds.csv"
    resuming = ["predict.save_every=3", "predict.workers=0"]
    real_outputs, blocks = TrainedModel.outputs, []

    def counted(self, dataset, *args, **kwargs):
        blocks.append(len(dataset))
        if len(blocks) == 2 and interrupting:
            raise KeyboardInterrupt
        return real_outputs(self, dataset, *args, **kwargs)

    monkeypatch.setattr(TrainedModel, "outputs", counted)
    interrupting, one_speaker = True, manifest_of(files, tmp_path, ["s0"] * len(files))
    with pytest.raises(KeyboardInterrupt):
        run_predict(predict_config(trained.jobs[1], one_speaker, output, *resuming))
    assert len(list((tmp_path / "preds.partial").glob("*.npz"))) == 1

    # A speaker-normalised model would standardise these files with other statistics.
    other_speakers = manifest_of(files, tmp_path, [f"s{i % 2}" for i in range(len(files))])
    interrupting, blocks[:] = False, []
    with pytest.raises(InputError, match=r"written with other speakers \(.*run without predict.resume=true"):
        run_predict(predict_config(trained.jobs[1], other_speakers, output, *resuming, "predict.resume=true"))
    assert blocks == [] and not output.exists()


@pytest.mark.slow
def test_a_missing_or_foreign_checkpoint_is_one_clear_error(trained, cache_dir, tmp_path):
    # The script turns a CheckpointError into one message and exit code 2, before it writes anything.
    wav = next(iter(trained.test_files(1).values()))
    missing = predict_py(cache_dir, f"ckpt={tmp_path}/nothing", f"input={wav}", f"output={tmp_path}/p.csv", check=False)
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "p.csv").exists()
    # Files that are there but hold no usable model (checked in-process: each script start costs seconds).
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    old = tmp_path / "old.pt"
    torch.save(
        {k: v for k, v in load_checkpoint(trained.jobs[1] / "checkpoints" / "best.pt").items() if k != "recipe"}, old
    )
    for path, message in (
        (foreign, "holds no model state"),
        (text, "not a checkpoint that torch loads"),
        (old, "holds weights only"),
    ):
        with pytest.raises(CheckpointError, match=message) as caught:
            read_checkpoint(path)
        assert str(path) in str(caught.value)


def model_for(overrides: list[str]):
    cfg = compose_config([*SHORT, *overrides])
    return cfg, untrained_model(cfg, DIMS)


@pytest.mark.slow
def test_init_from_starts_from_the_checkpoints_weights_and_its_first_loss(trained):
    best = trained.jobs[1] / "checkpoints" / "best.pt"
    _, model = model_for([])
    start = initialise_from(model, best)
    assert (start.checkpoint, start.fresh, start.unused) == (best, [], [])
    reference = rebuild(read_checkpoint(best))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    # The first training step's loss is the checkpoint's on the same batch (dropout and masks drawn alike).
    generator = torch.Generator().manual_seed(0)
    waves = torch.randn(4, 16000, generator=generator) * 0.1
    lengths = torch.tensor([16000, 15000, 12000, 9000])
    prosody = torch.randn(4, model.encoder.grid.count(16000), 25, generator=generator)
    functionals, labels = torch.randn(4, 88, generator=generator), torch.rand(4, 3, generator=generator)
    losses = []
    for candidate in (model, reference):
        candidate.train()
        torch.manual_seed(1)
        losses.append(ccc_loss(candidate(waves, lengths, prosody, functionals=functionals), labels))
    assert losses[0].item() == pytest.approx(losses[1].item(), abs=1e-6)


@pytest.mark.slow
def test_init_from_counts_the_test_speakers_its_checkpoint_trained_or_validated_on(trained):
    _, model = model_for([])
    corpus = load_corpus(data_settings([*SHORT, "data.fold=1"]))
    for fold, seen, warning in (
        (1, 0, None),
        (
            2,
            2,
            "the model trained or validated on 2 of the 2 speakers of this job's test split (demo): the scores "
            "are not a test",
        ),
    ):
        best = trained.jobs[fold] / "checkpoints" / "best.pt"
        record = initialise_from(model, best).record(corpus, 1)
        assert record == {"checkpoint": str(best), "seen_test_speakers": seen, "warning": warning}


@pytest.mark.slow
def test_init_from_fine_tunes_another_head_set_and_names_keys_that_do_not_fit(trained):
    best = trained.jobs[1] / "checkpoints" / "best.pt"
    cfg = compose_config(SHORT)
    model = untrained_model(cfg, ("arousal", "valence"))
    start = initialise_from(model, best)
    assert start.fresh == [] and start.unused and all(key.startswith("heads.dominance.") for key in start.unused)
    _, wider = model_for(["model.d_hidden=128"])
    with pytest.raises(CheckpointError, match=r"fuse\.0\.weight \(256, 128\) vs \(128, 128\)"):
        initialise_from(wider, best)


@pytest.mark.slow
def test_a_job_from_a_checkpoint_validates_as_the_checkpoint_did(trained, cache_dir, tmp_path):
    # A learning rate too small to move the weights: the first epoch's validation is the checkpoint's own.
    out = tmp_path / "fine-tuned"
    args = [*SHORT, "trainer.max_epochs=1", "optim.lr=1e-12", "optim.encoder_lr=0", f"hydra.run.dir={out}"]
    run_train([*args, f"model.init_from={trained.jobs[1]}"], cache_dir)
    val = read_csv(out / "history.csv")[0]
    val_best = json.loads((trained.jobs[1] / "metrics.json").read_text())["val_best"]
    for key in ("ccc_a", "ccc_v", "ccc_d"):
        assert float(val[f"val_{key}"]) == pytest.approx(val_best[key], abs=1e-5)
    start = trained.jobs[1] / "checkpoints" / "best.pt"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init_from"] == {"checkpoint": str(start), "seen_test_speakers": 0, "warning": None}
    # The fine-tuned model learned from its start's speakers too: session 2's, which it validated on.
    started, fine_tuned = (
        read_checkpoint(path)["recipe"]["speakers"] for path in (start, out / "checkpoints" / "best.pt")
    )
    assert fine_tuned == {
        "trained": sorted({*started["trained"], *started["validated"]}),
        "validated": started["validated"],
    }

    other = tmp_path / "wider"
    wider = [*args, f"hydra.run.dir={other}", "model.d_hidden=128", f"model.init_from={trained.jobs[1]}"]
    mismatched = run_train(wider, cache_dir, check=False)
    assert mismatched.returncode == 2
    assert "fuse.0.weight" in mismatched.stderr and "Traceback" not in mismatched.stderr
    assert json.loads((other / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_evaluate_py_sweeps_checkpoints_into_the_report(trained, cache_dir, tmp_path):
    sweep = tmp_path / "evaluations"
    checkpoints = ",".join(f"'{trained.jobs[fold]}'" for fold in (1, 2))
    args = ["-m", f"ckpt={checkpoints}", *SMALL_DEMO, "data.fold=1", f"hydra.sweep.dir={sweep}"]
    run_script("evaluate.py", [*args, "evaluate.progress_bar=false"], cache_dir)
    _, records = summarise(sweep)
    assert len(records) == 2 and all(record.runs_done == 1 for record in records)
    job = json.loads((trained.jobs[1] / "metrics.json").read_text())
    assert job["test"]["ccc_v"] in [pytest.approx(record.scores["ccc_v"].mean, abs=1e-6) for record in records]
    assert (sweep / "summary.md").is_file()


def test_job_folders_need_no_quoting_on_the_command_line():
    argv = [
        "predict.py",
        "ckpt=multirun/x/data.fold=1,model.d_hidden=8",
        "input=a.wav",
        "ckpt='quoted=1'",
        "data.fold=1",
    ]
    quote_paths(argv)
    assert argv == [
        "predict.py",
        "ckpt='multirun/x/data.fold=1,model.d_hidden=8'",
        "input=a.wav",
        "ckpt='quoted=1'",
        "data.fold=1",
    ]


@pytest.mark.slow
def test_the_api_takes_any_rate_and_channel_count_and_refuses_too_short_audio(trained):
    model = load_model(trained.jobs[1])
    with pytest.raises(ValueError, match="shorter than this model's 0.25 s"):
        model.predict(np.zeros(1000, dtype=np.float32), 16000)
    wave, rate = sf.read(next(iter(trained.test_files(1).values())))
    at_44k = soxr.resample(wave, rate, 44100).astype(np.float32)
    stereo = np.stack([at_44k, at_44k], axis=1)
    # Resampled and mixed down as training decodes files: soxr's high quality, then the model's rate.
    assert model.predict(stereo, 44100) == model.predict(soxr.resample(at_44k, 44100, 16000, quality="HQ"), 16000)


@pytest.mark.slow
def test_a_speaker_normalised_model_is_evaluated_with_its_speakers_statistics(cache_dir, tmp_path):
    job, evaluation = tmp_path / "job", tmp_path / "evaluation"
    run_train([*SHORT, "trainer.max_epochs=2", "data.normalise=speaker", f"hydra.run.dir={job}"], cache_dir)
    args = [f"ckpt={job}", *SMALL_DEMO, f"hydra.run.dir={evaluation}", "evaluate.progress_bar=false"]
    run_script("evaluate.py", args, cache_dir)
    trained_scores, evaluated = (json.loads((f / "metrics.json").read_text())["test"] for f in (job, evaluation))
    assert evaluated == pytest.approx(trained_scores, abs=1e-6)
    wave, rate = sf.read(next(iter(Trained(job, {}).test_files(1).values())))
    with pytest.raises(ValueError, match="data.normalise=speaker"):
        load_model(job).predict(wave, rate)  # one recording has no speaker statistics


@pytest.mark.slow
def test_a_fine_tuned_encoder_travels_in_its_checkpoint_and_a_frozen_pretrained_one_is_reloaded(cache_dir, tmp_path):
    source = tmp_path / "pretrained-wavlm"
    load_wavlm(EncoderSettings.of(compose_config(SHORT).encoder)).save_pretrained(source)  # a downloaded WavLM
    wave, rate = sf.read(next(iter(Trained(tmp_path, {}).test_files(1).values())))
    before = {}
    for freeze in (True, False):
        job = tmp_path / f"freeze-{freeze}"
        args = [*SHORT, "trainer.max_epochs=1", f"encoder.source={source}", f"encoder.freeze={freeze}"]
        run_train([*args, f"hydra.run.dir={job}"], cache_dir)
        recipe = read_checkpoint(job / "checkpoints" / "best.pt")["recipe"]
        assert recipe["encoder_weights"] == ("source" if freeze else "checkpoint")
        before[freeze] = load_model(job).predict(wave, rate)
    source.rename(tmp_path / "moved")
    assert load_model(tmp_path / "freeze-False").predict(wave, rate) == before[False]  # needs no source
    with pytest.raises(EncoderNotFoundError, match="encoder.source="):
        load_model(tmp_path / "freeze-True")  # frozen: its weights were never copied into the checkpoint
    (tmp_path / "moved").rename(source)
    assert load_model(tmp_path / "freeze-True").predict(wave, rate) == before[True]


@pytest.mark.slow
def test_a_frozen_model_started_from_a_carried_encoder_keeps_carrying_it(trained, tmp_path):
    source = tmp_path / "pretrained-wavlm"
    load_wavlm(EncoderSettings.of(compose_config(SHORT).encoder)).save_pretrained(source)
    _, model = model_for([f"encoder.source={source}", "encoder.freeze=true"])
    assert model.encoder.restored_from_source  # frozen and pretrained: its checkpoints would leave it out
    initialise_from(model, trained.jobs[1] / "checkpoints" / "best.pt")  # whose encoder is not the source's
    assert any(key.startswith("encoder.wavlm.") for key in model.checkpoint_state())
