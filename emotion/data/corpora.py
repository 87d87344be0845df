"""Every corpus the `data` config group can name, loaded into splits, dimensions and a label scale."""

from __future__ import annotations

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
    return LOADERS[data.name](data)


def config_problems(data: DataSettings, whole: bool = False) -> list[str]:
    """What is wrong with the `data` group, found without reading the corpus: each with key, value and fix.
    `whole`: as load_corpus's."""
    if data.name not in LOADERS:
        return [f"data.name={data.name!r}: not a known corpus; choose data= one of {', '.join(LOADERS)}"]
    problems = []
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
    if data.name != "csv":
        return []
    items, _ = read_manifest(data.manifest)
    return [] if any(item.split is not None for item in items) else _manifest_folds(items, data.n_folds)


def _manifest_folds(items: list[Item], n_folds: int) -> list[int]:
    """A manifest's folds: its fold column's, else the n_folds made by speaker."""
    if any(item.fold is not None for item in items):
        return sorted({item.fold for item in items})
    return list(range(1, n_folds + 1))


LOADERS = {"demo": _demo, "iemocap": _iemocap, "msp_podcast": _msp_podcast, "csv": _csv}
