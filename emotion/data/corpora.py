"""Every corpus the `data` config group can name, loaded into splits, dimensions and a label scale."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from emotion.data import demo, iemocap, msp_podcast
from emotion.data.corpus import (
    DIMENSIONS,
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
from emotion.settings import DataSettings


def load_corpus(data: DataSettings, whole: bool = False) -> Corpus:
    """`data` is the `data` group. `whole`: every item is wanted (evaluate.split=all), so a cross-validated
    corpus needs no test fold; with data.fold=null its items are then all in `splits.test`."""
    problems = config_problems(data, whole)
    if problems:
        raise ValueError("\n".join(problems))
    return _multi(data, whole) if data.name == "multi" else LOADERS[data.name](data)


def config_problems(data: DataSettings, whole: bool = False) -> list[str]:
    """What is wrong with the `data` group, found without reading the corpus: each with key, value and fix.
    `whole`: as load_corpus's."""
    if data.name not in LOADERS:
        return [f"data.name={data.name!r}: not a known corpus; choose data= one of {', '.join(LOADERS)}"]
    problems = []
    for index, part in enumerate(test_corpora(data)):
        where = f"data.test_corpora[{index}] ({part.name})"
        problems += [f"{where}: {problem}" for problem in config_problems(part)]
    if data.name == "multi":
        return problems + _multi_problems(data, whole)
    if data.exclude_fold is not None and data.exclude_fold == data.fold:
        problems.append(
            f"data.exclude_fold={data.exclude_fold}: the job's test fold (data.fold) cannot be left out of it; "
            "exclude another fold, or none (data.exclude_fold=null)"
        )
    no_fold_needed = whole and data.fold is None
    if data.name == "demo" and data.fold not in demo.SESSIONS and not no_fold_needed:
        problems.append(f"data.fold={data.fold!r}: the demo corpus has folds 1–5, one per session; e.g. data.fold=1")
    elif data.name == "iemocap":
        problems += _root_problems(data, "IEMOCAP_ROOT", iemocap.LAYOUT)
        if data.fold not in iemocap.SESSIONS and not no_fold_needed:
            problems.append(f"data.fold={data.fold!r}: IEMOCAP has folds 1–5, one per session; e.g. data.fold=1")
    elif data.name == "msp_podcast":
        problems += _root_problems(data, "MSP_PODCAST_ROOT", msp_podcast.LAYOUT)
        if data.fold is not None:
            problems.append(
                f"data.fold={data.fold!r}: MSP-Podcast has fixed splits; leave data.fold unset (null) and choose "
                f"the test set with data.test_set ({', '.join(msp_podcast.TEST_SETS)})"
            )
        if data.exclude_fold is not None:
            problems.append(f"data.exclude_fold={data.exclude_fold!r}: MSP-Podcast has no folds; leave it null")
    elif data.name == "csv":
        if data.manifest is None:
            problems.append("data.manifest is not set: data.manifest=<the corpus's CSV file>")
        elif not Path(data.manifest).is_file():
            problems.append(f"data.manifest={data.manifest!r}: no such file; point it at the corpus's CSV file")
        else:
            problems += _manifest_problems(data, no_fold_needed)
    return problems


def _manifest_problems(data: DataSettings, no_fold_needed: bool) -> list[str]:
    """Whether the manifest can be read, and whether data.fold fits its fold or split column."""
    try:
        items, _ = read_manifest(data.manifest)
    except ValueError as err:
        return [str(err)]
    has_split, has_fold = (any(getattr(item, key) is not None for item in items) for key in ("split", "fold"))
    if has_split and has_fold:
        return [f"data.manifest={data.manifest!r} has both a fold and a split column; keep the one you mean"]
    if has_split:
        if data.exclude_fold is not None:
            return [f"data.exclude_fold={data.exclude_fold!r}: data.manifest={data.manifest!r} has fixed splits"]
        if data.fold is None:
            return []
        return [
            f"data.fold={data.fold!r}: data.manifest={data.manifest!r} has a split column, so its splits are fixed; "
            "leave data.fold unset (data.fold=null)"
        ]
    folds = _manifest_folds(items, data.n_folds)
    if data.fold in folds or no_fold_needed:
        return []
    origin = "its fold column" if has_fold else f"made by speaker, data.n_folds={data.n_folds}"
    return [
        f"data.fold={data.fold!r}: data.manifest={data.manifest!r} has folds {folds[0]}–{folds[-1]} ({origin}); "
        f"pick the test fold, e.g. data.fold={folds[0]}"
    ]


def _multi_problems(data: DataSettings, whole: bool) -> list[str]:
    """Each corpus's own problems, named by its entry, and whether the weights and val_corpus fit them."""
    if not data.corpora:
        return ["data.corpora is empty: list the corpora to train on, e.g. data.corpora=[demo,demo_b]"]
    parts = training_corpora(data)
    problems = []
    for index, part in enumerate(parts):
        if part.name == "multi":
            problems.append(f"data.corpora[{index}]: a multi-corpus data group cannot hold another")
            continue
        where = f"data.corpora[{index}] ({part.name})"
        problems += [f"{where}: {problem}" for problem in config_problems(part, whole)]
    if problems:
        return problems
    names = [corpus_name(part) for part in parts]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(
            f"data.corpora: {', '.join(repeated)} twice; each corpus once (two CSV corpora in folders of the same "
            "name: give one its own corpus_name, {config: csv, manifest: …, corpus_name: …})"
        )
    weights = data.corpus_weights
    if isinstance(weights, list) and (len(weights) != len(parts) or not any(weights)):
        problems.append(
            f"data.corpus_weights={weights}: one weight per corpus of data.corpora ({len(parts)}: "
            f"{', '.join(names)}), not all 0; or natural, or balanced"
        )
    if data.val_corpus is not None and data.val_corpus not in names:
        problems.append(
            f"data.val_corpus={data.val_corpus!r}: not one of the corpora ({', '.join(names)}); or null: the mean "
            "of their validation scores selects"
        )
    return problems


def training_corpora(data: DataSettings) -> tuple[DataSettings, ...]:
    """The settings of each corpus data=multi trains on (see composed); () for one corpus."""
    return composed(data.part_settings())


def test_corpora(data: DataSettings) -> tuple[DataSettings, ...]:
    """The settings of each corpus of data.test_corpora (see composed)."""
    return composed(data.test_part_settings())


def composed(parts: tuple[DataSettings, ...]) -> tuple[DataSettings, ...]:
    """Corpora composed into a job take its data.fold where they have folds; one with fixed splits
    (MSP-Podcast, a manifest with a split column) has no fold to test or leave out."""
    return tuple(
        dataclasses.replace(part, fold=None, exclude_fold=None) if has_fixed_splits(part) else part for part in parts
    )


def has_fixed_splits(data: DataSettings) -> bool:
    """Whether the corpus comes in fixed train/val/test splits rather than folds (from its config and
    manifest alone); a manifest that cannot be read is for config_problems to name."""
    if data.name == "msp_podcast":
        return True
    if data.name != "csv" or data.manifest is None or not Path(data.manifest).is_file():
        return False
    try:
        items, _ = read_manifest(data.manifest)
    except ValueError:
        return False
    return any(item.split is not None for item in items)


def corpus_name(data: DataSettings) -> str:
    """How checkpoints, metrics and the tables name the corpus `data` configures, known without reading it."""
    if data.name == "multi":
        return "+".join(corpus_name(part) for part in training_corpora(data))
    names = {"iemocap": "IEMOCAP", "msp_podcast": "MSP-Podcast"}
    if data.name == "demo":
        return demo.STUDIOS[data.studio].name
    return csv_corpus_name(data) if data.name == "csv" else names[data.name]


def _root_problems(data: DataSettings, env: str, layout: str) -> list[str]:
    if data.root is None:
        return [
            f"data.root is not set for data={data.name}: pass data.root=<folder>, or set it once with the "
            f"environment variable {env} or in conf/local/default.yaml. Expected layout: {layout}"
        ]
    if not Path(data.root).expanduser().is_dir():
        return [
            f"data.root={data.root!r} does not exist (data={data.name}; also set by {env}). Expected layout: {layout}"
        ]
    return []


def _multi(data: DataSettings, whole: bool = False) -> Corpus:
    """The corpora of data.corpora as one: each item keeps its corpus's name (ids prefixed by it, so that two
    corpora's ids never meet) and rating scale; the whole has every dimension some corpus rates, and predicts
    on [0, 1] (on its scale, for one corpus)."""
    parts = []
    for part_data in training_corpora(data):
        part = load_corpus(part_data, whole)
        stamped = (
            [dataclasses.replace(item, id=f"{part.name}/{item.id}", corpus=part.name) for item in items]
            for items in (getattr(part.splits, key) for key in SPLIT_NAMES)
        )
        parts.append(dataclasses.replace(part, splits=Splits(*stamped)))
    dimensions = tuple(dim for dim in DIMENSIONS if any(dim in part.dimensions for part in parts))
    splits = Splits(*([item for part in parts for item in getattr(part.splits, key)] for key in SPLIT_NAMES))
    # One corpus keeps its scale: its model predicts on it, as it would trained with data=<its option>.
    scale = parts[0].scale if len(parts) == 1 else LabelScale(0.0, 1.0)
    return Corpus("+".join(part.name for part in parts), splits, scale, dimensions, tuple(parts))


def _demo(data: DataSettings) -> Corpus:
    manifest = ensure_demo_corpus(data.root, data.seed, data.utterances_per_voice, data.studio)
    items, dimensions = read_manifest(manifest)
    name = demo.STUDIOS[data.studio].name
    return Corpus(name, _cross_validation(items, data, f"the {name} corpus"), LabelScale(*data.label_range), dimensions)


def _csv(data: DataSettings) -> Corpus:
    """Its fold and split columns were checked against data.fold by config_problems."""
    items, dimensions = read_manifest(data.manifest)
    if any(item.split is not None for item in items):
        splits = fixed_splits(items)
    else:
        if all(item.fold is None for item in items):
            items = speaker_folds(items, data.n_folds, data.split_seed)
        splits = _cross_validation(items, data, str(data.manifest))
    return Corpus(csv_corpus_name(data), splits, LabelScale(*data.label_range), dimensions)


def csv_corpus_name(data: DataSettings) -> str:
    """data.corpus_name, else the manifest's folder (`corpora/ravdess/manifest.csv` → `ravdess`): the
    manifest sits at its corpus's top, since audio paths stay inside its folder. Checkpoints record speakers
    under this name, so one corpus must keep one name, and two corpora need two."""
    return str(data.corpus_name or Path(os.path.abspath(data.manifest)).parent.name)


def _iemocap(data: DataSettings) -> Corpus:
    items = iemocap.read_iemocap(Path(data.root).expanduser())
    return Corpus("IEMOCAP", _cross_validation(items, data, "IEMOCAP"), LabelScale(*iemocap.LABEL_RANGE), DIMENSIONS)


def _msp_podcast(data: DataSettings) -> Corpus:
    items = msp_podcast.read_msp_podcast(Path(data.root).expanduser(), data.test_set)
    return Corpus("MSP-Podcast", fixed_splits(items), LabelScale(*msp_podcast.LABEL_RANGE), DIMENSIONS)


def _cross_validation(items: list[Item], data: DataSettings, corpus: str) -> Splits:
    if data.fold is None:  # allowed for reading every item only (config_problems): no split to make
        return Splits(train=[], val=[], test=items)
    return cross_validation_splits(
        items, data.fold, corpus, data.validation, data.val_fraction, data.split_seed, data.exclude_fold
    )


def fold_numbers(data: DataSettings) -> list[int]:
    """The configured corpus's cross-validation folds, from its config and manifest alone (no audio is
    read); empty for a corpus with fixed splits."""
    if data.name in ("demo", "iemocap"):
        return list(demo.SESSIONS if data.name == "demo" else iemocap.SESSIONS)
    if data.name == "multi":  # data.fold is every cross-validated corpus's: the folds they all have
        folds = [set(fold_numbers(part)) for part in training_corpora(data) if fold_numbers(part)]
        return sorted(set.intersection(*folds)) if folds else []
    if data.name != "csv":
        return []
    items, _ = read_manifest(data.manifest)
    return [] if any(item.split is not None for item in items) else _manifest_folds(items, data.n_folds)


def _manifest_folds(items: list[Item], n_folds: int) -> list[int]:
    """A manifest's folds: its fold column's, else the n_folds made by speaker."""
    if any(item.fold is not None for item in items):
        return sorted({item.fold for item in items})
    return list(range(1, n_folds + 1))


SPLIT_NAMES = ("train", "val", "test")
LOADERS = {"demo": _demo, "iemocap": _iemocap, "msp_podcast": _msp_podcast, "csv": _csv, "multi": _multi}
