"""Every config value that can be checked is checked before anything heavy runs, and all problems are
reported together, each with its key, its value and what would be valid: a long job must not die at hour
three on a typo that the first second could have found.

Nothing here imports torch or transformers at module level: a config problem is reported in the first
second, not after the deep-learning stack has loaded.
"""

from __future__ import annotations

import difflib
import json
import math
from functools import cache
from pathlib import Path

import yaml
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

from emotion.data.corpora import config_problems as data_problems
from emotion.data.corpus import DIMENSIONS
from emotion.data.manifest import manifest_dimensions
from emotion.selection import select_problems

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
RESUME_MODES = ("auto", "never")
MAMBA_IMPLS = ("auto", "kernel", "torch")
MODEL_KINDS = ("mamba_ema", "baseline")
ACOUSTIC_SETS = ("egemaps", "contours", "both")  # emotion.features.acoustic.FRAME_SETS, without its imports
REGRESSORS = ("svr", "ridge")
SVR_KERNELS = ("linear", "rbf")

POSITIVE_INTEGERS = (
    "model.d_prosody_out",
    "model.d_hidden",
    "model.d_state",
    "model.mamba_n_layers",
    "model.mamba_d_state",
    "model.mamba_d_conv",
    "model.mamba_expand",
    "model.d_functionals_out",
    "model.time_mask_width",
    "data.batch_size",
    "data.sample_rate",
    "trainer.max_epochs",
    "trainer.patience",
    "trainer.accumulation_steps",
    "trainer.max_bad_steps",
)
NON_NEGATIVE_INTEGERS = ("trainer.checkpoint_every_steps",)
# auto, or a number: the CPU budget decides (emotion.cpu).
AUTO_OR_POSITIVE_INTEGERS = ("trainer.cpu_threads",)
AUTO_OR_NON_NEGATIVE_INTEGERS = ("data.num_workers",)
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
    "model.time_mask_ratio": (0.0, 1.0, False),
    "model.feature_mask_ratio": (0.0, 1.0, False),
    "optim.warmup_ratio": (0.0, 1.0, False),
    "optim.min_lr_ratio": (0.0, 1.0, True),
    "data.val_fraction": (0.0, 1.0, False),
}
CHOICES = {
    "trainer.precision": PRECISIONS,
    "trainer.resume": RESUME_MODES,
    "model.kind": MODEL_KINDS,
    "model.mamba_impl": MAMBA_IMPLS,
    "model.acoustic": ACOUSTIC_SETS,
    "model.functionals": (True, False),
    "data.speaker_norm": (True, False),
    "logger.backend": ("wandb", "none"),
    "trainer.preflight": ("auto", True, False),
    "encoder.freeze": (True, False),
    "encoder.feature_cache": (True, False),
}
# Keys under which any name is valid: encoder.random_init takes any WavLMConfig keyword, search.space any key to search.
OPEN_KEYS = ("encoder.random_init", "search.space")


class ConfigError(CompactHydraException, ValueError):
    """Hydra prints a CompactHydraException's message alone, without a traceback."""


def check_config(cfg: DictConfig) -> None:
    if _value(cfg, "model.kind") == "baseline":
        model_problems = _baseline_problems(cfg)
    else:
        model_problems = [*_layer_problems(cfg), *_device_problems(cfg), *_init_from_problems(cfg)]
    problems = [
        *_unknown_key_problems(cfg),
        *_number_problems(cfg),
        *_choice_problems(cfg),
        *model_problems,
        *data_problems(cfg.data),
        *_select_problems(cfg),
    ]
    if problems:
        raise ConfigError(
            f"{len(problems)} config problem(s); nothing was run:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _unknown_key_problems(cfg: DictConfig) -> list[str]:
    """Keys in the project's groups (model, data, trainer, …) that no file of those groups sets: a typo
    (`+model.d_hiden=128`, or one in conf/local/default.yaml) would otherwise be carried along silently
    while the real key keeps its value. New top-level keys (`+notes=…`) are free-form and allowed."""
    known = known_keys()
    groups = {key for key in known if "." not in key and OmegaConf.is_dict(cfg.get(key))}
    config = OmegaConf.to_container(cfg, resolve=False)
    problems = []
    for key in _dotted_keys({group: config[group] for group in sorted(groups)}):
        if key in known or key.startswith(tuple(f"{open_key}." for open_key in OPEN_KEYS)):
            continue
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]}?" if nearest else "no config group reads it"
        problems.append(f"{key}: not a key of this project's configuration ({hint}); nothing would read its value")
    return problems


@cache
def known_keys(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every dotted key that some file under conf/ sets (conf/local, the user's own file, excepted)."""
    keys = set()
    for path in conf_dir.rglob("*.yaml"):
        group = path.parent.relative_to(conf_dir)
        if group.parts[:1] in (("local",), ("hydra",)):
            continue
        content = yaml.safe_load(path.read_text()) or {}
        content.pop("defaults", None)
        content.pop("hydra", None)
        package = _package(path, group)
        keys.update(f"{package}.{key}" if package else key for key in _dotted_keys(content))
    groups = {key.rsplit(".", depth)[0] for key in keys for depth in range(1, key.count(".") + 1)}
    return frozenset(keys | groups)


def _package(path: Path, group: Path) -> str:
    """Where a config file's keys go: its `# @package` header, else its group (a file at the top: the root)."""
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            package = line.removeprefix("# @package").strip()
            return "" if package == "_global_" else package
        if line and not line.startswith("#"):
            break
    return ".".join(group.parts)


def _dotted_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{dotted}.")
    return keys


def _applies(cfg: DictConfig, key: str) -> bool:
    """Whether `key` is read by the configured model kind: the baseline reads none of the neural model's."""
    return not (key.startswith("model.") and _value(cfg, "model.kind") == "baseline" and key != "model.kind")


def _number_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for keys, test, wanted in (
        (POSITIVE_INTEGERS, lambda v: _is_int(v) and v > 0, "a positive whole number"),
        (NON_NEGATIVE_INTEGERS, lambda v: _is_int(v) and v >= 0, "a whole number, 0 or more"),
        (AUTO_OR_POSITIVE_INTEGERS, lambda v: v == "auto" or (_is_int(v) and v > 0), "auto or a positive whole number"),
        (
            AUTO_OR_NON_NEGATIVE_INTEGERS,
            lambda v: v == "auto" or (_is_int(v) and v >= 0),
            "auto or a whole number, 0 or more",
        ),
        (POSITIVE_NUMBERS, lambda v: _is_number(v) and v > 0, "a number above 0"),
        (NON_NEGATIVE_NUMBERS, lambda v: _is_number(v) and v >= 0, "a number, 0 or more"),
    ):
        problems += [
            f"{key}={_value(cfg, key)!r}: must be {wanted}"
            for key in keys
            if _applies(cfg, key) and not test(_value(cfg, key))
        ]
    for key, (low, high, high_allowed) in RANGES.items():
        if not _applies(cfg, key):
            continue
        value = _value(cfg, key)
        if not (_is_number(value) and low <= value and (value <= high if high_allowed else value < high)):
            problems.append(f"{key}={value!r}: must be in [{low}, {high}{']' if high_allowed else ')'}")
    return problems


def _choice_problems(cfg: DictConfig) -> list[str]:
    return [
        f"{key}={_value(cfg, key)!r}: must be one of {', '.join(map(str, allowed))}"
        for key, allowed in CHOICES.items()
        if _applies(cfg, key) and not _is_one_of(_value(cfg, key), allowed)
    ]


def _is_one_of(value, allowed: tuple) -> bool:
    """`value in allowed`, except that 1 is not True: a switch takes true or false."""
    return any(value == option and isinstance(value, bool) == isinstance(option, bool) for option in allowed)


def _baseline_problems(cfg: DictConfig) -> list[str]:
    regressor = _value(cfg, "model.regressor")
    if regressor not in REGRESSORS:
        return [f"model.regressor={regressor!r}: must be one of {', '.join(REGRESSORS)}"]
    problems = []
    candidates_key = {"svr": "model.svr_c", "ridge": "model.ridge_alpha"}[regressor]
    candidates = _value(cfg, candidates_key)
    if not (isinstance(candidates, list) and candidates and all(_is_number(v) and v > 0 for v in candidates)):
        problems.append(f"{candidates_key}={candidates!r}: must be a list of numbers above 0, e.g. [0.1, 1, 10]")
    if regressor == "svr" and not (_is_number(epsilon := _value(cfg, "model.svr_epsilon")) and epsilon >= 0):
        problems.append(f"model.svr_epsilon={epsilon!r}: must be a number, 0 or more")
    if regressor == "svr" and (kernel := _value(cfg, "model.svr_kernel")) not in SVR_KERNELS:
        problems.append(f"model.svr_kernel={kernel!r}: must be one of {', '.join(SVR_KERNELS)}")
    return problems


def _select_problems(cfg: DictConfig) -> list[str]:
    """report.select must be a validation score the corpus has: it keeps every job's best epoch."""
    select = _value(cfg, "report.select")
    return [] if select is None else select_problems(select, _corpus_dimensions(cfg.data))


def _corpus_dimensions(data: DictConfig) -> tuple[str, ...] | None:
    """The dimensions the configured corpus is labelled with; None when its manifest cannot tell (the data
    checks report why)."""
    if data.name != "csv":
        return DIMENSIONS
    try:
        return manifest_dimensions(data.manifest) or None  # none: the data checks say what it lacks
    except (OSError, MissingMandatoryValue):
        return None


def _init_from_problems(cfg: DictConfig) -> list[str]:
    """That model.init_from names a checkpoint or a job folder with one; what it holds is read in training's
    first seconds."""
    path = _value(cfg, "model.init_from")
    if path is None:
        return []
    path = Path(str(path)).expanduser()
    if path.is_file() or (path / "checkpoints" / "best.pt").is_file():
        return []
    return [
        f"model.init_from={str(path)!r}: no such checkpoint; give a checkpoint file (<job>/checkpoints/best.pt) "
        "or a job folder holding one"
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
    """Transformer layers of the configured encoder, from its config alone; None when that is not at hand.

    Read from config.json in a local directory or in the Hugging Face cache, never over the network:
    loading the encoder reports a missing one.
    """
    if cfg.source is None:
        return OmegaConf.to_container(cfg.random_init).get("num_hidden_layers", 12)
    config_file = Path(cfg.source).expanduser() / "config.json"
    if not config_file.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(cfg.source), "config.json")
        if not isinstance(cached, str):
            return None
        config_file = Path(cached)
    try:
        return json.loads(config_file.read_text()).get("num_hidden_layers", 12)
    except (OSError, ValueError):
        return None


def _device_problems(cfg: DictConfig) -> list[str]:
    """Imports torch only when the config asks for CUDA."""
    problems = []
    device = str(cfg.trainer.device)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        problems.append(f"trainer.device={device!r}: must be auto, cpu, cuda or cuda:<index>")
    wants_kernel = cfg.model.mamba_impl == "kernel"
    if not (device.startswith("cuda") or wants_kernel):
        return problems
    import torch

    from emotion.models.mamba import kernel_available

    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.device={device!r}: CUDA is not available here; use trainer.device=auto or cpu")
    if wants_kernel and not (kernel_available() and torch.cuda.is_available()):
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
