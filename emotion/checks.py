"""Every config value that can be checked is checked before anything heavy runs, and all problems are
reported together, each with its key, its value and what would be valid: a long job must not die at hour
three on a typo that the first second could have found.

Nothing here imports torch or transformers at module level: a config problem is reported in the first
second, not after the deep-learning stack has loaded.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path

import yaml
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from emotion.data.corpora import config_problems as data_problems
from emotion.data.corpus import DIMENSIONS
from emotion.data.manifest import manifest_dimensions
from emotion.selection import SELECTABLE, select_problems
from emotion.settings import GROUPS, DataSettings, model_class

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Keys under which any name is valid: encoder.random_init takes any WavLMConfig keyword, search.space any key to search.
OPEN_KEYS = ("encoder.random_init", "search.space")


class ConfigError(CompactHydraException, ValueError):
    """Hydra prints a CompactHydraException's message alone, without a traceback."""


def check_config(cfg: DictConfig) -> None:
    uncomposed = _composition_problems(cfg)
    if uncomposed:  # every other data check reads the composed corpora
        raise ConfigError("config problem; nothing was run:\n" + "\n".join(f"  {p}" for p in uncomposed))
    neural = _value(cfg, "model.kind") != "baseline"
    model_problems = [*_layer_problems(cfg), *_device_problems(cfg), *_init_from_problems(cfg)] if neural else []
    problems = [
        *_unknown_key_problems(cfg),
        *_type_problems(cfg),
        *model_problems,
        *_corpus_problems(cfg),
        *_select_problems(cfg),
    ]
    if problems:
        raise ConfigError(
            f"{len(problems)} config problem(s); nothing was run:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _composition_problems(cfg: DictConfig) -> list[str]:
    """Entries of data.corpora or data.test_corpora that name no data option: their corpora cannot be composed
    (emotion.composition)."""
    try:
        OmegaConf.to_container(cfg.data, resolve=True)
    except InterpolationResolutionError as err:
        # OmegaConf prefixes the resolver's own message with where it was raised.
        return [str(err).splitlines()[0].split("resolving interpolation: ", 1)[-1]]
    return []


def _type_problems(cfg: DictConfig) -> list[str]:
    """Values that do not fit their group's settings type (emotion.settings): a number out of its range, a
    choice not among its options, a list of the wrong things."""
    groups = {**GROUPS, "model": model_class(_value(cfg, "model.kind"))}
    return [problem for group, kind in groups.items() for problem in kind.problems(_value(cfg, group) or {})]


def _corpus_problems(cfg: DictConfig) -> list[str]:
    """The data group's problems beyond its types (folds, files, roots), once its types are right."""
    data = _value(cfg, "data") or {}
    return [] if DataSettings.problems(data) else data_problems(DataSettings.of(data))


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


def _select_problems(cfg: DictConfig) -> list[str]:
    """report.select must be a validation score the corpus has: it keeps every job's best epoch."""
    select = _value(cfg, "report.select")
    if select not in SELECTABLE:  # the type's check says what it must be
        return []
    return select_problems(select, _corpus_dimensions(cfg.data))


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
    if not isinstance(path, str):  # null, or not a path (the type's check says so)
        return []
    path = Path(str(path)).expanduser()
    if path.is_file() or (path / "checkpoints" / "best.pt").is_file():
        return []
    return [
        f"model.init_from={str(path)!r}: no such checkpoint; give a checkpoint file (<job>/checkpoints/best.pt) "
        "or a job folder holding one"
    ]


def _layer_problems(cfg: DictConfig) -> list[str]:
    """Whether the layers exist in the configured encoder (that they are indices is the type's check)."""
    layers = _value(cfg, "model.speech_encoder_layers")
    if not isinstance(layers, list) or not all(isinstance(layer, int) for layer in layers):
        return []
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
    device = cfg.trainer.device
    if not isinstance(device, str):  # the type's check says so
        return problems
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
    """The value at `key` as plain data, interpolations resolved; None where there is none."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
