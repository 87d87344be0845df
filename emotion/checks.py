"""Every config value that can be checked is checked before anything heavy runs, and all problems are
reported together, each with its key, its value and what would be valid: a long job must not die at hour
three on a typo that the first second could have found."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from emotion.data.corpora import config_problems as data_problems
from emotion.models.mamba import MAMBA_IMPLS, kernel_available
from emotion.training.loop import PRECISIONS, RESUME_MODES

POSITIVE_INTEGERS = (
    "model.d_prosody_out",
    "model.d_hidden",
    "model.d_state",
    "model.mamba_n_layers",
    "model.mamba_d_state",
    "model.mamba_d_conv",
    "model.mamba_expand",
    "data.batch_size",
    "data.sample_rate",
    "trainer.max_epochs",
    "trainer.patience",
    "trainer.accumulation_steps",
    "trainer.max_bad_steps",
)
NON_NEGATIVE_INTEGERS = ("data.num_workers", "trainer.checkpoint_every_steps")
POSITIVE_NUMBERS = (
    "data.max_seconds",
    "data.eval_chunk_seconds",
    "optim.lr",
    "optim.eps",
    "optim.grad_clip",
    "encoder.feature_cache_max_gb",
)
NON_NEGATIVE_NUMBERS = ("data.min_seconds", "optim.encoder_lr", "optim.weight_decay")
# key: (low, high, whether high itself is allowed)
RANGES = {
    "model.dropout": (0.0, 1.0, False),
    "model.ema_alpha_init": (0.0, 1.0, False),
    "optim.warmup_ratio": (0.0, 1.0, False),
    "optim.min_lr_ratio": (0.0, 1.0, True),
    "data.val_fraction": (0.0, 1.0, False),
}
CHOICES = {
    "trainer.precision": PRECISIONS,
    "trainer.resume": RESUME_MODES,
    "model.mamba_impl": MAMBA_IMPLS,
    "logger.backend": ("wandb", "none"),
    "trainer.preflight": ("auto", True, False),
    "encoder.freeze": (True, False),
    "encoder.feature_cache": (True, False),
}


class ConfigError(ValueError):
    pass


def check_config(cfg: DictConfig) -> None:
    problems = [
        *_number_problems(cfg),
        *_choice_problems(cfg),
        *_layer_problems(cfg),
        *_device_problems(cfg),
        *data_problems(cfg.data),
    ]
    if problems:
        raise ConfigError(
            f"{len(problems)} config problem(s); nothing was run:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _number_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for keys, test, wanted in (
        (POSITIVE_INTEGERS, lambda v: _is_int(v) and v > 0, "a positive whole number"),
        (NON_NEGATIVE_INTEGERS, lambda v: _is_int(v) and v >= 0, "a whole number, 0 or more"),
        (POSITIVE_NUMBERS, lambda v: _is_number(v) and v > 0, "a number above 0"),
        (NON_NEGATIVE_NUMBERS, lambda v: _is_number(v) and v >= 0, "a number, 0 or more"),
    ):
        problems += [f"{key}={_value(cfg, key)!r}: must be {wanted}" for key in keys if not test(_value(cfg, key))]
    for key, (low, high, high_allowed) in RANGES.items():
        value = _value(cfg, key)
        if not (_is_number(value) and low <= value and (value <= high if high_allowed else value < high)):
            problems.append(f"{key}={value!r}: must be in [{low}, {high}{']' if high_allowed else ')'}")
    return problems


def _choice_problems(cfg: DictConfig) -> list[str]:
    return [
        f"{key}={_value(cfg, key)!r}: must be one of {', '.join(map(str, allowed))}"
        for key, allowed in CHOICES.items()
        if _value(cfg, key) not in allowed
    ]


def _layer_problems(cfg: DictConfig) -> list[str]:
    layers = _value(cfg, "model.speech_encoder_layers")
    if not isinstance(layers, list) or not layers or not all(_is_int(layer) for layer in layers):
        return [f"model.speech_encoder_layers={layers!r}: must be a list of hidden-state indices, e.g. [6,12,18,24]"]
    depth = encoder_depth(cfg.encoder)
    if depth is not None and not all(0 <= layer <= depth for layer in layers):
        return [
            f"model.speech_encoder_layers={layers}: encoder={cfg.encoder.name} has hidden states 0–{depth} "
            f"(0 = feature projection, {depth} = last layer); e.g. {[depth // 4 * i for i in range(1, 5)]}"
        ]
    return []


def encoder_depth(cfg: DictConfig) -> int | None:
    """Transformer layers of the configured encoder, from its config alone; None when that is not at hand."""
    if cfg.source is None:
        return OmegaConf.to_container(cfg.random_init).get("num_hidden_layers", 12)
    from transformers import WavLMConfig

    try:  # the cached config.json only: no network in a check, loading the encoder reports a missing one
        return WavLMConfig.from_pretrained(cfg.source, local_files_only=True).num_hidden_layers
    except (OSError, ValueError):
        return None


def _device_problems(cfg: DictConfig) -> list[str]:
    problems = []
    device = str(cfg.trainer.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.device={device!r}: CUDA is not available here; use trainer.device=auto or cpu")
    elif device not in ("auto", "cpu") and not device.startswith("cuda"):
        problems.append(f"trainer.device={device!r}: must be auto, cpu, cuda or cuda:<index>")
    if cfg.model.mamba_impl == "kernel" and not (kernel_available() and torch.cuda.is_available()):
        problems.append(
            "model.mamba_impl='kernel': needs mamba-ssm and a CUDA device; install the `cuda` extra on a GPU "
            "machine, or use model.mamba_impl=auto"
        )
    return problems


def _value(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
