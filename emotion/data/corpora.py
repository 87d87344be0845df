"""Every corpus the `data` config group can name, loaded into items, splits and a label scale."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from emotion.data.corpus import DIMENSIONS, LabelScale, Splits, leave_one_session_out, read_manifest
from emotion.data.demo import ensure_demo_corpus


@dataclass(frozen=True)
class Corpus:
    name: str
    splits: Splits
    scale: LabelScale
    dimensions: tuple[str, ...] = DIMENSIONS


def load_corpus(cfg: DictConfig) -> Corpus:
    loaders = {"demo": _demo}
    if cfg.name not in loaders:
        raise ValueError(f"data.name={cfg.name!r} is not a known corpus; choose one of {sorted(loaders)}.")
    return loaders[cfg.name](cfg)


def _demo(cfg: DictConfig) -> Corpus:
    manifest = ensure_demo_corpus(cfg.root, cfg.seed, cfg.utterances_per_voice)
    items = read_manifest(manifest)
    return Corpus("demo", leave_one_session_out(items, cfg.fold, "the demo corpus"), LabelScale(*cfg.label_range))
