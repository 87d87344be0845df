"""export.py: trained models as one ONNX graph that predicts as torch does, for audonnx.load and for predict.py."""

from __future__ import annotations

import json
from pathlib import Path

import audonnx
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from hydra import compose, initialize_config_dir

from emotion import load_model
from emotion.cli import quote_paths
from emotion.data.corpus import Item
from emotion.export import ExportError, run_export
from emotion.exported import ExportedModel, batch_feeds, is_exported, load_predictors, open_session
from emotion.features.dataset import collate
from emotion.job import EXIT_CONFIG_ERROR
from emotion.models.grid import FrameGrid
from emotion.prediction import run_predict
from emotion.trained import TrainedModel
from emotion.training.checkpoints import save_checkpoint
from emotion.training.recipe import CheckpointError, read_checkpoint
from tests.conftest import CONF, TRAINED_DIMENSIONS, predict_config, read_csv, run_script

# Torch against onnxruntime, on the demo's rating scale (1–5): a tenth of what export.tolerance accepts by
# default. The exports below reach about 5e-6.
TOLERANCE = 1e-4
DEMO_SECONDS = (1.2, 3.0, 7.0)


def export_config(ckpt, output: Path, *overrides: str):
    """export.py's configuration, for run_export in this process."""
    overrides = [f"ckpt={ckpt}", f"output={output}", *overrides]
    quote_paths(overrides)  # as export.py does: job folders' names hold `=` and `,`
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("export", overrides)


@pytest.fixture(scope="module")
def single(trained, cache_dir, tmp_path_factory) -> Path:
    """Fold 1's model, exported over a folder an earlier export left (export.overwrite=true); in this process,
    as export.py's own start is tested with its errors below."""
    output = tmp_path_factory.mktemp("exports") / "fold1"
    output.mkdir()
    (output / "earlier.txt").write_text("an earlier export")
    run_export(export_config(trained.jobs[1], output, "export.overwrite=true"))
    return output


@pytest.fixture(scope="module")
def ensemble(trained, tmp_path_factory) -> Path:
    """Both folds' models (one configuration's folder), averaged in one graph."""
    output = tmp_path_factory.mktemp("exports") / "ensemble"
    run_export(export_config(trained.sweep, output))
    return output


def demo_waves(trained, seconds=DEMO_SECONDS) -> list[np.ndarray]:
    """Stretches of the demo's recordings (fold 1's test files, one after another) lasting `seconds`."""
    audio = np.concatenate([sf.read(path, dtype="float32")[0] for path in trained.test_files(1).values()])
    ends = np.cumsum([round(s * 16000) for s in seconds])
    assert ends[-1] <= len(audio)
    return [audio[end - round(s * 16000) : end] for s, end in zip(seconds, ends, strict=True)]


def dataset_of(model, waves: list[np.ndarray]):
    """`waves` as predict.py gives recordings to `model` (a TrainedModel or an ExportedModel)."""
    items = [Item(id=f"wave-{index}", path=Path("<memory>"), speaker="", labels=()) for index in range(len(waves))]
    acoustic = [model.acoustic_cache(".").compute_in_memory(wave) for wave in waves]
    return model.dataset(items, [len(wave) / model.sample_rate for wave in waves], acoustic, waves=waves)


def torch_and_onnx(model: TrainedModel, graph: Path, waves: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """`waves` in one zero-padded batch: the torch model's predictions on the rating scale, and the graph's outputs."""
    dataset = dataset_of(model, waves)
    batch = collate([dataset[index] for index in range(len(dataset))])
    with torch.no_grad():
        expected = model.model(batch.speech, batch.speech_lengths, batch.prosody, functionals=batch.functionals)
    session = open_session(graph)
    return model.scale.denormalise(expected.numpy()), session.run(None, batch_feeds(session, batch))


@pytest.mark.slow
def test_the_graph_predicts_as_torch_padded_in_one_batch_and_one_at_a_time(single, trained):
    model, waves = load_model(trained.jobs[1]), demo_waves(trained)
    expected, (emotion,) = torch_and_onnx(model, single / "model.onnx", waves)
    assert emotion.shape == (3, 3)
    assert np.ptp(expected, axis=0).max() > 0.05  # the recordings are told apart: no constant passes
    assert ((expected > 1) & (expected < 5)).sum() >= 2  # and not every value is clipped to the scale's ends
    np.testing.assert_allclose(emotion, expected, atol=TOLERANCE)
    for index, wave in enumerate(waves):  # traced on other lengths; each alone has no padding at all
        alone, (emotion_alone,) = torch_and_onnx(model, single / "model.onnx", [wave])
        np.testing.assert_allclose(emotion_alone, alone, atol=TOLERANCE)
        np.testing.assert_allclose(emotion_alone[0], expected[index], atol=TOLERANCE)  # padding changes nothing


@pytest.mark.slow
def test_audonnx_loads_the_export_and_predicts_any_rate_and_channels_as_load_model(single, trained):
    model, onnx_model = load_model(trained.jobs[1]), audonnx.load(str(single))
    assert onnx_model.labels("emotion") == list(TRAINED_DIMENSIONS)
    wave, rate = sf.read(next(iter(trained.test_files(1).values())), dtype="float32")
    at_44k = soxr.resample(wave, rate, 44100).astype(np.float32)
    stereo = np.stack([at_44k, 0.5 * at_44k])  # (channels, samples), as audiofile reads it
    for signal, signal_rate in ((wave, rate), (stereo, 44100)):
        expected = model.predict(signal.T, signal_rate)  # (samples, channels), as soundfile reads it
        predicted = onnx_model(signal, signal_rate)
        assert predicted.shape == (1, 3)
        np.testing.assert_allclose(predicted[0], [expected[dim] for dim in TRAINED_DIMENSIONS], atol=TOLERANCE)


@pytest.mark.slow
def test_an_ensemble_graph_gives_each_members_prediction_and_their_mean(ensemble, trained):
    models, waves = [load_model(trained.jobs[fold]) for fold in (1, 2)], demo_waves(trained)
    each = [torch_and_onnx(model, ensemble / "model.onnx", waves) for model in models]
    emotion, members = each[0][1]
    assert members.shape == (3, 2, 3)
    for index, (expected, _) in enumerate(each):
        np.testing.assert_allclose(members[:, index], expected, atol=TOLERANCE)
    assert np.abs(each[0][0] - each[1][0]).max() > 0.05  # two different models
    np.testing.assert_allclose(emotion, (each[0][0] + each[1][0]) / 2, atol=TOLERANCE)
    by_audonnx = audonnx.load(str(ensemble))(waves[1], 16000)
    assert set(by_audonnx) == {"emotion", "members"}
    np.testing.assert_allclose(by_audonnx["emotion"][0], emotion[1], atol=TOLERANCE)


@pytest.mark.slow
def test_load_predictors_runs_an_export_through_the_data_path_of_its_checkpoints(single, ensemble, trained):
    waves = demo_waves(trained)
    models = [load_model(trained.jobs[fold]) for fold in (1, 2)]
    expected = [model.member_outputs(dataset_of(model, waves)) for model in models]  # [0, 1] scale
    for folder, members in ((single, expected[:1]), (ensemble, expected)):
        assert is_exported(folder) and not is_exported(trained.jobs[1])
        (exported,) = load_predictors(folder)
        assert isinstance(exported, ExportedModel)
        assert (exported.members, exported.dimensions) == (len(members), TRAINED_DIMENSIONS)
        assert (exported.sample_rate, exported.grid, exported.min_seconds) == (16000, FrameGrid(400, 320), 0.25)
        assert exported.normalisation == "training"
        assert exported.output_scale(None) == models[0].scale
        outputs = exported.member_outputs(dataset_of(exported, waves), batch_size=2)
        assert outputs.shape == (3, len(members), 3)
        np.testing.assert_allclose(outputs, np.concatenate(members, axis=1), atol=TOLERANCE / 4)
        described = exported.describe()
        assert (described["kind"], described["members"]) == ("onnx", len(members))
        assert described["path"] == str(folder / "model.onnx")
    assert [type(model) for model in load_predictors(trained.sweep)] == [TrainedModel, TrainedModel]
    with pytest.raises(ValueError, match="normalise=speaker: .* exported model"):
        exported.standardise_inputs("speaker", [], {})
    with pytest.raises(ValueError, match="precision=bf16"):
        load_predictors(single, precision="bf16")


@pytest.mark.slow
def test_predict_py_on_an_export_writes_the_tables_its_checkpoints_write(ensemble, trained, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for path in trained.test_files(1).values():
        (recordings / path.name).symlink_to(path)
    sf.write(recordings / "talk.wav", np.concatenate(demo_waves(trained)), 16000)  # 11 s: several segments
    for mode in (["predict.window_seconds=2"], ["predict.segment=vad"]):
        tables = {}
        for name, ckpt in (("checkpoints", trained.sweep), ("export", ensemble)):
            overrides = [*mode, "predict.workers=0"]
            out = run_predict(predict_config(ckpt, recordings, tmp_path / name / "preds.csv", *overrides)).table
            stretches = out.with_name("preds.windows.csv" if "window" in mode[0] else "preds.segments.csv")
            tables[name] = [read_csv(out), read_csv(stretches)]
        for expected, actual in zip(tables["checkpoints"], tables["export"], strict=True):
            assert [row["path"] for row in actual] == [row["path"] for row in expected] and actual
            for row, other in zip(expected, actual, strict=True):
                for column in {*row} - {"path"}:  # the predictions and the models' spread, to the table's 4 places
                    assert float(other[column] or "nan") == pytest.approx(
                        float(row[column] or "nan"), abs=2e-4, nan_ok=True
                    ), column


@pytest.mark.slow
def test_the_export_holds_the_graph_its_weights_the_audonnx_layout_and_the_recipe(single, trained):
    assert sorted(path.name for path in single.iterdir()) == [
        "emotion.json",
        "model.onnx",
        "model.onnx.data",
        "model.yaml",
        "recording.onnx",
    ]  # the earlier export's file is gone
    description = json.loads((single / "emotion.json").read_text())
    checkpoint = trained.jobs[1] / "checkpoints" / "best.pt"
    assert description["recipes"] == [read_checkpoint(checkpoint)["recipe"]]
    assert description["checkpoints"] == [str(checkpoint.resolve())]
    assert (description["dimensions"], description["label_scale"], description["members"]) == (
        list(TRAINED_DIMENSIONS),
        [1.0, 5.0],
        1,
    )
    assert (description["sample_rate"], description["grid"], description["eval_chunk_seconds"]) == (
        16000,
        {"window": 400, "hop": 320},
        60.0,
    )
    assert description["graph"]["inputs"] == ["speech", "speech_lengths", "prosody", "functionals"]
    assert (description["graph"]["opset"], description["graph"]["outputs"]) == (17, ["emotion"])
    assert 0 < description["parity"]["max_difference"] < TOLERANCE
    assert description["parity"]["tolerance"] == 1e-3  # export.tolerance's default


@pytest.mark.slow
def test_an_export_torch_disagrees_with_is_refused_and_leaves_nothing(trained, tmp_path):
    with pytest.raises(ExportError, match="export.tolerance=1e-12; nothing was written"):
        run_export(export_config(trained.jobs[1], tmp_path / "export", "export.tolerance=1e-12"))
    assert list(tmp_path.iterdir()) == []


def edited_checkpoint(trained, tmp_path: Path, edit) -> Path:
    """Fold 1's checkpoint with its recipe changed by `edit`."""
    state = read_checkpoint(trained.jobs[1] / "checkpoints" / "best.pt")
    edit(state["recipe"])
    save_checkpoint(tmp_path / "edited.pt", state)
    return tmp_path / "edited.pt"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda recipe: recipe["data"].update(normalise="speaker"), "data.normalise=speaker: .* one recording cannot"),
        (lambda recipe: recipe["model"].update(acoustic="contours"), r"contours \(model.acoustic=contours\)"),
        (lambda recipe: recipe["wavlm_config"].update(feat_extract_norm="group"), "each utterance of a batch alone"),
    ],
    ids=["speaker-normalised", "prosody-contours", "group-norm-encoder"],
)
def test_a_model_the_export_cannot_carry_is_refused_before_any_work(trained, tmp_path, edit, message):
    with pytest.raises(ExportError, match=message):
        run_export(export_config(edited_checkpoint(trained, tmp_path, edit), tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_a_folder_that_is_not_empty_is_refused_before_the_checkpoint_is_read(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty; .* export.overwrite=true"):
        run_export(export_config(tmp_path / "no-such-job", tmp_path / "export"))
    assert (tmp_path / "export" / "notes.txt").read_text() == "mine"


def test_a_baseline_job_which_keeps_no_checkpoint_is_refused(tmp_path):
    (tmp_path / "baseline-job").mkdir()
    (tmp_path / "baseline-job" / "metrics.json").write_text('{"status": "completed"}')
    with pytest.raises(CheckpointError, match="model=baseline keep no checkpoint"):
        run_export(export_config(tmp_path / "baseline-job", tmp_path / "export"))


@pytest.mark.slow
def test_export_py_says_what_to_fix_and_exits_with_the_config_error_code(cache_dir, tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    args = [f"ckpt={tmp_path / 'job'}", f"output={tmp_path / 'export'}"]
    result = run_script("export.py", args, cache_dir, check=False)
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "is not empty; name a new folder, or replace this one with export.overwrite=true" in result.stderr
