"""A trained model, rebuilt from its checkpoint alone: `load_model`, and what evaluate.py, predict.py and
`model.init_from` read.

A checkpoint (`best.pt`, `last.pt`) holds the model's state and its recipe: the resolved model and encoder
configs, the encoder's architecture, where the encoder's weights are (in the checkpoint, or at
`encoder.source` for a frozen pretrained one), the dimensions and label scale it predicts, the sample rate,
frame grid and chunking it was evaluated with, the package version, and the speakers it trained and
validated on (hashed), which evaluate.py and `model.init_from` compare with the speakers they test on. Plain
containers only, so that it loads with `weights_only=True`.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from emotion.data.audio import mono_at_rate
from emotion.data.corpus import Corpus, Item, LabelScale
from emotion.data.dataset import Segment, UtteranceDataset
from emotion.features.acoustic_cache import AcousticArrays, AcousticCache, AcousticFiles
from emotion.features.normalisation import SpeakerNorm
from emotion.logger import redact_secrets
from emotion.models.model import MambaEMA, build_model
from emotion.training.checkpoints import load_checkpoint
from emotion.training.devices import resolve_device, resolve_precision
from emotion.training.inference import Outputs, batch_loader, item_means, segment_outputs

log = logging.getLogger(__name__)

# Bump when the recipe's contents change in a way older code cannot read.
RECIPE_FORMAT = 1
BEST = Path("checkpoints") / "best.pt"
# What of the `data` group belongs to the model: evaluating it elsewhere needs the same.
MODEL_DATA_KEYS = ("sample_rate", "eval_chunk_seconds", "min_seconds", "speaker_norm")


class CheckpointError(ValueError):
    pass


def model_recipe(cfg: DictConfig, corpus: Corpus, model: MambaEMA, start: Initialisation | None = None) -> dict:
    """What rebuilds `model` without its job folder, and whom it learned from; stored in every checkpoint
    beside the weights. `start`: the checkpoint `model` was initialised from (model.init_from)."""
    encoder = model.encoder
    # A model started from another learned from that one's speakers too.
    inherited = set()
    if start is not None and "speakers" in start.recipe:
        inherited = {*start.recipe["speakers"]["trained"], *start.recipe["speakers"]["validated"]}

    def resolved(node: DictConfig) -> dict:
        return redact_secrets(OmegaConf.to_container(node, resolve=True))

    return {
        "format": RECIPE_FORMAT,
        "emotion_version": importlib.metadata.version("emotion"),
        "model": resolved(cfg.model),
        "encoder": resolved(cfg.encoder),
        "wavlm_config": json.loads(encoder.wavlm.config.to_json_string(use_diff=False)),
        "encoder_weights": "source" if encoder.restored_from_source else "checkpoint",
        "corpus": corpus.name,
        "dimensions": list(corpus.dimensions),
        "label_scale": [float(corpus.scale.low), float(corpus.scale.high)],
        "data": {key: cfg.data[key] for key in MODEL_DATA_KEYS},
        "grid": {"window": encoder.grid.window, "hop": encoder.grid.hop},
        "trained": {"fold": cfg.data.fold, "seed": cfg.trainer.seed},
        "speakers": {
            "trained": sorted(corpus.speaker_keys(corpus.splits.train) | inherited),
            "validated": sorted(corpus.speaker_keys(corpus.splits.val)),
        },
    }


def find_checkpoints(path: str | Path | list) -> list[Path]:
    """The checkpoints `path` names: a checkpoint file; a job folder (its checkpoints/best.pt); a folder of
    jobs, such as one configuration's folds (each job's best.pt); a glob pattern; or a list of these. The
    models of a folder or a pattern must be one configuration's: they are averaged."""
    if isinstance(path, (list, tuple)) or OmegaConf.is_list(path):
        return [found for one in path for found in find_checkpoints(one)]
    path = Path(str(path)).expanduser()
    # A path that exists is taken as written: job folders' names hold `[`, as in layers=[6,12,18,24].
    if not path.exists() and glob.has_magic(str(path)):
        matches = sorted(Path(match) for match in glob.glob(str(path)))
        if not matches:
            raise CheckpointError(f"ckpt={str(path)!r}: the pattern matches nothing")
        found = [checkpoint for match in matches for checkpoint in _checkpoints_at(match)]
    else:
        found = _checkpoints_at(path)
    _require_one_configuration(path, found)
    return found


def _checkpoints_at(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CheckpointError(
            f"ckpt={str(path)!r}: no such file or folder; give a checkpoint (<job>/checkpoints/best.pt), a job "
            "folder, or a folder of jobs whose models are averaged"
        )
    if (path / BEST).is_file():
        return [path / BEST]
    found = sorted(path.glob(f"**/{BEST}"))
    if not found:
        raise CheckpointError(
            f"ckpt={str(path)!r}: no {BEST} in this folder or below it. A job writes it after its first "
            "validated epoch; jobs of model=baseline keep no checkpoint."
        )
    return found


def _require_one_configuration(folder: Path, checkpoints: list[Path]) -> None:
    """A folder's models are averaged only when they are one configuration's (its folds): averaging a
    sweep's different configurations would be a mistake nobody sees."""
    from emotion.sweeps.jobs import configuration, job_overrides

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


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint of this package that describes its model, or one clear CheckpointError."""
    try:
        state = load_checkpoint(path, device)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(
            f"ckpt={str(path)!r}: not a checkpoint that torch loads with weights_only=True ({reason}). "
            "Give a checkpoint written by train.py: <job>/checkpoints/best.pt."
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"ckpt={str(path)!r}: not a checkpoint of this package (it holds no model state)")
    if "recipe" not in state:
        raise CheckpointError(
            f"ckpt={str(path)!r} holds weights only: it was written before checkpoints described their model, "
            "so the model cannot be rebuilt from it. Train the job again to get a checkpoint that can be used."
        )
    if state["recipe"].get("format") != RECIPE_FORMAT:
        raise CheckpointError(
            f"ckpt={str(path)!r}: its recipe has format {state['recipe'].get('format')}, this version of emotion "
            f"reads format {RECIPE_FORMAT} (it was written by emotion {state['recipe'].get('emotion_version')})"
        )
    return state


@dataclass
class TrainedModel:
    """A trained model ready to predict, with what it was trained on: see load_model."""

    model: MambaEMA
    recipe: dict
    path: Path
    device: torch.device
    precision: str
    validation: dict | None = None  # the validation scores it was kept for (best.pt's), when the file has them

    @property
    def embedding_size(self) -> int:
        """Length of the pooled vector `embed` returns: what the heads read."""
        return next(iter(self.model.heads.values()))[0].in_features

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.recipe["dimensions"])

    @property
    def scale(self) -> LabelScale:
        """The training corpus's rating scale: predictions are given on it."""
        return LabelScale(*self.recipe["label_scale"])

    @property
    def sample_rate(self) -> int:
        return self.recipe["data"]["sample_rate"]

    @property
    def min_seconds(self) -> float:
        return self.recipe["data"]["min_seconds"]

    @property
    def speaker_norm(self) -> bool:
        """Trained with each speaker's acoustic features standardised by their own statistics."""
        return self.recipe["data"]["speaker_norm"]

    def acoustic_cache(self, cache_dir: str | Path) -> AcousticCache:
        """The acoustic features this model reads, cached under `cache_dir` as training caches them."""
        model_cfg = OmegaConf.create(self.recipe["model"])
        return AcousticCache.for_model(cache_dir, self.sample_rate, self.model.encoder.grid, model_cfg)

    def dataset(
        self,
        items: list[Item],
        durations: list[float],
        acoustic: list[AcousticFiles | AcousticArrays],
        *,
        segments: list[Segment] | None = None,
        waves: list[np.ndarray] | None = None,
        speaker_norm: SpeakerNorm | None = None,
    ) -> UtteranceDataset:
        """`items` as this model's evaluation saw its test split: whole, or in chunks when long."""
        return UtteranceDataset(
            items,
            durations,
            acoustic,
            self.scale,
            self.model.encoder.grid,
            self.sample_rate,
            chunk_seconds=self.recipe["data"]["eval_chunk_seconds"],
            segments=segments,
            waves=waves,
            speaker_norm=speaker_norm,
        )

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

    def predict(self, wave: np.ndarray, sample_rate: int) -> dict[str, float]:
        """A/V/D of one recording on the training corpus's rating scale. `wave`: (samples,) or (samples,
        channels), as soundfile reads it, at any sample rate; decoded and resampled as training did."""
        dataset = self._one_wave(wave, sample_rate)
        predictions = self.scale.denormalise(item_means(self.outputs(dataset).predictions, dataset))[0]
        return dict(zip(self.dimensions, map(float, predictions), strict=True))

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """The pooled vector the model's heads read, for one recording (arguments as predict's)."""
        dataset = self._one_wave(wave, sample_rate)
        return item_means(self.outputs(dataset, embeddings=True).embeddings, dataset)[0].astype(np.float32)

    def _one_wave(self, wave: np.ndarray, sample_rate: int) -> UtteranceDataset:
        if self.speaker_norm:
            raise ValueError(
                f"{self.path} was trained with data.speaker_norm=true: its inputs are standardised with each "
                "speaker's own statistics, which one recording cannot give. Use predict.py with a manifest whose "
                "speaker column groups the recordings by speaker."
            )
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


def rebuild(state: dict) -> MambaEMA:
    """The model of a checkpoint's state, in evaluation mode."""
    recipe = state["recipe"]
    in_checkpoint = recipe["encoder_weights"] == "checkpoint"
    model = build_model(
        OmegaConf.create(recipe["model"]),
        OmegaConf.create(recipe["encoder"]),
        tuple(recipe["dimensions"]),
        wavlm_config=recipe["wavlm_config"] if in_checkpoint else None,
    )
    model.load_checkpoint_state(state["model"])
    return model.eval()


@dataclass(frozen=True)
class Initialisation:
    """What `model.init_from` loaded: from which checkpoint, and which keys it could not."""

    checkpoint: Path
    recipe: dict
    fresh: list[str]  # the model's keys the checkpoint lacks (new heads), trained from scratch
    unused: list[str]  # the checkpoint's keys the model lacks (heads it does not predict), left out

    def record(self, corpus: Corpus, fold: int | None) -> dict:
        """metrics.json's `init_from`: this checkpoint, and how many of the job's test speakers (of `corpus`,
        test fold `fold`) it trained or validated on: those scores would be no test."""
        seen = seen_speakers(self.recipe, corpus, corpus.splits.test, "this job's test split", "test", fold)
        if seen.warning:
            log.warning("model.init_from=%s: %s", self.checkpoint, seen.warning)
        return {"checkpoint": str(self.checkpoint), "seen_test_speakers": seen.count, "warning": seen.warning}


def initialise_from(model: MambaEMA, path: str | Path) -> Initialisation:
    """Load into `model` the weights of the checkpoint at `path` (`model.init_from`) that it has too.

    Heads of dimensions the checkpoint lacks start fresh, and the checkpoint's extra heads are left out.
    Any other difference in shape is a CheckpointError naming the keys.
    """
    paths = find_checkpoints(path)
    if len(paths) != 1:
        raise CheckpointError(f"model.init_from={path}: names {len(paths)} checkpoints; name one")
    checkpoint = read_checkpoint(paths[0])
    state, carried_encoder = checkpoint["model"], checkpoint["recipe"]["encoder_weights"] == "checkpoint"
    own = model.state_dict()
    differing = [key for key in state if key in own and state[key].shape != own[key].shape]
    if differing:
        shapes = ", ".join(f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}" for key in differing[:8])
        raise CheckpointError(
            f"model.init_from={path}: the checkpoint's tensors do not fit this model's ({shapes}"
            f"{' …' if len(differing) > 8 else ''}; checkpoint vs model). Use the sizes it was trained with "
            "(model.d_hidden, model.d_state, model.speech_encoder_layers, …, see its .hydra/config.yaml)."
        )
    # A frozen pretrained encoder's weights stay at its source, where this model has just read them from.
    fresh = [key for key in own if key not in state and (carried_encoder or not key.startswith("encoder.wavlm."))]
    unused = [key for key in state if key not in own]
    not_heads = [key for key in fresh + unused if not key.startswith("heads.")]
    if not_heads:
        raise CheckpointError(
            f"model.init_from={path}: the checkpoint and this model differ beyond their heads: "
            f"{', '.join(not_heads[:8])}; use the model settings it was trained with"
        )
    model.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    if carried_encoder and model.encoder.restored_from_source:
        # The encoder is frozen but no longer what its source holds: its checkpoints must carry it.
        model.encoder.restored_from_source = False
    log.info(
        "model.init_from=%s: %d tensors loaded%s%s",
        paths[0],
        len(state) - len(unused),
        f"; new heads, trained from scratch: {sorted({key.split('.')[1] for key in fresh})}" if fresh else "",
        f"; the checkpoint's heads left out: {sorted({key.split('.')[1] for key in unused})}" if unused else "",
    )
    return Initialisation(paths[0], checkpoint["recipe"], fresh, unused)


@dataclass(frozen=True)
class SeenSpeakers:
    """Which speakers of the items a model is scored on it trained or validated on."""

    keys: set[str] | None  # their Corpus.speaker_keys; None: the checkpoint records no speakers
    total: int  # the known speakers of the items
    warning: str | None  # why the scores are no test; None when nothing says so

    @property
    def count(self) -> int | None:
        return None if self.keys is None else len(self.keys)


def seen_speakers(recipe: dict, corpus: Corpus, items: list[Item], what: str, split: str, fold) -> SeenSpeakers:
    """Which speakers of `items` (`what`, as the warning names them) the model of `recipe` trained or
    validated on. A checkpoint from before recipes recorded speakers is compared as then, approximately: by
    corpus name and by `fold` when `items` are the test split (`split`)."""
    speakers = corpus.speaker_keys(items)
    if "speakers" not in recipe:
        return SeenSpeakers(None, len(speakers), _seen_by_corpus(recipe, corpus.name, split, fold, what))
    seen = speakers & {*recipe["speakers"]["trained"], *recipe["speakers"]["validated"]}
    warning = (
        f"the model trained or validated on {len(seen)} of the {len(speakers)} speakers of {what} ({corpus.name}): "
        "the scores are not a test"
    )
    return SeenSpeakers(seen, len(speakers), warning if seen else None)


def _seen_by_corpus(recipe: dict, corpus: str, split: str, fold, what: str) -> str | None:
    """The same corpus, cut for another test fold, or not its test split."""
    trained = recipe["trained"]["fold"]
    if recipe["corpus"] != corpus or (split == "test" and (trained is None or fold is None or trained == fold)):
        return None
    return (
        f"the model was trained on {corpus} with data.fold={trained}, so {what} may hold speakers it trained or "
        "validated on: the scores are not a test (approximate: its checkpoint records no speakers, so only the "
        "corpus name and the fold were compared)"
    )
