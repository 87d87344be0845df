"""The generic CSV corpus: one row per utterance, audio paths relative to the manifest's folder.

Columns: `path`, `speaker`, any of `arousal`, `valence`, `dominance` (the model predicts those present),
an optional `id` (default: the file name without extension), and either `fold` (integers, for
cross-validation), `split` (train / val / test), or neither (folds are then made by speaker).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from emotion.data.corpus import DIMENSIONS, Item, parse_label

SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "development": "val",
    "test": "test",
}


def read_manifest(path: str | Path) -> tuple[list[Item], tuple[str, ...]]:
    """Items and the dimensions they are labelled with."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.manifest={str(path)!r} does not exist; point it at the corpus's CSV file.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        rows = list(reader)
    dimensions = tuple(dim for dim in DIMENSIONS if dim in columns)
    missing = {"path", "speaker"} - columns
    if missing or not dimensions:
        raise ValueError(
            f"{path} lacks column(s) {sorted(missing) or ''}{'' if dimensions else ' and every label column'}: "
            f"a manifest needs path, speaker, at least one of {', '.join(DIMENSIONS)}, and optionally id and "
            f"fold or split (it has {sorted(columns)})."
        )
    items = [_item(row, path, dimensions, line) for line, row in enumerate(rows, start=2)]
    repeated = [item_id for item_id, count in Counter(item.id for item in items).items() if count > 1]
    if repeated:
        raise ValueError(
            f"{path}: ids {repeated[:5]}{' …' if len(repeated) > 5 else ''} name more than one row; ids default to "
            "the file name without extension, so add an id column that tells such files apart."
        )
    return items, dimensions


def manifest_dimensions(path: str | Path) -> tuple[str, ...]:
    """The dimensions a manifest is labelled with, from its header alone (read_manifest checks the rest)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        columns = set(next(csv.reader(f), ()))
    return tuple(dim for dim in DIMENSIONS if dim in columns)


def _item(row: dict, manifest: Path, dimensions: tuple[str, ...], line: int) -> Item:
    split = row.get("split")
    if split is not None and split.strip().lower() not in SPLIT_NAMES:
        raise ValueError(f"{manifest}, line {line}: split={split!r}; use train, val or test.")
    fold = row.get("fold")
    if fold is not None and not fold.strip().lstrip("-").isdigit():
        raise ValueError(f"{manifest}, line {line}: fold={fold!r}; folds are whole numbers.")
    path, outside = audio_path(manifest, row["path"], line)
    return Item(
        id=row.get("id") or Path(row["path"]).stem,
        path=path,
        speaker=row["speaker"],
        labels=tuple(parse_label(row[dim]) for dim in dimensions),
        fold=None if fold is None else int(fold),
        split=None if split is None else SPLIT_NAMES[split.strip().lower()],
        unusable=outside,
    )


def audio_path(manifest: Path, listed: str, line: int) -> tuple[Path, str | None]:
    """The audio file a manifest's row names, relative to the manifest's folder, and why it may not be read:
    None, or that it leads outside that folder (an absolute path, or one through `..`). Such a row is
    reported with every other unusable item, and never read. Training's and predict.py's manifests alike."""
    # Lexically, not resolve(): a corpus folder may hold symbolic links to audio on another disk.
    root = Path(os.path.abspath(manifest.parent))
    path = Path(os.path.normpath(root / listed))
    if path.is_relative_to(root):
        return path, None
    return path, (
        f"line {line}: path={listed!r} leads outside the corpus folder {root}; audio paths are relative to the "
        "manifest's folder and stay inside it (put the manifest at the corpus's top)"
    )
