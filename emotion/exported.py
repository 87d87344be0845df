"""An exported model (export.py's folder) run with onnxruntime through the same data path as a checkpoint: the
same datasets and batches, its graph in place of the torch model. predict.py treats ExportedModel and
emotion.trained.TrainedModel alike (`load_predictors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from emotion.data.corpus import Item
from emotion.features.dataset import Batch, UtteranceDataset
from emotion.models.grid import FrameGrid
from emotion.trained import Predictor, load_models
from emotion.training.inference import batch_loader

# An export folder's files (emotion.export writes them).
GRAPH = "model.onnx"  # any batch: what predict.py runs
RECIPE = "emotion.json"  # what runs the graph without the checkpoints
EXPORT_FORMAT = 1  # bump when emotion.json changes in a way older code cannot read


def is_exported(path) -> bool:
    """Whether `path` (a ckpt= value) is an export folder: one holding emotion.json and model.onnx."""
    if isinstance(path, (list, tuple)) or OmegaConf.is_list(path):
        return False
    folder = Path(str(path)).expanduser()
    return (folder / RECIPE).is_file() and (folder / GRAPH).is_file()


def load_predictors(ckpt, device: str = "auto", precision: str = "auto") -> list[Predictor]:
    """The models `ckpt` names: an export folder's graph (one ExportedModel, however many models it averages),
    or the checkpoints emotion.trained.load_models reads."""
    if is_exported(ckpt):
        return [ExportedModel.load(ckpt, device, precision)]
    return load_models(ckpt, device, precision)


def open_session(path: str | Path, device: str = "cpu") -> onnxruntime.InferenceSession:
    """An onnxruntime session of the graph at `path`, with the threads torch runs with in this process (the
    job's CPU budget, emotion.cpu), on `device`: auto (CUDA where onnxruntime has it), cpu, cuda or cuda:N."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1  # the graph is one chain of operators: nothing runs beside another
    return onnxruntime.InferenceSession(str(path), options, providers=_providers(device))


def _providers(device: str) -> list:
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise ValueError(f"device={device!r}: an exported model runs on auto, cpu, cuda or cuda:<index>")
    if not has_cuda:
        raise ValueError(
            f"device={device}: this onnxruntime has no CUDA provider ({onnxruntime.get_device()} build); install "
            "onnxruntime-gpu, or use device=cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def batch_feeds(session: onnxruntime.InferenceSession, batch: Batch) -> dict[str, np.ndarray]:
    """A padded batch as the graph's inputs: those of MambaEMA.forward, by name (functionals only when the
    graph reads them)."""
    values = {
        "speech": batch.speech,
        "speech_lengths": batch.speech_lengths,
        "prosody": batch.prosody,
        "functionals": batch.functionals,
    }
    return {node.name: values[node.name].numpy() for node in session.get_inputs()}


@dataclass
class ExportedModel(Predictor):
    """An export folder's graph ready to predict: its members' predictions, averaged by the caller."""

    path: Path  # the graph, model.onnx
    description: dict  # emotion.json
    session: onnxruntime.InferenceSession
    precision: str = "fp32"  # the graph's; onnxruntime runs it as it is

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", precision: str = "auto") -> ExportedModel:
        folder = Path(str(folder)).expanduser()
        if precision not in ("auto", "fp32"):
            raise ValueError(
                f"precision={precision}: {folder} is an exported model, whose graph runs in fp32; use precision=auto "
                "or fp32, or predict with the checkpoints for bf16 or fp16"
            )
        description = json.loads((folder / RECIPE).read_text())
        if description.get("format") != EXPORT_FORMAT:
            raise ValueError(
                f"ckpt={folder}: its {RECIPE} has format {description.get('format')}, this version reads format "
                f"{EXPORT_FORMAT}; export the checkpoints again with this version's export.py"
            )
        return cls(folder / GRAPH, description, open_session(folder / GRAPH, device))

    @property
    def recipe(self) -> dict:
        """The first member's recipe: the members of an export predict the same things from the same inputs."""
        return self.description["recipes"][0]

    @property
    def grid(self) -> FrameGrid:
        return FrameGrid(**self.description["grid"])

    @property
    def members(self) -> int:
        return self.description["members"]

    @property
    def min_seconds(self) -> float:
        """The longest of its members' data.min_seconds."""
        return self.description["min_seconds"]

    def standardise_inputs(self, normalise: str, items: list[Item], acoustic: dict) -> None:
        """Nothing to do for `training`: the graph standardises its inputs with the statistics its checkpoints
        stored. Another normalisation needs statistics of the inputs set into the model, which a graph cannot take."""
        if normalise != "training":
            raise ValueError(
                f"normalise={normalise}: {self.path.parent} is an exported model, which standardises its acoustic "
                "inputs with its training statistics only; use normalise=auto or training, or predict with the "
                "checkpoints it was exported from"
            )

    def member_outputs(
        self, dataset: UtteranceDataset, batch_size: int = 8, workers: int = 0, show_bar: bool = False
    ) -> np.ndarray:
        """Predictions ([0, 1] scale) of each of `dataset`'s segments, as (segments, members, dimensions)."""
        loader = batch_loader(dataset, batch_size, workers=workers, device=torch.device("cpu"))
        output = "members" if self.members > 1 else "emotion"  # a single model's graph gives only its own
        values = np.zeros((len(dataset), self.members, len(self.dimensions)), dtype=np.float32)
        for batch in tqdm(loader, desc="predict", leave=False, disable=not show_bar):
            rated = self.session.run([output], batch_feeds(self.session, batch))[0]  # on the rating scale
            values[batch.segments.numpy()] = self.scale.normalise(rated).reshape(len(batch), self.members, -1)
        return values

    def describe(self) -> dict:
        """What a prediction's description records of the model."""
        return {
            "kind": "onnx",
            "path": str(self.path),
            "members": self.members,
            "checkpoints": self.description["checkpoints"],
            "precision": self.precision,
        }
