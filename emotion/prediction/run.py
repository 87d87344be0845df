"""predict.py's passes: each model over the input's files (whole, in windows, or their speech segments)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from emotion.cpu import available_cores
from emotion.data.corpus import Item, LabelScale
from emotion.data.scan import Problem
from emotion.data.speech import SpeechSettings, UnreadableAudioError, speech_settings_problems, speech_spans
from emotion.exported import load_predictors
from emotion.features.dataset import Segment, windows
from emotion.prediction.inputs import InputError, readable_inputs
from emotion.prediction.outputs import (
    OutputFiles,
    Stretches,
    Summary,
    write_description,
    write_embeddings,
    write_files,
    write_plots,
    write_skipped,
    write_stretches,
    written_already,
)
from emotion.prediction.store import PartialStore
from emotion.settings import PredictSettings
from emotion.trained import TrainedModel
from emotion.training.inference import group_means, item_means

log = logging.getLogger(__name__)


def run_predict(cfg: DictConfig) -> OutputFiles:
    """Predict the recordings `cfg.input` names with the models `cfg.ckpt` names into `cfg.output`."""
    settings = PredictSettings.of(cfg.predict)
    out = OutputFiles(Path(cfg.output).expanduser())
    problems = _setting_problems(settings, cfg.output)
    if problems:
        raise InputError("\n".join(problems))
    out.table.parent.mkdir(parents=True, exist_ok=True)
    models = load_predictors(cfg.ckpt, settings.device, settings.precision)
    _check_models(models, settings)
    scale = models[0].output_scale(settings.label_scale)  # before any work: a corpus it never learned is named now
    min_seconds = max(model.min_seconds for model in models)
    items, seconds, unreadable = _readable(cfg.input, min_seconds, out)
    run = _run_settings(settings, models, items)
    shown = {**run, "label_scale": settings.label_scale, "plot": settings.plot}  # what the outputs also depend on
    if settings.resume and written_already(out, shown):
        log.info("predict.resume=true: %s describes this run, finished; nothing to do", out.description)
        return out
    out.description.unlink(missing_ok=True)  # it would describe an earlier run's outputs until this one's are written
    store = PartialStore(out.partial, run)
    if settings.resume:
        store.open()
    else:
        store.clear()

    speech = None
    if settings.segment == "vad":
        speech, undecodable = _find_speech(items, settings, min_seconds, store)
        unreadable += undecodable
        kept = [index for index, spans in enumerate(speech) if spans is not None]
        items, seconds, speech = ([values[index] for index in kept] for values in (items, seconds, speech))
    predicted = _predict(models, items, seconds, speech, settings, scale, cfg.paths.cache_dir, store)
    _write_outputs(out, models[0].dimensions, scale, items, seconds, predicted, settings)
    write_skipped(out.skipped, unreadable)
    write_description(out, _description(cfg.input, settings, models, scale, out, shown, len(unreadable), speech))
    store.discard()
    log.info("predicted %d files with %d model(s): %s", len(items), _members(models), out.table)
    return out


def _readable(source, min_seconds: float, out: OutputFiles) -> tuple[list[Item], list[float], list[Problem]]:
    """The input's files that can be predicted and their durations, and why the others cannot."""
    items, seconds, unreadable = readable_inputs(source, min_seconds)
    if unreadable:
        total = len(items) + len(unreadable)
        log.warning(
            "%d of %d files cannot be predicted; they will be listed in %s", len(unreadable), total, out.skipped
        )
    if not items:
        out.description.unlink(missing_ok=True)  # the table beside it is no longer this output's
        write_skipped(out.skipped, unreadable)
        raise InputError(
            f"input={str(source)!r}: none of its {len(unreadable)} files can be predicted; see {out.skipped}"
        )
    return items, seconds, unreadable


@dataclass(frozen=True)
class Predicted:
    """What the models said of the input's files: each file's summary, and, as asked, its windows' or its
    speech segments' (with the speech found in each file), and each model's pooled vectors per file."""

    files: Summary
    windows: Stretches | None = None
    segments: Stretches | None = None
    speech: list[list[tuple[float, float]]] | None = None
    embeddings: list[np.ndarray] | None = None

    @property
    def stretches(self) -> Stretches | None:
        """What a timeline draws within each file."""
        return self.segments or self.windows


def _predict(
    models: list,
    items: list[Item],
    seconds: list[float],
    speech: list[list[tuple[float, float]]] | None,
    settings: PredictSettings,
    scale: LabelScale,
    cache_dir: str,
    store: PartialStore,
) -> Predicted:
    """Each model over the units of prediction: the files whole (and their windows), or their `speech` segments."""
    min_seconds = max(model.min_seconds for model in models)
    units, unit_seconds, owners = _speech_clips(items, speech) if speech is not None else (items, seconds, None)
    spans = _windows(models[0], seconds, min_seconds, settings) if settings.window_seconds else None
    kind = "segments" if speech is not None else "files"
    results = [
        _predict_with(model, f"m{index}-{kind}", units, unit_seconds, spans, settings, cache_dir, store)
        for index, model in enumerate(models)
        if units  # none when no file holds speech
    ]
    members = (
        np.concatenate([result.per_unit for result in results], axis=1)
        if results
        else np.zeros((0, _members(models), len(models[0].dimensions)))
    )
    embeddings = [result.embeddings for result in results] if settings.embeddings else None
    if speech is not None:
        per_file = group_means(members, owners, np.asarray(unit_seconds, dtype=float), len(items))
        segments = Stretches(
            files=list(owners),
            starts_s=[clip.span[0] for clip in units],
            ends_s=[clip.span[1] for clip in units],
            summary=Summary.of(members, scale),
        )
        return Predicted(Summary.of(per_file, scale), segments=segments, speech=speech)
    windowed = None
    if spans is not None:
        window_members = np.concatenate([result.windows for result in results], axis=1)
        windowed = _window_stretches(spans, seconds, models[0].sample_rate, Summary.of(window_members, scale))
    return Predicted(Summary.of(members, scale), windows=windowed, embeddings=embeddings)


def _write_outputs(
    out: OutputFiles,
    dims: tuple[str, ...],
    scale: LabelScale,
    items: list[Item],
    seconds: list[float],
    predicted: Predicted,
    settings: PredictSettings,
) -> None:
    """The tables and pictures asked for; those of an earlier run to the same output that this run does not
    write are removed, so that what lies beside the CSV is always its own."""
    names = [item.id for item in items]
    write_files(out.table, names, seconds, dims, predicted.files, predicted.speech)
    for path, stretches in ((out.segments, predicted.segments), (out.windows, predicted.windows)):
        if stretches is None:
            path.unlink(missing_ok=True)
        else:
            write_stretches(path, names, dims, stretches)
    if predicted.embeddings is None:
        out.embeddings.unlink(missing_ok=True)
    else:
        write_embeddings(out.embeddings, predicted.embeddings)
    shutil.rmtree(out.plots, ignore_errors=True)
    if settings.plot:
        write_plots(out.plots, names, seconds, dims, scale, predicted.files, predicted.stretches, predicted.speech)


def _setting_problems(settings: PredictSettings, output: str) -> list[str]:
    """Every mistake in predict.py's settings, found before a model is loaded."""
    problems = []
    if Path(str(output)).suffix.lower() != ".csv":
        problems.append(f"output={output!r}: the output is a CSV file; name it <something>.csv")
    if settings.segment == "vad":
        problems += speech_settings_problems(_speech_settings(settings, 0.0))
        if settings.window_seconds:
            problems.append(
                "predict.window_seconds applies to predict.segment=file: with vad, speech segments are the stretches "
                "predicted (predict.max_segment_seconds bounds them); drop one of the two"
            )
        if settings.embeddings:
            problems.append(
                "predict.embeddings=true gives each whole file's pooled vector: use it with predict.segment=file"
            )
    return problems


def _check_models(models: list, settings: PredictSettings) -> None:
    if settings.embeddings and not all(isinstance(model, TrainedModel) for model in models):
        raise InputError(
            "predict.embeddings=true needs the PyTorch checkpoints: an exported model gives predictions only"
        )
    if settings.embeddings and len({model.embedding_size for model in models}) > 1:
        sizes = ", ".join(f"{model.path}: {model.embedding_size}" for model in models)
        raise InputError(f"predict.embeddings=true, but the models' pooled vectors differ in length ({sizes})")
    min_seconds = max(model.min_seconds for model in models)
    if settings.segment == "vad" and 2 * min_seconds > settings.max_segment_seconds:
        raise InputError(
            f"predict.max_segment_seconds={settings.max_segment_seconds}: the model needs at least {min_seconds} s "
            "(its data.min_seconds), and longer speech is cut into parts of at least half the maximum; give a "
            f"maximum of at least {2 * min_seconds} s"
        )


def _members(models: list) -> int:
    return sum(model.members for model in models)


def _speech_settings(settings: PredictSettings, min_seconds: float) -> SpeechSettings:
    """The detector's settings; segments are never shorter than the model's shortest input (`min_seconds`)."""
    return SpeechSettings(
        threshold=settings.vad_threshold,
        min_segment_seconds=max(settings.min_segment_seconds, min_seconds),
        max_segment_seconds=settings.max_segment_seconds,
        merge_gap_seconds=settings.merge_gap_seconds,
    )


def _find_speech(
    items: list[Item], settings: PredictSettings, min_seconds: float, store: PartialStore
) -> tuple[list[list[tuple[float, float]] | None], list[Problem]]:
    """Each file's speech spans (start_s, end_s), None for a file that cannot be decoded; and why those
    cannot. Each file's are saved as found, so a resumed run goes on from the first file not yet searched."""
    detector = _speech_settings(settings, min_seconds)
    for index, item in enumerate(items):
        if index in store.speech:
            continue
        try:
            found = [[span.start_s, span.end_s] for span in speech_spans(item.path, detector)]
        except UnreadableAudioError as err:
            found = str(err)
        store.save_speech(index, found)
        if isinstance(found, str):
            log.warning("file %d of %d cannot be decoded, left out: %s", index + 1, len(items), found)
            continue
        seconds = sum(end - start for start, end in found)
        log.info(
            "speech in file %d of %d: %d segments, %.1f s (%s)", index + 1, len(items), len(found), seconds, item.id
        )
    speech, problems = [], []
    for index, item in enumerate(items):
        found = store.speech[index]
        if isinstance(found, str):  # why it could not be decoded
            speech.append(None)
            problems.append(Problem(item, found))
        else:
            speech.append([(start, end) for start, end in found])
    return speech, problems


def _speech_clips(items: list[Item], speech: list[list[tuple[float, float]]]):
    """Each speech segment as an item of its own (a clip of its file, analysed as an utterance is in
    training), its duration, and the index of its file."""
    clips, seconds, owners = [], [], []
    for index, (item, spans) in enumerate(zip(items, speech, strict=True)):
        for start, end in spans:
            clips.append(replace(item, span=(start, end)))
            seconds.append(end - start)
            owners.append(index)
    return clips, seconds, np.array(owners, dtype=int)


def _windows(model, seconds: list[float], min_seconds: float, settings: PredictSettings) -> list[Segment]:
    n_samples = [round(s * model.sample_rate) for s in seconds]
    hop_seconds = settings.window_hop_seconds or settings.window_seconds
    return windows(n_samples, settings.window_seconds, hop_seconds, min_seconds, model.sample_rate, model.grid.hop)


def _window_stretches(spans: list[Segment], seconds: list[float], rate: int, summary: Summary) -> Stretches:
    return Stretches(
        files=[span.item for span in spans],
        starts_s=[span.start / rate for span in spans],
        ends_s=[min(seconds[span.item], (span.start + span.length) / rate) for span in spans],
        summary=summary,
    )


@dataclass(frozen=True)
class ModelResults:
    """One model's predictions ([0, 1] scale, (rows, its members, dimensions)) per unit (file or speech
    segment) and, as asked, per window, and pooled vectors per file."""

    per_unit: np.ndarray
    windows: np.ndarray | None
    embeddings: np.ndarray | None


def _predict_with(
    model,
    kind: str,
    units: list[Item],
    seconds: list[float],
    spans: list[Segment] | None,
    settings: PredictSettings,
    cache_dir: str,
    store: PartialStore,
) -> ModelResults:
    acoustic = model.acoustic_cache(cache_dir).ensure(
        [unit.audio for unit in units], settings.acoustic_workers or available_cores()
    )
    normalise = model.normalisation if settings.normalise == "auto" else settings.normalise
    if normalise == "speaker":
        log.info(
            "acoustic features standardised per speaker: speakers are the manifest's speaker column, or each "
            "file's folder under the input folder"
        )
    own = model.standardise_inputs(normalise, units, acoustic)
    dataset = model.dataset(units, seconds, [acoustic[unit.audio] for unit in units], own=own)
    predictions, vectors = _outputs_in_blocks(model, dataset, kind, settings, store, settings.embeddings)
    windowed = None
    if spans is not None:
        windowed = _outputs_in_blocks(model, dataset.with_segments(spans), f"{kind}-windows", settings, store)[0]
    return ModelResults(
        per_unit=item_means(predictions, dataset),
        windows=windowed,
        embeddings=item_means(vectors, dataset) if settings.embeddings else None,
    )


def _outputs_in_blocks(model, dataset, kind: str, settings, store: PartialStore, embeddings: bool = False):
    """Outputs (segments, members, dimensions) of every segment of `dataset`, computed in blocks of
    `predict.save_every` segments, each saved to `store`; blocks found there (a resumed run) are not computed
    again. Longest first, as evaluation batches: a block's batches hold segments of similar lengths."""
    done = store.done(kind)
    todo = [int(i) for i in np.argsort(dataset.lengths, kind="stable")[::-1] if i not in done]
    for start in range(0, len(todo), settings.save_every):
        block = todo[start : start + settings.save_every]
        part = dataset.with_segments([dataset.segments[i] for i in block])
        if embeddings:
            outputs = model.outputs(part, settings.batch_size, settings.workers, True, settings.progress_bar)
            predictions, vectors = outputs.predictions[:, None, :], outputs.embeddings
        else:
            predictions = model.member_outputs(part, settings.batch_size, settings.workers, settings.progress_bar)
            vectors = None
        store.save(kind, block, predictions, vectors)
        log.info("%s: %d of %d segments predicted", kind, len(dataset) - len(todo) + start + len(block), len(dataset))
    return store.assemble(kind, len(dataset), embeddings)


def _run_settings(settings: PredictSettings, models: list, items: list[Item]) -> dict:
    """What decides a run's results: a resumed run must have the same, or its blocks would not fit."""
    decisive = ["segment", "window_seconds", "window_hop_seconds", "embeddings", "normalise"]
    if settings.segment == "vad":
        decisive += ["min_segment_seconds", "max_segment_seconds", "merge_gap_seconds", "vad_threshold"]
    return {
        # A checkpoint rewritten in place (a job trained on) is another model.
        "checkpoints": [[str(m.path), m.path.stat().st_size, m.path.stat().st_mtime_ns] for m in models],
        "precision": models[0].precision,
        # A recording replaced at the same path is another recording.
        "files": _digest(f"{item.id}\t{item.path}\t{_stat(item.path)}" for item in items),
        # Under speaker normalisation each speaker's files are standardised with that speaker's statistics.
        "speakers": _digest(item.speaker for item in items),
        **{key: getattr(settings, key) for key in decisive},
    }


def _stat(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}\t{stat.st_mtime_ns}"


def _digest(lines) -> str:
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _description(
    source,
    settings: PredictSettings,
    models: list,
    scale: LabelScale,
    out: OutputFiles,
    run: dict,
    n_skipped: int,
    speech: list[list[tuple[float, float]]] | None,
) -> dict:
    """`<name>.json`: the models and settings behind the tables, named once rather than on every row; `run`
    is what predict.resume compares."""
    n_members = _members(models)
    outputs = {"files": out.table, "skipped": out.skipped}
    outputs |= {"segments": out.segments} if speech is not None else {}
    outputs |= {"windows": out.windows} if settings.window_seconds else {}
    outputs |= {"embeddings": out.embeddings} if settings.embeddings else {}
    outputs |= {"plots": out.plots / "index.html"} if settings.plot else {}
    return {
        "models": [model.describe() for model in models],
        "dimensions": list(models[0].dimensions),
        "scale": [scale.low, scale.high],
        "spread": (
            f"<dimension>_std: the standard deviation of the {n_members} models' predictions" if n_members > 1 else None
        ),
        "input": str(source),
        "skipped_files": n_skipped,
        "files_without_speech": None if speech is None else sum(not spans for spans in speech),
        "outputs": {name: str(path.relative_to(out.table.parent)) for name, path in outputs.items()},
        "run": run,
    }
