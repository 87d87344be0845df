"""The recordings predict.py's input names, and which of them can be predicted."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import soundfile as sf

from emotion.data.corpus import Item
from emotion.data.manifest import audio_path
from emotion.data.scan import Problem, scan_items

log = logging.getLogger(__name__)

# The formats libsndfile reads, as file extensions: what a folder of recordings is searched for.
AUDIO_EXTENSIONS = {f".{name.lower()}" for name in sf.available_formats()} | {".aif", ".oga", ".opus"}


class InputError(ValueError):
    pass


def read_inputs(source: str | Path) -> list[Item]:
    """The recordings `source` names: one audio file, every audio file under a folder (sorted), or the rows of
    a CSV manifest (a `path` column, relative to the manifest's folder; optionally `speaker`). A manifest's
    paths leading outside its folder are unusable, as in training: listed with why, never read."""
    source = Path(str(source)).expanduser()
    if source.suffix.lower() == ".csv" and source.is_file():
        return _manifest_items(source)
    if source.is_dir():
        paths = sorted(path for path in source.rglob("*") if path.suffix.lower() in AUDIO_EXTENSIONS)
        if not paths:
            raise InputError(f"input={str(source)!r}: no audio files in this folder or below it")
        # A folder's speakers, for predict.normalise=speaker, are its subfolders: <input>/<speaker>/<file>.
        return [_item(path, str(path), str(path.parent.relative_to(source))) for path in paths]
    if source.is_file():
        return [_item(source, str(source))]
    raise InputError(f"input={str(source)!r}: no such file or folder; give an audio file, a folder or a CSV manifest")


def _manifest_items(manifest: Path) -> list[Item]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or ()):
            raise InputError(f"input={str(manifest)!r}: a manifest needs a path column (it has {reader.fieldnames})")
        rows = list(reader)
    items = []
    for line, row in enumerate(rows, start=2):
        path, outside = audio_path(manifest, row["path"], line)
        items.append(_item(path, row["path"], row.get("speaker") or "", outside))
    return items


def _item(path: Path, shown: str, speaker: str = "", unusable: str | None = None) -> Item:
    return Item(id=shown, path=path, speaker=speaker, labels=(), unusable=unusable)


def readable_inputs(source, min_seconds: float) -> tuple[list[Item], list[float], list[Problem]]:
    """The input's files that can be predicted and their durations, and why the others cannot."""
    items = read_inputs(source)
    durations, problems = scan_items(items, lambda item: (), min_seconds)  # unlabelled
    readable = [item for item in items if item.id in durations]
    return readable, [durations[item.id] for item in readable], problems
