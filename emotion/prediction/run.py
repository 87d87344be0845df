"""predict.py: A/V/D of new recordings with trained models, written to a CSV.

    python predict.py ckpt=<file | job folder | folder of jobs> input=<audio file | folder | CSV> output=<csv>

Beside the output (`preds.csv`): `preds.skipped.csv` (files that could not be predicted, and why),
`preds.windows.csv` (with predict.window_seconds), `preds.embeddings.npy` (with predict.embeddings). Every
file is written whole or not at all. Work in progress is kept in `preds.partial/`, in blocks, so that
predict.resume=true continues an interrupted run; it is removed once the outputs are written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import DictConfig

from emotion.cpu import available_cores
from emotion.data.corpus import Item, LabelScale
from emotion.data.manifest import audio_path
from emotion.data.scan import Problem, scan_items
from emotion.features.dataset import Segment, windows
from emotion.files import write_atomically
from emotion.settings import PredictSettings
from emotion.trained import TrainedModel, load_models
from emotion.training.inference import item_means

log = logging.getLogger(__name__)

# The formats libsndfile reads, as file extensions: what a folder of recordings is searched for.
AUDIO_EXTENSIONS = {f".{name.lower()}" for name in sf.available_formats()} | {".aif", ".oga", ".opus"}


class InputError(ValueError):
    pass


@dataclass(frozen=True)
class OutputFiles:
    """Where predict.py writes, all beside `table`."""

    table: Path

    def beside(self, suffix: str) -> Path:
        return self.table.with_name(self.table.stem + suffix)

    @property
    def skipped(self) -> Path:
        return self.beside(".skipped.csv")

    @property
    def windows(self) -> Path:
        return self.beside(".windows.csv")

    @property
    def embeddings(self) -> Path:
        return self.beside(".embeddings.npy")

    @property
    def partial(self) -> Path:
        return self.beside(".partial")


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


def run_predict(cfg: DictConfig) -> OutputFiles:
    """Predict the recordings `cfg.input` names with the models `cfg.ckpt` names into `cfg.output`."""
    settings = PredictSettings.of(cfg.predict)
    out = OutputFiles(Path(cfg.output).expanduser())
    if out.table.suffix.lower() != ".csv":
        raise InputError(f"output={cfg.output!r}: the output is a CSV file; name it <something>.csv")
    out.table.parent.mkdir(parents=True, exist_ok=True)
    models = load_models(cfg.ckpt, settings.device, settings.precision)
    if settings.embeddings and len({model.embedding_size for model in models}) > 1:
        sizes = ", ".join(f"{model.path}: {model.embedding_size}" for model in models)
        raise InputError(f"predict.embeddings=true, but the models' pooled vectors differ in length ({sizes})")
    scale = models[0].output_scale(settings.label_scale)  # before any work: a corpus it never learned is named now
    min_seconds = max(model.min_seconds for model in models)
    items, seconds, problems = _readable(cfg.input, min_seconds, out)
    store = PartialStore(out.partial, _run_settings(settings, models, items))
    if settings.resume:
        store.open()
    else:
        store.clear()

    spans = None
    if settings.window_seconds:
        rate, grid_hop = models[0].sample_rate, models[0].model.encoder.grid.hop
        n_samples = [round(s * rate) for s in seconds]
        hop_seconds = settings.window_hop_seconds or settings.window_seconds
        spans = windows(n_samples, settings.window_seconds, hop_seconds, min_seconds, rate, grid_hop)
    results = []
    for index, model in enumerate(models):
        log.info("model %d of %d: %s", index + 1, len(models), model.path)
        results.append(_predict_with(model, f"m{index}", items, seconds, spans, settings, cfg.paths.cache_dir, store))

    _write_outputs(out, models, scale, items, seconds, spans, results)
    _write_skipped(out, problems)
    store.discard()
    log.info("predicted %d files with %d model(s): %s", len(items), len(models), out.table)
    return out


def _readable(source, min_seconds: float, out: OutputFiles) -> tuple[list[Item], list[float], list[Problem]]:
    """The input's files that can be predicted and their durations, and why the others cannot."""
    items = read_inputs(source)
    durations, problems = scan_items(items, lambda item: (), min_seconds)  # unlabelled
    if problems:
        log.warning(
            "%d of %d files cannot be predicted; they will be listed in %s", len(problems), len(items), out.skipped
        )
    readable = [item for item in items if item.id in durations]
    if not readable:
        _write_skipped(out, problems)
        raise InputError(f"input={str(source)!r}: none of its {len(items)} files can be predicted; see {out.skipped}")
    return readable, [durations[item.id] for item in readable], problems


def _write_skipped(out: OutputFiles, problems: list[Problem]) -> None:
    _write_csv(out.skipped, ["path", "reason"], [[problem.item.id, problem.reason] for problem in problems])


@dataclass(frozen=True)
class ModelResults:
    """One model's predictions ([0, 1] scale) per file and, as asked, per window, and pooled vectors per file."""

    per_file: np.ndarray
    windows: np.ndarray | None
    embeddings: np.ndarray | None


def _predict_with(
    model: TrainedModel,
    name: str,
    items: list[Item],
    seconds: list[float],
    spans: list[Segment] | None,
    settings: PredictSettings,
    cache_dir: str,
    store: PartialStore,
) -> ModelResults:
    acoustic = model.acoustic_cache(cache_dir).ensure(
        [item.path for item in items], settings.acoustic_workers or available_cores()
    )
    normalise = model.normalisation if settings.normalise == "auto" else settings.normalise
    if normalise == "speaker":
        log.info(
            "acoustic features standardised per speaker: speakers are the manifest's speaker column, or each "
            "file's folder under the input folder"
        )
    own = model.standardise_inputs(normalise, items, acoustic)
    dataset = model.dataset(items, seconds, [acoustic[item.path] for item in items], own=own)
    predictions, vectors = _outputs_in_blocks(model, dataset, f"{name}-files", settings, store, settings.embeddings)
    windowed = None
    if spans is not None:
        windowed = _outputs_in_blocks(model, dataset.with_segments(spans), f"{name}-windows", settings, store)[0]
    return ModelResults(
        per_file=item_means(predictions, dataset),
        windows=windowed,
        embeddings=item_means(vectors, dataset) if settings.embeddings else None,
    )


def _outputs_in_blocks(model, dataset, kind: str, settings, store: PartialStore, embeddings: bool = False):
    """Outputs of every segment of `dataset`, computed in blocks of `predict.save_every` segments, each saved
    to `store`; blocks found there (a resumed run) are not computed again. Longest first, as evaluation
    batches: a block's batches hold segments of similar lengths."""
    done = store.done(kind)
    todo = [int(i) for i in np.argsort(dataset.lengths, kind="stable")[::-1] if i not in done]
    for start in range(0, len(todo), settings.save_every):
        block = todo[start : start + settings.save_every]
        part = dataset.with_segments([dataset.segments[i] for i in block])
        outputs = model.outputs(part, settings.batch_size, settings.workers, embeddings, settings.progress_bar)
        store.save(kind, block, outputs.predictions, outputs.embeddings)
        log.info("%s: %d of %d segments predicted", kind, len(dataset) - len(todo) + start + len(block), len(dataset))
    return store.assemble(kind, len(dataset), embeddings)


def _write_outputs(
    out: OutputFiles,
    models: list[TrainedModel],
    scale: LabelScale,
    items: list[Item],
    seconds: list[float],
    spans: list[Segment] | None,
    results: list[ModelResults],
) -> None:
    """The CSV of files, and the windows' CSV and the embeddings as asked; an ensemble's mean prediction, on
    `scale`."""
    dims, rate = models[0].dimensions, models[0].sample_rate
    checkpoints = ";".join(str(model.path) for model in models)
    per_file = scale.denormalise(np.mean([result.per_file for result in results], axis=0))
    rows = [
        [item.id, f"{duration:.3f}", *(f"{value:.4f}" for value in values), checkpoints]
        for item, duration, values in zip(items, seconds, per_file, strict=True)
    ]
    _write_csv(out.table, ["path", "duration_s", *dims, "checkpoints"], rows)
    if spans is not None:
        predictions = scale.denormalise(np.mean([result.windows for result in results], axis=0))
        rows = [
            [
                items[span.item].id,
                f"{span.start / rate:.3f}",
                f"{min(seconds[span.item], (span.start + span.length) / rate):.3f}",
            ]
            + [f"{value:.4f}" for value in values]
            for span, values in zip(spans, predictions, strict=True)
        ]
        _write_csv(out.windows, ["path", "start_s", "end_s", *dims], rows)
    else:
        out.windows.unlink(missing_ok=True)  # an earlier run's windows would not be this run's
    if results[0].embeddings is not None:
        # One model: (files, features); an ensemble: (files, models, features), as its models' spaces differ.
        vectors = [result.embeddings for result in results]
        array = vectors[0] if len(vectors) == 1 else np.stack(vectors, axis=1)
        buffer = io.BytesIO()
        np.save(buffer, array.astype(np.float32))
        write_atomically(out.embeddings, buffer.getvalue())
    else:
        out.embeddings.unlink(missing_ok=True)  # an earlier run's rows would not be this CSV's


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def _run_settings(settings: PredictSettings, models: list[TrainedModel], items: list[Item]) -> dict:
    """What decides a run's results: a resumed run must have the same, or its blocks would not fit."""
    return {
        # A checkpoint rewritten in place (a job trained on) is another model.
        "checkpoints": [[str(m.path), m.path.stat().st_size, m.path.stat().st_mtime_ns] for m in models],
        "precision": models[0].precision,
        "files": _digest(f"{item.id}\t{item.path}" for item in items),
        # Under speaker normalisation each speaker's files are standardised with that speaker's statistics.
        "speakers": _digest(item.speaker for item in items),
        **{key: getattr(settings, key) for key in ("window_seconds", "window_hop_seconds", "embeddings", "normalise")},
    }


def _digest(lines) -> str:
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


class PartialStore:
    """Blocks of segment outputs of an unfinished run, under `root`, with the settings that made them."""

    def __init__(self, root: Path, settings: dict):
        self.root, self.settings = root, settings
        self.blocks: dict[str, list[dict]] = {}

    def clear(self) -> None:
        """Start over: an earlier run's unfinished work is removed."""
        if self.root.exists():
            log.info("removing %s, the unfinished work of an earlier run (predict.resume=true continues it)", self.root)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.blocks = {}

    def open(self) -> None:
        """Read what an interrupted run saved; a run with other settings is refused."""
        settings_file = self.root / "settings.json"
        if not settings_file.is_file():
            log.info("predict.resume=true: no unfinished run in %s; starting from the beginning", self.root)
            return
        saved = json.loads(settings_file.read_text())
        if saved != self.settings:
            changed = sorted(key for key in {**saved, **self.settings} if saved.get(key) != self.settings.get(key))
            raise InputError(
                f"predict.resume=true, but {self.root} was written with other {', '.join(changed)} "
                "(checkpoints, the input's files or their speakers, or windows and embeddings settings); run without "
                "predict.resume=true to start over"
            )
        for block in sorted(self.root.glob("*.npz")):
            with np.load(block) as data:
                kind = block.name.rsplit("-", 1)[0]
                self.blocks.setdefault(kind, []).append({name: data[name] for name in data.files})
        log.info("predict.resume=true: %d blocks done in %s", sum(map(len, self.blocks.values())), self.root)

    def done(self, kind: str) -> set[int]:
        return {int(i) for block in self.blocks.get(kind, []) for i in block["indices"]}

    def save(self, kind: str, indices: list[int], predictions: np.ndarray, embeddings: np.ndarray | None) -> None:
        settings_file = self.root / "settings.json"
        if not settings_file.is_file():  # with the first block
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(settings_file, json.dumps(self.settings, indent=2))
        block = {"indices": np.asarray(indices), "predictions": predictions}
        if embeddings is not None:
            block["embeddings"] = embeddings
        buffer = io.BytesIO()
        np.savez(buffer, **block)
        write_atomically(self.root / f"{kind}-{len(self.blocks.get(kind, [])):06d}.npz", buffer.getvalue())
        self.blocks.setdefault(kind, []).append(block)

    def assemble(self, kind: str, n_segments: int, embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Every segment's outputs, in segment order."""
        blocks = self.blocks.get(kind, [])
        predictions = np.zeros((n_segments, blocks[0]["predictions"].shape[1]))
        vectors = np.zeros((n_segments, blocks[0]["embeddings"].shape[1]), np.float32) if embeddings else None
        for block in blocks:
            predictions[block["indices"]] = block["predictions"]
            if embeddings:
                vectors[block["indices"]] = block["embeddings"]
        return predictions, vectors
