"""predict.py on long recordings: speech segments predicted as utterances, files without speech reported, an
ensemble's spread, the run described once in <name>.json, pictures, and resuming; and how well evaluate.py
finds that spread ranks errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import emotion.prediction.run as prediction_run
from emotion.prediction import InputError, run_predict
from emotion.trained import TrainedModel
from emotion.uncertainty import spread_ranking
from tests.conftest import SMALL_DEMO, TRAINED_DIMENSIONS, evaluate_in_process, predict_config, read_csv

DIMS = TRAINED_DIMENSIONS
RATE = 16000
VAD = ["predict.segment=vad", "predict.workers=0"]


def chords(seconds: float) -> np.ndarray:
    """Held triads of harmonic tones: music, which holds no speech."""
    t = np.arange(int(seconds * RATE)) / RATE
    notes = sum(np.sin(2 * np.pi * f * n * t) / n for f in (261.6, 329.6, 392.0) for n in range(1, 7))
    return (0.1 * notes / np.abs(notes).max()).astype(np.float32)


def recordings(folder: Path, utterances: list[Path]) -> list[tuple[float, float]]:
    """A talk (the utterances between pauses of 1–2 s), silence and music in `folder`; where the talk's
    utterances are, in seconds."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    pieces, placed, at = [], [], 0.0
    for path in utterances:
        pause = np.zeros(int(rng.uniform(1.0, 2.0) * RATE), np.float32)
        wave = sf.read(path, dtype="float32")[0]
        pieces += [pause, wave]
        at += len(pause) / RATE
        placed.append((at, at + len(wave) / RATE))
        at += len(wave) / RATE
    sf.write(folder / "talk.wav", np.concatenate([*pieces, np.zeros(RATE, np.float32)]), RATE)
    sf.write(folder / "silence.wav", 1e-4 * rng.standard_normal(5 * RATE).astype(np.float32), RATE)
    sf.write(folder / "music.wav", chords(6.0), RATE)
    return placed


@pytest.fixture(scope="module")
def long_input(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("long") / "recordings"
    return folder, recordings(folder, sorted(trained.test_files(1).values()))


def by_name(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(Path(row["path"]).stem, []).append(row)
    return grouped


def values(row: dict, suffix: str = "") -> np.ndarray:
    return np.array([float(row[f"{dim}{suffix}"]) for dim in DIMS])


@pytest.mark.slow
def test_speech_segments_are_predicted_as_utterances_and_files_without_speech_are_reported(
    trained, long_input, tmp_path
):
    folder, placed = long_input
    out = tmp_path / "long.csv"
    run_predict(predict_config(trained.sweep, folder, out, *VAD, "predict.plot=true"))

    files = {name: rows[0] for name, rows in by_name(read_csv(out)).items()}
    for quiet in ("silence", "music"):  # reported, not predicted
        assert files[quiet]["speech_s"] == "0.000" and files[quiet]["segments"] == "0"
        assert all(files[quiet][column] == "" for column in (*DIMS, *(f"{dim}_std" for dim in DIMS)))
    segments = by_name(read_csv(tmp_path / "long.segments.csv"))
    assert list(segments) == ["talk"]
    talk = segments["talk"]
    assert int(files["talk"]["segments"]) == len(talk) >= len(placed) // 2
    spans = [(float(row["start_s"]), float(row["end_s"])) for row in talk]
    for start, end in spans:  # each segment is speech: inside one placed utterance, give or take the detector
        assert any(first - 0.3 <= start < end <= last + 0.3 for first, last in placed), (start, end)
    assert float(files["talk"]["speech_s"]) == pytest.approx(sum(end - start for start, end in spans), abs=2e-3)

    # A file's prediction is its segments' weighted by their durations (the mean is linear: per model or not).
    seconds = np.array([end - start for start, end in spans])
    weighted = (np.array([values(row) for row in talk]) * seconds[:, None]).sum(axis=0) / seconds.sum()
    np.testing.assert_allclose(values(files["talk"]), weighted, atol=2e-4)

    # Each segment is an utterance of its own: cut out and predicted as a file, it gets the same prediction
    # and spread, its acoustic features its own, not the whole recording's.
    start, end = spans[0]
    clip, _ = sf.read(folder / "talk.wav", start=round(start * RATE), stop=round(end * RATE), dtype="float32")
    sf.write(tmp_path / "clip.wav", clip, RATE)
    alone = read_csv(run_predict(predict_config(trained.sweep, tmp_path / "clip.wav", tmp_path / "clip.csv")).table)
    np.testing.assert_allclose(values(alone[0]), values(talk[0]), atol=2e-4)
    np.testing.assert_allclose(values(alone[0], "_std"), values(talk[0], "_std"), atol=2e-4)

    described = json.loads((tmp_path / "long.json").read_text())
    assert [model["path"] for model in described["models"]] == [
        str(trained.jobs[fold] / "checkpoints" / "best.pt") for fold in (1, 2)
    ]
    assert described["files_without_speech"] == 2 and described["run"]["segment"] == "vad"
    assert all((tmp_path / path).exists() for path in described["outputs"].values())
    page = (tmp_path / "long.plots" / "index.html").read_text()
    assert all(name in page for name in ("talk.wav", "silence.wav", "music.wav"))
    assert len(list((tmp_path / "long.plots").glob("*.png"))) == 3


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_speech_found_and_a_finished_one_is_not_run_again(
    trained, long_input, tmp_path, monkeypatch
):
    folder, _ = long_input
    searched, predicted, interrupting = [], [], False
    real_spans, real_outputs = prediction_run.speech_spans, TrainedModel.outputs

    def spans(path, settings):
        searched.append(Path(path).stem)
        if interrupting and len(searched) == 2:
            raise KeyboardInterrupt
        return real_spans(path, settings)

    def outputs(self, dataset, *args, **kwargs):
        predicted.append(len(dataset))
        return real_outputs(self, dataset, *args, **kwargs)

    monkeypatch.setattr(prediction_run, "speech_spans", spans)
    monkeypatch.setattr(TrainedModel, "outputs", outputs)
    fresh = run_predict(predict_config(trained.jobs[1], folder, tmp_path / "fresh.csv", *VAD)).table

    output, interrupting, searched[:] = tmp_path / "preds.csv", True, []
    with pytest.raises(KeyboardInterrupt):
        run_predict(predict_config(trained.jobs[1], folder, output, *VAD))
    assert not output.exists()
    assert list(json.loads((tmp_path / "preds.partial" / "speech.json").read_text())) == ["0"]

    interrupting, searched[:] = False, []
    run_predict(predict_config(trained.jobs[1], folder, output, *VAD, "predict.resume=true"))
    assert searched == ["silence", "talk"]  # music.wav, the first file, was searched before the interruption
    assert output.read_text() == fresh.read_text()
    assert (tmp_path / "preds.segments.csv").read_text() == (tmp_path / "fresh.segments.csv").read_text()

    # Its preds.json describes this very run with its outputs in place: nothing to do.
    searched[:], predicted[:] = [], []
    before = output.stat().st_mtime_ns
    run_predict(predict_config(trained.jobs[1], folder, output, *VAD, "predict.resume=true"))
    assert searched == [] and predicted == [] and output.stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_input_without_speech_is_reported_file_by_file_and_an_unfinished_run_leaves_no_description(
    trained, long_input, tmp_path, monkeypatch
):
    folder, _ = long_input
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    for name in ("silence.wav", "music.wav"):
        (quiet / name).symlink_to(folder / name)
    out = tmp_path / "quiet.csv"
    run_predict(predict_config(trained.sweep, quiet, out, *VAD, "predict.plot=true"))
    rows = read_csv(out)
    assert [(row["speech_s"], row["segments"], row["arousal"], row["arousal_std"]) for row in rows] == [
        ("0.000", "0", "", "")
    ] * 2
    assert read_csv(tmp_path / "quiet.segments.csv") == []
    assert json.loads((tmp_path / "quiet.json").read_text())["files_without_speech"] == 2
    assert len(list((tmp_path / "quiet.plots").glob("*.png"))) == 2

    # Another run to the same output, stopped once its table is written: no description of the run before
    # stays beside a table it did not write (predict.resume would trust it).
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prediction_run, "write_stretches", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_predict(predict_config(trained.jobs[1], quiet, out, *VAD))
    assert not (tmp_path / "quiet.json").exists()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["predict.window_seconds=2"], "predict.window_seconds applies to predict.segment=file"),
        (["predict.embeddings=true"], "predict.embeddings=true gives each whole file's pooled vector"),
        (["predict.max_segment_seconds=1.5"], "predict.max_segment_seconds=1.5 is below twice"),
        (["output=preds.txt"], "output='preds.txt': the output is a CSV file"),
    ],
)
def test_speech_settings_that_cannot_work_are_named_before_a_model_is_loaded(overrides, named, tmp_path):
    output = next((o.split("=", 1)[1] for o in overrides if o.startswith("output=")), tmp_path / "p.csv")
    cfg = predict_config(tmp_path / "no-model", tmp_path, output, *VAD, *overrides)
    with pytest.raises(InputError, match=named):  # not the missing checkpoint: the settings come first
        run_predict(cfg)


def test_spread_ranking_sees_a_spread_that_grows_with_the_error_and_one_that_does_not():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 1, (400, 1))
    error_size = rng.uniform(0.01, 0.5, 400)
    mean = true[:, 0] + error_size * rng.choice([-1, 1], 400)
    offsets = np.stack([-error_size, error_size], axis=1)  # two models either side of the mean
    telling = spread_ranking((mean[:, None] + offsets)[:, :, None], true, ("arousal",))["arousal"]
    assert telling["spearman"] > 0.6 and telling["ccc_certain"] > telling["ccc_uncertain"] + 0.2
    assert telling["mean_spread"] == pytest.approx(error_size.mean())
    shuffled = np.stack([-error_size, error_size], axis=1)[rng.permutation(400)]
    blind = spread_ranking((mean[:, None] + shuffled)[:, :, None], true, ("arousal",))["arousal"]
    assert abs(blind["spearman"]) < 0.15
    # Unrated items are left out; too few to halve give no figures.
    true[3:] = np.nan
    assert spread_ranking((mean[:, None] + offsets)[:, :, None], true, ("arousal",)) == {
        "arousal": {"items": 3, "spearman": None}
    }


@pytest.mark.slow
def test_evaluate_py_says_how_well_an_ensembles_spread_ranks_its_errors(trained, tmp_path):
    every_item = [*SMALL_DEMO, "evaluate.split=all", "data.fold=null"]
    ensemble = evaluate_in_process([f"ckpt={trained.sweep}", *every_item], tmp_path / "both")
    singles = [evaluate_in_process([f"ckpt={trained.jobs[f]}", *every_item], tmp_path / f"{f}") for f in (1, 2)]
    assert all("uncertainty" not in single for single in singles)  # one model has no spread
    rows = [{row["id"]: row for row in read_csv(tmp_path / f"{f}" / "predictions.csv")} for f in (1, 2)]
    ids = list(rows[0])
    members = np.stack([[[float(each[i][f"{dim}_pred"]) for dim in DIMS] for i in ids] for each in rows], axis=1)
    true = np.array([[float(rows[0][i][f"{dim}_true"]) for dim in DIMS] for i in ids])
    expected = spread_ranking((members - 1) / 4, (true - 1) / 4, DIMS)  # the demo's 1–5 scale, on [0, 1]
    for dim in DIMS:
        for key, value in expected[dim].items():
            assert ensemble["uncertainty"][dim][key] == pytest.approx(value, rel=1e-3, abs=1e-3), (dim, key)
