"""export.py: trained models as one ONNX graph beside their recipe, in the layout `audonnx.load` reads.

    <output>/model.onnx        the models' neural part for any batch: zero-padded waves, their lengths, their
                               acoustic frames (and functionals) → `emotion` (B, dimensions) on the rating scale;
                               an ensemble's graph also gives `members` (B, models, dimensions)
    <output>/model.onnx.data   its weights, as ONNX external data: one protobuf holds 2 GB at most
    <output>/recording.onnx    the same graph declared for one recording, on the same weights: audonnx reshapes
                               each input to its declared shape, and numpy's reshape leaves one axis free at most
    <output>/model.yaml        audonnx's layout: how each input is computed from (signal, sampling rate)
    <output>/emotion.json      the recipe, which emotion.exported reads to run the graph without the checkpoints

Export checks its own work before it writes the folder: torch and onnxruntime predict generated signals that
the graph was not traced with, several padded in one batch, and one alone through audonnx's layout.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import audonnx
import numpy as np
import onnx
import opensmile
import torch
from omegaconf import DictConfig
from torch import nn
from torch.onnx import JitScalarType, symbolic_helper

from emotion.data.corpus import Item
from emotion.exported import EXPORT_FORMAT, GRAPH, RECIPE, batch_feeds, open_session
from emotion.features.acoustic import EGEMAPS_FUNCTIONALS_LEVEL, EGEMAPS_LLD_LEVEL, INT16_FULL_SCALE
from emotion.features.dataset import Batch, collate
from emotion.files import current_umask
from emotion.models.mamba import Mamba
from emotion.settings import ExportSettings
from emotion.trained import TrainedModel, find_checkpoints, load_models
from emotion.training.outputs import write_json
from emotion.training.recipe import read_checkpoint, recipe_normalisation

log = logging.getLogger(__name__)

WEIGHTS = "model.onnx.data"
RECORDING_GRAPH = "recording.onnx"
LAYOUT = "model.yaml"
# ONNX operator set: the TorchScript exporter's range ends at 20; 17 has what the model needs and runs on
# onnxruntime from 1.13.
OPSET = 17
INPUT_AXES = {
    "speech": {0: "batch", 1: "samples"},
    "speech_lengths": {0: "batch"},
    "prosody": {0: "batch", 1: "frames"},
    "functionals": {0: "batch"},
}
# Seconds of the generated signals: the graph is traced with the first set and checked with the second, so
# that the check proves it for lengths and a batch size it was not traced with.
TRACE_SECONDS = (1.1, 0.7)
CHECK_SECONDS = (1.3, 2.9, 4.6)


class ExportError(ValueError):
    pass


def run_export(cfg: DictConfig) -> Path:
    """Export the models `cfg.ckpt` names into the folder `cfg.output`; every reason to refuse is found before
    the work starts."""
    settings = ExportSettings.of(cfg.export)
    output = Path(str(cfg.output)).expanduser()
    _require_free(output, settings.overwrite)
    checkpoints = find_checkpoints(cfg.ckpt)
    recipes = [read_checkpoint(checkpoint)["recipe"] for checkpoint in checkpoints]  # before any model is built
    for recipe, checkpoint in zip(recipes, checkpoints, strict=True):
        require_exportable(recipe, checkpoint)
    inputs = {(recipe["model"]["acoustic"], recipe["model"]["functionals"]) for recipe in recipes}
    if len(inputs) > 1:
        raise ExportError(
            f"ckpt={cfg.ckpt}: its models read different acoustic inputs (model.acoustic, model.functionals: "
            f"{sorted(inputs)}), which one graph cannot take; export one configuration's models"
        )
    models = load_models(checkpoints, device="cpu", precision="fp32")
    export(models, output, settings.tolerance)
    return output


def _require_free(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"output={output}: a file is there; export writes a folder: name one")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ExportError(
            f"output={output}: the folder exists and is not empty; name a new folder, or replace this one with "
            "export.overwrite=true"
        )


def require_exportable(recipe: dict, checkpoint: Path) -> None:
    """One clear ExportError when the model of `recipe` needs what a graph and audonnx's transforms cannot give."""
    normalise = recipe_normalisation(recipe)
    if normalise != "training":
        raise ExportError(
            f"ckpt={checkpoint}: the model was trained with data.normalise={normalise}: its acoustic inputs are "
            f"standardised with each {normalise}'s own statistics, which one recording cannot give. Export a model "
            "trained with data.normalise=training, or predict with the checkpoint (predict.py, predict.normalise)."
        )
    acoustic = recipe["model"]["acoustic"]
    if acoustic != "egemaps":
        raise ExportError(
            f"ckpt={checkpoint}: the model reads Praat's prosody contours (model.acoustic={acoustic}), which only "
            "this package computes, and audonnx's transforms cannot import it. Export a model trained with "
            "model.acoustic=egemaps, or predict with the checkpoint (predict.py)."
        )
    if recipe["wavlm_config"]["feat_extract_norm"] == "group":
        raise ExportError(
            f"ckpt={checkpoint}: its encoder ({recipe['encoder']['name']}) normalises its first convolution over "
            "the whole input, so the model runs each utterance of a batch alone, which one graph for any batch "
            "cannot. Export a model whose encoder has layer norm (wavlm_large, tiny), or predict with the checkpoint."
        )


def export(models: list[TrainedModel], output: Path, tolerance: float) -> dict:
    """Write the export of `models` (one, or an ensemble averaged in the graph) into the folder `output`, which
    then holds a complete export or, after any error, what it held before. Returns emotion.json's contents."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        started = time.monotonic()
        graph = EnsembleGraph(models)
        proto = _write_graph(graph, _batch(models[0], _signals(TRACE_SECONDS, models[0].sample_rate)), staging)
        _write_recording_graph(proto, staging / RECORDING_GRAPH)
        inputs, outputs = ([value.name for value in values] for values in (proto.graph.input, proto.graph.output))
        _layout(models[0], staging / RECORDING_GRAPH, inputs, outputs).to_yaml(str(staging / LAYOUT))
        difference = _parity(graph, models[0], staging)
        if difference > tolerance:
            raise ExportError(
                f"the exported graph predicts up to {difference:.2e} away from torch (rating scale), more than "
                f"export.tolerance={tolerance}; nothing was written. The graph computes something torch does not: "
                "report it with the checkpoint's .hydra/config.yaml"
            )
        description = _description(models, inputs, outputs, difference, tolerance)
        write_json(staging / RECIPE, description)
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "exported %d model(s) to %s in %.0f s; torch and onnxruntime differ by %.1e at most",
        len(models),
        output,
        time.monotonic() - started,
        difference,
    )
    return description


class EnsembleGraph(nn.Module):
    """What model.onnx computes: each model's predictions on the rating scale, and their mean (`emotion`); an
    ensemble's graph also gives its members' (`members`, (B, models, dimensions))."""

    def __init__(self, models: list[TrainedModel]):
        super().__init__()
        self.members = nn.ModuleList(model.model for model in models)
        self.scale = models[0].scale
        for module in self.members.modules():
            if isinstance(module, Mamba):
                module.impl = "torch"  # the pure-PyTorch path: the CUDA kernel is no ONNX operator
        self.eval()

    def forward(self, speech, speech_lengths, prosody, functionals=None):
        unit = [member(speech, speech_lengths, prosody, functionals=functionals) for member in self.members]
        # LabelScale.denormalise, in the graph
        members = torch.stack(unit, dim=1) * (self.scale.high - self.scale.low) + self.scale.low
        emotion = members.mean(dim=1)
        return emotion if len(self.members) == 1 else (emotion, members)

    def arguments(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The graph's inputs in `batch`: functionals only when a member reads them."""
        reads_functionals = any(member.functionals is not None for member in self.members)
        return (batch.speech, batch.speech_lengths, batch.prosody, *([batch.functionals] if reads_functionals else []))

    def rated(self, batch: Batch) -> list[np.ndarray]:
        """torch's outputs for `batch`, as onnxruntime gives them."""
        with torch.no_grad():
            outputs = self(*self.arguments(batch))
        return [tensor.numpy() for tensor in (outputs if isinstance(outputs, tuple) else (outputs,))]


def _signals(seconds: tuple[float, ...], sample_rate: int) -> list[np.ndarray]:
    """Voice-like test signals, one of each length: a harmonic tone whose pitch glides, in noise, with a
    syllable-rate loudness, so that openSMILE finds voiced and unvoiced frames."""
    rng = np.random.default_rng(0)
    waves = []
    for duration in seconds:
        t = np.arange(round(duration * sample_rate)) / sample_rate
        pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voice = sum(np.sin(harmonic * phase) / harmonic for harmonic in range(1, 8))
        loudness = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
        waves.append((0.1 * voice * loudness + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return waves


def _batch(model: TrainedModel, waves: list[np.ndarray]) -> Batch:
    """`waves` in one padded batch, through the data path predict.py takes (features as the cache holds them)."""
    items = [Item(id=f"signal-{index}", path=Path("<memory>"), speaker="", labels=()) for index in range(len(waves))]
    acoustic = [model.acoustic_cache(".").compute_in_memory(wave) for wave in waves]  # in memory: no folder used
    dataset = model.dataset(items, [len(wave) / model.sample_rate for wave in waves], acoustic, waves=waves)
    return collate([dataset[index] for index in range(len(dataset))])


def _write_graph(graph: EnsembleGraph, example: Batch, staging: Path) -> onnx.ModelProto:
    """Trace `graph` on `example` into staging/model.onnx, its weights in model.onnx.data; returns the graph,
    its weights referred to in that file."""
    arguments = graph.arguments(example)
    inputs = list(INPUT_AXES)[: len(arguments)]
    outputs = ["emotion"] if len(graph.members) == 1 else ["emotion", "members"]
    traced = staging / "traced"  # the exporter writes one file per tensor beside a graph over 2 GB
    traced.mkdir()
    with _exportable_operators(), warnings.catch_warnings():
        # The deprecated TorchScript exporter is the one that keeps a scripted loop's length free (the Mamba
        # scan), and the parity check, not the tracer's warnings, proves what the trace holds for other inputs.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            arguments,
            str(traced / GRAPH),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={**{name: INPUT_AXES[name] for name in inputs}, **{name: {0: "batch"} for name in outputs}},
        )
    onnx.save_model(
        onnx.load(traced / GRAPH),
        staging / GRAPH,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=WEIGHTS,
    )
    shutil.rmtree(traced)
    return onnx.load(staging / GRAPH, load_external_data=False)


@contextlib.contextmanager
def _exportable_operators():
    """The TorchScript exporter's translations, completed for two operators the model uses."""
    torch.onnx.register_custom_op_symbolic("aten::rms_norm", _rms_norm, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", _cumsum, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::rms_norm", OPSET)
        torch.onnx.unregister_custom_op_symbolic("aten::cumsum", OPSET)


@symbolic_helper.parse_args("v", "is", "v", "f")
def _rms_norm(g, values, normalized_shape, weight, eps):
    """nn.RMSNorm (ONNX has it from opset 23 only): values / sqrt(mean(values²) + eps) · weight over the last
    axes; without an eps, float32's machine epsilon, as torch takes."""
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    mean_square = g.op("ReduceMean", g.op("Mul", values, values), axes_i=list(range(-len(normalized_shape), 0)))
    root_mean_square = g.op("Sqrt", g.op("Add", mean_square, g.op("Constant", value_t=torch.tensor(eps))))
    normalised = g.op("Div", values, root_mean_square)
    return normalised if weight.node().mustBeNone() else g.op("Mul", normalised, weight)


@symbolic_helper.parse_args("v", "i", "i")
def _cumsum(g, values, dim, dtype):
    """torch.cumsum. The stock translation hands a boolean tensor to ONNX CumSum, which takes numbers only;
    torch counts booleans in int64 (transformers' WavLM sums its boolean padding mask so)."""
    if dtype is not None:
        values = g.op("Cast", values, to_i=JitScalarType(dtype).onnx_type())
    elif JitScalarType.from_value(values, JitScalarType.UNDEFINED) == JitScalarType.BOOL:
        values = g.op("Cast", values, to_i=JitScalarType.INT64.onnx_type())
    return g.op("CumSum", values, g.op("Constant", value_t=torch.tensor(dim)))


def _write_recording_graph(proto: onnx.ModelProto, path: Path) -> None:
    """model.onnx's graph declared for a batch of one, on the same weights file."""
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save_model(proto, path)


def _parity(graph: EnsembleGraph, model: TrainedModel, staging: Path) -> float:
    """The largest difference between torch's and the export's predictions (rating scale) of generated signals:
    several padded in one batch through model.onnx, and the first alone through audonnx (its transforms too)."""
    waves = _signals(CHECK_SECONDS, model.sample_rate)
    batch = _batch(model, waves)
    got = _run_graph(staging / GRAPH, batch)
    differences = [np.abs(one - expected).max() for one, expected in zip(got, graph.rated(batch), strict=True)]
    by_audonnx = audonnx.load(str(staging))(waves[0], model.sample_rate, outputs="emotion")
    return float(max(*differences, np.abs(by_audonnx - graph.rated(_batch(model, waves[:1]))[0]).max()))


def _run_graph(path: Path, batch: Batch) -> list[np.ndarray]:
    """onnxruntime's outputs of the graph at `path` for `batch`; the session, which holds a copy of the
    weights, is gone when it returns (audonnx's opens another)."""
    session = open_session(path)
    return session.run(None, batch_feeds(session, batch))


def _layout(model: TrainedModel, graph: Path, inputs: list[str], outputs: list[str]) -> audonnx.Model:
    """audonnx's model of `graph`: each input's transform from (signal, sampling rate), each output's labels."""
    rate, grid = {"model_rate": model.sample_rate}, model.grid
    clipped = {**rate, "full_scale": INT16_FULL_SCALE}
    lld = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, EGEMAPS_LLD_LEVEL)
    transform = {
        "speech": audonnx.Function(_speech, func_args=rate),
        "speech_lengths": audonnx.Function(_speech_lengths, func_args=rate),
        "prosody": audonnx.Function(
            _egemaps_frames, func_args={**clipped, "window": grid.window, "hop": grid.hop, "smile": lld}
        ),
    }
    if "functionals" in inputs:
        functionals = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, EGEMAPS_FUNCTIONALS_LEVEL)
        transform["functionals"] = audonnx.Function(_egemaps_functionals, func_args={**clipped, "smile": functionals})
    labels = {name: list(model.dimensions) for name in outputs}
    return audonnx.Model(str(graph), labels=labels, transform=transform)


# audonnx's transforms, serialised into model.yaml as their source code: each imports what it uses and reads
# nothing of this package, which whoever loads an export need not install. `signal`: (channels, samples) or
# (samples,) as audiofile reads it, at `sampling_rate`; each returns its input for a batch of one.


def _speech(signal, sampling_rate, model_rate):
    """The wave the encoder reads, (1, samples): channels averaged, resampled to the model's rate (as
    emotion.data.audio.mono_at_rate, whose soxr high quality is audresample's default)."""
    import audresample
    import numpy as np

    mono = audresample.remix(np.asarray(signal, dtype=np.float32), mixdown=True)
    return audresample.resample(mono, sampling_rate, model_rate)


def _speech_lengths(signal, sampling_rate, model_rate):
    """The wave's length in samples at the model's rate, (1,): the resampled length, without resampling again
    (soxr, under audresample, rounds samples × model_rate / sampling_rate half up)."""
    import numpy as np

    samples = np.shape(signal)[-1]
    return np.array([(2 * samples * model_rate + sampling_rate) // (2 * sampling_rate)], dtype=np.int64)


def _egemaps_frames(signal, sampling_rate, model_rate, full_scale, window, hop, smile):
    """eGeMAPS's low-level descriptors on the encoder's frame grid, (1, frames, 25): each encoder frame takes the
    openSMILE frame whose centre is nearest its own. Mirrors emotion.features.acoustic.egemaps_frames and
    emotion.models.grid; the export's parity check and tests/test_export.py hold them together."""
    import audresample
    import numpy as np

    mono = audresample.remix(np.asarray(signal, dtype=np.float32), mixdown=True)
    wave = audresample.resample(mono, sampling_rate, model_rate)
    table = smile.process_signal(np.clip(wave, -1.0, full_scale), model_rate)  # openSMILE wraps beyond int16
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    ends = table.index.get_level_values("end").total_seconds().to_numpy()
    centres = starts + (ends[0] - starts[0]) / 2  # openSMILE stretches its last frame to the signal's end
    encoder_centres = (np.arange(max(0, (wave.shape[-1] - window) // hop + 1)) * hop + window / 2) / model_rate
    step = centres[1] - centres[0] if len(centres) > 1 else 1.0
    nearest = np.clip(np.rint((encoder_centres - centres[0]) / step).astype(int), 0, len(centres) - 1)
    return table.to_numpy(dtype=np.float32)[nearest][None]


def _egemaps_functionals(signal, sampling_rate, model_rate, full_scale, smile):
    """eGeMAPS's functionals of the whole recording, (1, 88), as emotion.features.acoustic.egemaps_functionals."""
    import audresample
    import numpy as np

    mono = audresample.remix(np.asarray(signal, dtype=np.float32), mixdown=True)
    wave = audresample.resample(mono, sampling_rate, model_rate)
    return smile.process_signal(np.clip(wave, -1.0, full_scale), model_rate).to_numpy(dtype=np.float32)


def _description(
    models: list[TrainedModel], inputs: list[str], outputs: list[str], difference: float, tolerance: float
) -> dict:
    """emotion.json: what runs the graph without the checkpoints, and where it came from."""
    first = models[0]
    return {
        "format": EXPORT_FORMAT,
        "dimensions": list(first.dimensions),
        "label_scale": [first.scale.low, first.scale.high],
        "sample_rate": first.sample_rate,
        "grid": {"window": first.grid.window, "hop": first.grid.hop},
        "min_seconds": max(model.min_seconds for model in models),
        "eval_chunk_seconds": first.recipe["data"]["eval_chunk_seconds"],
        "acoustic": {"frames": first.settings.acoustic, "functionals": "functionals" in inputs},
        "normalisation": first.normalisation,
        "members": len(models),
        "checkpoints": [str(model.path.resolve()) for model in models],
        "graph": {
            "file": GRAPH,
            "weights": WEIGHTS,
            "one_recording": RECORDING_GRAPH,
            "opset": OPSET,
            "inputs": inputs,
            "outputs": outputs,
        },
        "parity": {
            "max_difference": difference,
            "tolerance": tolerance,
            "scale": "rating",
            "signals_seconds": list(CHECK_SECONDS),
        },
        "versions": {
            name: importlib.metadata.version(name) for name in ("emotion", "torch", "onnx", "onnxruntime", "opensmile")
        },
        "recipes": [model.recipe for model in models],
    }


def _move_into_place(staging: Path, output: Path) -> None:
    """The finished export becomes `output`; a folder there before (empty, or export.overwrite=true) goes."""
    mask = current_umask()  # the permissions of a folder and files made as usual: mkdtemp's are the owner's alone
    staging.chmod(0o777 & ~mask)
    for file in staging.iterdir():
        file.chmod(0o666 & ~mask)
    if not output.exists():
        staging.rename(output)
        return
    replaced = staging.with_suffix(".replaced")
    output.rename(replaced)
    staging.rename(output)
    shutil.rmtree(replaced)
