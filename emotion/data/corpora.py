"""Every corpus the `data` config group can name, loaded into splits, dimensions and a label scale."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from emotion.data import iemocap, msp_podcast
from emotion.data.corpus import (
    DIMENSIONS,
    VALIDATION_PROTOCOLS,
    Corpus,
    Item,
    LabelScale,
    Splits,
    cross_validation_splits,
    fixed_splits,
    speaker_folds,
)
from emotion.data.demo import ensure_demo_corpus
from emotion.data.manifest import read_manifest

# Keys of the `data` group with a fixed set of values, checked before anything is read.
CHOICES = {"on_bad_audio": ("error", "skip"), "batching": ("bucket", "random"), "validation": VALIDATION_PROTOCOLS}


def load_corpus(cfg: DictConfig) -> Corpus:
    """`cfg` is the `data` group."""
    loaders = {"demo": _demo, "csv": _csv, "iemocap": _iemocap, "msp_podcast": _msp_podcast}
    if cfg.name not in loaders:
        raise ValueError(f"data.name={cfg.name!r} is not a known corpus; choose one of {sorted(loaders)}.")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ValueError(f"data.{key}={cfg[key]!r} is not one of {allowed}.")
    return loaders[cfg.name](cfg)


def _demo(cfg: DictConfig) -> Corpus:
    items, dimensions = read_manifest(ensure_demo_corpus(cfg.root, cfg.seed, cfg.utterances_per_voice))
    return Corpus("demo", _cross_validation(items, cfg, "the demo corpus"), LabelScale(*cfg.label_range), dimensions)


def _csv(cfg: DictConfig) -> Corpus:
    items, dimensions = read_manifest(cfg.manifest)
    has_split, has_fold = (any(getattr(item, key) is not None for item in items) for key in ("split", "fold"))
    if has_split and has_fold:
        raise ValueError(f"{cfg.manifest} has both a fold and a split column; keep the one you mean.")
    if has_split:
        _require_default_fold(cfg, "this manifest has a split column, so its splits are fixed")
        splits = fixed_splits(items)
    else:
        if not has_fold:
            items = speaker_folds(items, cfg.n_folds, cfg.split_seed)
        splits = _cross_validation(items, cfg, str(cfg.manifest))
    return Corpus(Path(cfg.manifest).stem, splits, LabelScale(*cfg.label_range), dimensions)


def _iemocap(cfg: DictConfig) -> Corpus:
    root = _existing_root(cfg, "IEMOCAP_ROOT", iemocap.LAYOUT)
    items = iemocap.read_iemocap(root)
    return Corpus("IEMOCAP", _cross_validation(items, cfg, "IEMOCAP"), LabelScale(*iemocap.LABEL_RANGE), DIMENSIONS)


def _msp_podcast(cfg: DictConfig) -> Corpus:
    _require_default_fold(
        cfg, f"MSP-Podcast has fixed splits; choose the test set with data.test_set ({msp_podcast.TEST_SETS})"
    )
    root = _existing_root(cfg, "MSP_PODCAST_ROOT", msp_podcast.LAYOUT)
    items = msp_podcast.read_msp_podcast(root, cfg.test_set)
    return Corpus("MSP-Podcast", fixed_splits(items), LabelScale(*msp_podcast.LABEL_RANGE), DIMENSIONS)


def _cross_validation(items: list[Item], cfg: DictConfig, corpus: str) -> Splits:
    return cross_validation_splits(items, cfg.fold, corpus, cfg.validation, cfg.val_fraction, cfg.split_seed)


def _require_default_fold(cfg: DictConfig, why: str) -> None:
    if cfg.fold is not None:
        raise ValueError(f"data.fold={cfg.fold}, but {why}: leave data.fold unset (null).")


def _existing_root(cfg: DictConfig, env: str, layout: str) -> Path:
    if cfg.root is None:
        raise FileNotFoundError(
            f"data.root is not set for data={cfg.name}: pass data.root=<folder>, or set it once with the "
            f"environment variable {env} or in conf/local/default.yaml. Expected layout: {layout}."
        )
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root={str(root)!r} does not exist (data={cfg.name}; also settable with {env}). "
            f"Expected layout: {layout}."
        )
    return root
