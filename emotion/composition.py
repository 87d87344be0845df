"""Config nodes composed at run time from other config files: the corpora of `data=multi`, and those a job
is also tested on (`data.test_corpora`).

`data.corpora` and `data.test_corpora` list corpora by their data option (`demo_b`, `iemocap`), by a CSV
manifest's path, or as a mapping that also sets the corpus's own keys (`{config: csv, manifest: x.csv,
label_range: [1, 7]}`). `data.parts` and `data.test_parts` (`${emotion.corpus_parts:corpora}`) resolve to
each corpus's complete `data` group, composed as Hydra would compose `data=<option>` but on top of the job's
own values of the shared keys, so that `data.fold=2`, `data.batch_size` or `data.normalise` given once hold
for every corpus (a corpus with fixed splits has no fold: emotion.data.corpora.composed). A corpus's file
wins over them, and the entry's own keys win over all.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
RESOLVER = "emotion.corpus_parts"


# Keys that list or hold composed corpora: a composed corpus is one corpus, without any of them.
COMPOSING_KEYS = ("corpora", "parts", "test_corpora", "test_normalise", "test_parts")


def corpus_parts(key: str, *, _parent_: DictConfig, _root_: DictConfig) -> list[dict]:
    """The data group of each corpus `_parent_[key]` lists, resolved (an OmegaConf resolver: `_parent_` is the
    job's data group, `_root_` the whole config, whose `paths` the corpora's files may name)."""
    shared = OmegaConf.load(CONF_DIR / "data_defaults.yaml")
    own_values = {name: _parent_[name] for name in shared if name not in COMPOSING_KEYS}
    return [_part(entry, own_values, _root_, key) for entry in _parent_.get(key) or ()]


def corpus_option(entry) -> tuple[str, dict]:
    """The data option an entry of data.corpora names and the keys it sets itself."""
    if OmegaConf.is_config(entry):
        entry = OmegaConf.to_container(entry)
    if isinstance(entry, dict):
        own = dict(entry)
        if "config" not in own:
            raise ValueError(
                f"data.corpora: {entry!r} names no data option; give it one, e.g. {{config: csv, manifest: …}}"
            )
        return str(own.pop("config")), own
    entry = str(entry)
    if entry.endswith(".csv"):
        return "csv", {"manifest": entry}
    return entry, {}


def known_options() -> list[str]:
    """The data options a multi-corpus job can compose (multi itself excepted)."""
    return sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml") if path.stem != "multi")


def _part(entry, own_values: dict, root: DictConfig, key: str) -> dict:
    option, own = corpus_option(entry)
    if option not in known_options():
        raise ValueError(
            f"data.{key}: {option!r} is not a data option; use one of {', '.join(known_options())}, "
            "a CSV manifest's path, or {config: <option>, <key>: <value>}"
        )
    config = OmegaConf.load(CONF_DIR / "data" / f"{option}.yaml")
    for composing in ("defaults", *COMPOSING_KEYS):
        config.pop(composing, None)
    if config.get("fold", 0) is None:  # "no fold unless given": the job's data.fold is given (see corpora.composed)
        config.pop("fold")
    merged = OmegaConf.merge(own_values, config, own)
    # The corpus's file may name `paths` and its own keys as `data.<key>`: resolve it where those are.
    tree = OmegaConf.create({"paths": root.get("paths", {}), "data": merged})
    return OmegaConf.to_container(tree.data, resolve=True)


def training_sets(corpora, leave_one_out: bool) -> str:
    """The values of data.corpora a cross-corpus sweep trains on, as one sweep parameter (`[demo],[demo_b]`):
    each corpus alone and, with `leave_one_out` and three corpora or more, all of them but one."""
    entries = [_override_text(entry) for entry in corpora]
    sets = [[entry] for entry in entries]
    if leave_one_out and len(entries) > 2:
        sets += [[other for index, other in enumerate(entries) if index != left] for left in range(len(entries))]
    return ",".join(f"[{','.join(entries)}]" for entries in sets)


def _override_text(value) -> str:
    """`value` as Hydra's override grammar writes it: a name, a quoted path, a list, a mapping."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_override_text(inner)}" for key, inner in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_override_text, value)) + "]"
    text = str(value)
    plain = text.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum()
    return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register() -> None:
    for name, resolver in ((RESOLVER, corpus_parts), ("emotion.training_sets", training_sets)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
