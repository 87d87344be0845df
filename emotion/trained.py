"""A trained model, rebuilt from its checkpoint alone (emotion.training.recipe): `load_model`, and what
evaluate.py and predict.py read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from emotion.data.audio import mono_at_rate
from emotion.data.corpus import Item, LabelScale
from emotion.features.acoustic_cache import AcousticArrays, AcousticCache, AcousticFiles
from emotion.features.dataset import Segment, UtteranceDataset
from emotion.features.normalisation import OwnStatistics, acoustic_statistics, own_statistics
from emotion.models.grid import FrameGrid
from emotion.models.model import MambaEMA
from emotion.settings import EncoderSettings, ModelSettings
from emotion.sweeps.jobs import configuration, job_overrides
from emotion.training.devices import resolve_device, resolve_precision
from emotion.training.inference import Outputs, batch_loader, item_means, segment_outputs
from emotion.training.recipe import CheckpointError, checkpoint_files, read_checkpoint, rebuild, recipe_normalisation

# The model's buffers that hold its input statistics (prosody_norm.mean, functionals_norm.std, ...).
STATISTICS = ("_norm.mean", "_norm.std")


def find_checkpoints(path: str | Path | list) -> list[Path]:
    """The checkpoints `path` names (see checkpoint_files). The models of a folder or a pattern must be one
    configuration's: they are averaged."""
    if isinstance(path, (list, tuple)) or OmegaConf.is_list(path):
        return [found for one in path for found in find_checkpoints(one)]
    found = checkpoint_files(path)
    _require_one_configuration(Path(str(path)).expanduser(), found)
    return found


def _require_one_configuration(folder: Path, checkpoints: list[Path]) -> None:
    """A folder's models are averaged only when they are one configuration's (its folds): averaging a
    sweep's different configurations would be a mistake nobody sees."""
    jobs = [checkpoint.parent.parent for checkpoint in checkpoints]
    configurations = {
        json.dumps(configuration(job_overrides(job)), sort_keys=True)
        for job in jobs
        if (job / ".hydra" / "overrides.yaml").is_file()
    }
    if len(configurations) > 1:
        listed = "; ".join(" ".join(f"{k}={v}" for k, v in json.loads(c).items()) or "(none)" for c in configurations)
        raise CheckpointError(
            f"ckpt={str(folder)!r} holds jobs of {len(configurations)} configurations ({listed}): its models would "
            "be averaged. Name one configuration's jobs with a pattern, e.g. "
            f"ckpt='{folder}/*model.d_hidden=384*', or one job folder."
        )


class Predictor:
    """What predict.py and evaluate.py read of a model, all from its recipe (emotion.training.recipe): what it
    predicts on which scale, and the inputs it reads. TrainedModel runs a checkpoint with torch,
    emotion.exported.ExportedModel an exported graph with onnxruntime; both share this."""

    recipe: dict
    path: Path

    @property
    def grid(self) -> FrameGrid:
        """The encoder's frame grid, on which the acoustic frames are given."""
        raise NotImplementedError

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.recipe["dimensions"])

    @property
    def scale(self) -> LabelScale:
        """The training corpus's rating scale: predictions are given on it (several corpora's: on [0, 1])."""
        return LabelScale(*self.recipe["label_scale"])

    @property
    def label_scales(self) -> dict[str, LabelScale]:
        """The rating scale of each corpus it was trained on, by corpus name."""
        scales = self.recipe.get("label_scales") or {self.recipe["corpus"]: self.recipe["label_scale"]}
        return {name: LabelScale(*scale) for name, scale in scales.items()}

    @property
    def sample_rate(self) -> int:
        return self.recipe["data"]["sample_rate"]

    @property
    def min_seconds(self) -> float:
        return self.recipe["data"]["min_seconds"]

    def output_scale(self, name: str | None) -> LabelScale:
        """The scale predictions are given on (predict.label_scale): None, the model's own; a corpus it trained
        on, that corpus's rating scale; `unit`, the [0, 1] it learned on."""
        if name is None:
            return self.scale
        if name == "unit":
            return LabelScale(0.0, 1.0)
        if name not in self.label_scales:
            raise ValueError(
                f"predict.label_scale={name!r}: {self.path} trained on {', '.join(self.label_scales)}; give one of "
                "them, unit ([0, 1]), or null (the model's own scale)"
            )
        return self.label_scales[name]

    @property
    def normalisation(self) -> str:
        """The data.normalise it was trained with: whose statistics standardised its acoustic inputs."""
        return recipe_normalisation(self.recipe)

    @property
    def settings(self) -> ModelSettings:
        """The model settings it was trained with."""
        return ModelSettings.of(self.recipe["model"])

    def acoustic_cache(self, cache_dir: str | Path) -> AcousticCache:
        """The acoustic features this model reads, cached under `cache_dir` as training caches them."""
        return AcousticCache.for_model(cache_dir, self.sample_rate, self.grid, self.settings)

    def dataset(
        self,
        items: list[Item],
        durations: list[float],
        acoustic: list[AcousticFiles | AcousticArrays],
        *,
        segments: list[Segment] | None = None,
        waves: list[np.ndarray] | None = None,
        own: OwnStatistics | None = None,
    ) -> UtteranceDataset:
        """`items` as this model's evaluation saw its test split: whole, or in chunks when long."""
        return UtteranceDataset(
            items,
            durations,
            acoustic,
            None,
            self.grid,
            self.sample_rate,
            chunk_seconds=self.recipe["data"]["eval_chunk_seconds"],
            segments=segments,
            waves=waves,
            own=own,
        )


@dataclass
class TrainedModel(Predictor):
    """A trained model ready to predict, with what it was trained on: see load_model."""

    model: MambaEMA
    recipe: dict
    path: Path
    device: torch.device
    precision: str
    validation: dict | None = None  # the validation scores it was kept for (best.pt's), when the file has them
    # The input statistics training stored, while standardise_inputs has put others in their place.
    stored_statistics: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)

    members = 1  # models whose predictions member_outputs gives

    @property
    def grid(self) -> FrameGrid:
        return self.model.encoder.grid

    @property
    def embedding_size(self) -> int:
        """Length of the pooled vector `embed` returns: what the heads read."""
        return next(iter(self.model.heads.values()))[0].in_features

    def describe(self) -> dict:
        """What a prediction's description records of the model."""
        path = str(self.path)
        return {"kind": "torch", "path": path, "members": 1, "checkpoints": [path], "precision": self.precision}

    def standardise_inputs(self, normalise: str, items: list[Item], acoustic: dict) -> OwnStatistics | None:
        """Standardise the acoustic inputs of `items` as `normalise` asks (evaluate.normalise): return the
        own statistics of their speakers or corpus, which the dataset applies. When that is not how the model
        was trained, it also takes input statistics from `items` (after their own standardisation), as its
        training took them from its training split: a model trained with `training` meets a new corpus's
        inputs standardised by that corpus's statistics. Asked for as trained again, it standardises with
        its stored statistics. `acoustic`: the items' features, by path."""
        trained = self.normalisation
        if normalise == "training" and trained != "training":
            raise ValueError(
                f"normalise=training: {self.path} was trained with data.normalise={trained}, so its stored "
                "statistics describe standardised features, not raw ones; use normalise=corpus or speaker"
            )
        own = own_statistics(normalise, items, acoustic)
        if normalise == trained:
            self._restore_statistics()
            return own
        if self.stored_statistics is None:
            self.stored_statistics = {name: tensor.clone() for name, tensor in self._statistics().items()}
        self.model.set_acoustic_statistics(acoustic_statistics(items, acoustic, own))
        return own

    def _statistics(self) -> dict[str, torch.Tensor]:
        return {name: tensor for name, tensor in self.model.named_buffers() if name.endswith(STATISTICS)}

    def _restore_statistics(self) -> None:
        """The input statistics training stored, back in place of those standardise_inputs put there."""
        if self.stored_statistics is not None:
            buffers = self._statistics()
            for name, tensor in self.stored_statistics.items():
                buffers[name].copy_(tensor)
            self.stored_statistics = None

    @property
    def encoder_settings(self) -> EncoderSettings:
        """The encoder settings it was trained with: whether frozen, whether its states were cached."""
        return EncoderSettings.of(self.recipe["encoder"])

    def outputs(
        self,
        dataset: UtteranceDataset,
        batch_size: int = 8,
        workers: int = 0,
        embeddings: bool = False,
        show_bar: bool = False,
    ) -> Outputs:
        """Predictions ([0, 1] scale) and, with `embeddings`, pooled vectors of each of `dataset`'s segments."""
        loader = batch_loader(dataset, batch_size, workers=workers, device=self.device)
        return segment_outputs(self.model, loader, self.device, self.precision, embeddings, show_bar)

    def member_outputs(
        self, dataset: UtteranceDataset, batch_size: int = 8, workers: int = 0, show_bar: bool = False
    ) -> np.ndarray:
        """Predictions ([0, 1] scale) of each of `dataset`'s segments, as (segments, members, dimensions)."""
        return self.outputs(dataset, batch_size, workers, show_bar=show_bar).predictions[:, None, :]

    def predict(self, wave: np.ndarray, sample_rate: int) -> dict[str, float]:
        """A/V/D of one recording on the training corpus's rating scale ([0, 1] for a model of several corpora;
        see output_scale). `wave`: (samples,) or (samples, channels), as soundfile reads it, at any sample
        rate; decoded and resampled as training did."""
        dataset = self._one_wave(wave, sample_rate)
        predictions = self.scale.denormalise(item_means(self.outputs(dataset).predictions, dataset))[0]
        return dict(zip(self.dimensions, map(float, predictions), strict=True))

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """The pooled vector the model's heads read, for one recording (arguments as predict's)."""
        dataset = self._one_wave(wave, sample_rate)
        return item_means(self.outputs(dataset, embeddings=True).embeddings, dataset)[0].astype(np.float32)

    def _one_wave(self, wave: np.ndarray, sample_rate: int) -> UtteranceDataset:
        if self.normalisation != "training":
            raise ValueError(
                f"{self.path} was trained with data.normalise={self.normalisation}: its inputs are standardised with "
                f"each {self.normalisation}'s own statistics, which one recording cannot give. Use predict.py on a "
                "folder of recordings (predict.normalise), or a manifest whose speaker column groups them."
            )
        self._restore_statistics()  # one recording is standardised as in training
        wave = mono_at_rate(wave, sample_rate, self.sample_rate)
        seconds = len(wave) / self.sample_rate
        if seconds < self.min_seconds:
            raise ValueError(f"the recording lasts {seconds:.3f} s, shorter than this model's {self.min_seconds} s")
        item = Item(id="wave", path=Path("<memory>"), speaker="", labels=())
        acoustic = self.acoustic_cache(".").compute_in_memory(wave)  # in memory: the cache folder is not used
        return self.dataset([item], [seconds], [acoustic], waves=[wave])


def load_model(path: str | Path, device: str = "auto", precision: str = "auto") -> TrainedModel:
    """The model of one checkpoint (a file or a job folder), on `device` (auto: CUDA where there is), in
    `precision` (auto: bf16 on CUDA, fp32 on CPU).

        model = load_model("outputs/2026-12-02/10-00-00")
        model.predict(wave, 44100)  # {"arousal": 3.1, "valence": 2.7, "dominance": 3.3}
    """
    paths = find_checkpoints(path)
    if len(paths) > 1:
        raise CheckpointError(
            f"{path} holds {len(paths)} checkpoints ({', '.join(map(str, paths[:3]))}…): load_models loads them all, "
            "or name one job folder"
        )
    return load_models(paths, device, precision)[0]


def load_models(path, device: str = "auto", precision: str = "auto") -> list[TrainedModel]:
    """Every model `path` names (see find_checkpoints): an ensemble, which must predict the same dimensions
    on the same scale."""
    target = resolve_device(device, "device")
    chosen = resolve_precision(precision, target, "precision")
    models = []
    for checkpoint in find_checkpoints(path):
        state = read_checkpoint(checkpoint, target)
        models.append(TrainedModel(rebuild(state), state["recipe"], checkpoint, target, chosen, state.get("val")))
        models[-1].model.to(target)
    # An ensemble averages predictions of the same things on the same scale, segment by segment.
    kinds = {(m.dimensions, tuple(m.recipe["label_scale"]), m.sample_rate, m.model.encoder.grid) for m in models}
    if len(kinds) > 1:
        raise CheckpointError(
            f"ckpt={path}: the models differ in dimensions, label scale, sample rate or frame grid "
            f"({sorted(map(str, kinds))}); an ensemble averages models of one kind: name one configuration's"
        )
    return models
