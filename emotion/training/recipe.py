"""What rebuilds a trained model from its checkpoint alone, and whom it learned from.

A checkpoint (`best.pt`, `last.pt`) holds the model's state and its recipe: the model and encoder settings,
the encoder's architecture, where the encoder's weights are (in the checkpoint, or at `encoder.source` for
a frozen pretrained one), the dimensions and label scale it predicts, the sample rate, frame grid and
chunking it was evaluated with, the package version, and the speakers it trained and validated on
(hashed), which evaluate.py and `model.init_from` compare with the speakers they test on. Plain containers
only, so that it loads with `weights_only=True`. Training writes recipes and starts from checkpoints
(`model.init_from`); emotion.trained uses them.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from emotion.data.corpus import Corpus, Item
from emotion.features.acoustic import EGEMAPS_FUNCTIONALS, frame_feature_count
from emotion.logger import redact_secrets
from emotion.models.model import AcousticInputs, MambaEMA, build_model
from emotion.settings import EncoderSettings, JobSettings, ModelSettings, SettingsError
from emotion.training.checkpoints import load_checkpoint

log = logging.getLogger(__name__)

# Bump when the recipe's contents change in a way older code cannot read.
RECIPE_FORMAT = 1
BEST = Path("checkpoints") / "best.pt"
# What of the `data` group belongs to the model: evaluating it elsewhere needs the same.
MODEL_DATA_KEYS = ("sample_rate", "eval_chunk_seconds", "min_seconds", "normalise")


class CheckpointError(ValueError):
    pass


def model_recipe(settings: JobSettings, corpus: Corpus, model: MambaEMA, start: Initialisation | None = None) -> dict:
    """What rebuilds `model` without its job folder, and whom it learned from; stored in every checkpoint
    beside the weights. `start`: the checkpoint `model` was initialised from (model.init_from)."""
    encoder = model.encoder
    # A model started from another learned from that one's speakers too.
    inherited = set()
    if start is not None and "speakers" in start.recipe:
        inherited = {*start.recipe["speakers"]["trained"], *start.recipe["speakers"]["validated"]}

    return {
        "format": RECIPE_FORMAT,
        "emotion_version": importlib.metadata.version("emotion"),
        "model": redact_secrets(dataclasses.asdict(settings.model)),
        "encoder": redact_secrets(dataclasses.asdict(settings.encoder)),
        "wavlm_config": json.loads(encoder.wavlm.config.to_json_string(use_diff=False)),
        "encoder_weights": "source" if encoder.restored_from_source else "checkpoint",
        "corpus": corpus.name,
        "dimensions": list(corpus.dimensions),
        "label_scale": [float(corpus.scale.low), float(corpus.scale.high)],
        # Every corpus's own scale: predictions can be given on any of them (data=multi predicts on [0, 1]).
        "label_scales": {part.name: [part.scale.low, part.scale.high] for part in corpus.parts or [corpus]},
        "data": {key: getattr(settings.data, key) for key in MODEL_DATA_KEYS},
        "grid": {"window": encoder.grid.window, "hop": encoder.grid.hop},
        "trained": {"fold": settings.data.fold, "seed": settings.trainer.seed},
        "speakers": {
            "trained": sorted(corpus.speaker_keys(corpus.splits.train) | inherited),
            "validated": sorted(corpus.speaker_keys(corpus.splits.val)),
        },
    }


def recipe_normalisation(recipe: dict) -> str:
    """The data.normalise a model was trained with; recipes before that key had data.speaker_norm."""
    data = recipe["data"]
    return data.get("normalise") or ("speaker" if data.get("speaker_norm") else "training")


def new_model(
    model: ModelSettings, encoder: EncoderSettings, dimensions: tuple[str, ...], wavlm_config: dict | None = None
) -> MambaEMA:
    """A model of these settings, with its acoustic inputs as the features give them (untrained, unless
    `wavlm_config` rebuilds a checkpoint's encoder; see build_model)."""
    functionals = EGEMAPS_FUNCTIONALS if model.functionals else 0
    inputs = AcousticInputs(frame_feature_count(model.acoustic), functionals)
    return build_model(model, encoder, dimensions, inputs, wavlm_config)


def checkpoint_files(path: str | Path | list) -> list[Path]:
    """The checkpoints `path` names: a checkpoint file; a job folder (its checkpoints/best.pt); a folder of
    jobs, such as one configuration's folds (each job's best.pt); a glob pattern; or a list of these."""
    if isinstance(path, (list, tuple)) or OmegaConf.is_list(path):
        return [found for one in path for found in checkpoint_files(one)]
    path = Path(str(path)).expanduser()
    # A path that exists is taken as written: job folders' names hold `[`, as in layers=[6,12,18,24].
    if not path.exists() and glob.has_magic(str(path)):
        matches = sorted(Path(match) for match in glob.glob(str(path)))
        if not matches:
            raise CheckpointError(f"ckpt={str(path)!r}: the pattern matches nothing")
        return [checkpoint for match in matches for checkpoint in _checkpoints_at(match)]
    return _checkpoints_at(path)


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
    try:
        ModelSettings.of(state["recipe"]["model"]), EncoderSettings.of(state["recipe"]["encoder"])
    except SettingsError as err:
        raise CheckpointError(
            f"ckpt={str(path)!r}: its recipe's model settings are not this version's ({err}; it was written by "
            f"emotion {state['recipe'].get('emotion_version')})"
        ) from None
    return state


def rebuild(state: dict) -> MambaEMA:
    """The model of a checkpoint's state, in evaluation mode."""
    recipe = state["recipe"]
    in_checkpoint = recipe["encoder_weights"] == "checkpoint"
    model = new_model(
        ModelSettings.of(recipe["model"]),
        EncoderSettings.of(recipe["encoder"]),
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
    paths = checkpoint_files(path)
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
