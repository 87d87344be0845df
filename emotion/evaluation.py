"""evaluate.py: score trained models on any corpus and split, without training.

    python evaluate.py ckpt=<file | job folder | folder of jobs> data=<corpus> [data.fold=… | data.test_set=…]
    python evaluate.py ckpt=… data=<corpus> evaluate.split=all data.fold=null    # every item, no fold

Writes metrics.json (status `evaluated`) and predictions.csv into its own output folder, as a training job
does for its test split, so that the sweep report reads these runs too. Its `data` says how many of the
evaluated speakers the models trained or validated on, compared speaker by speaker: their scores are no test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from emotion.cpu import available_cores
from emotion.data.corpora import Corpus, load_corpus
from emotion.data.corpus import Item
from emotion.data.scan import check_items, scan_items
from emotion.features.encoder_cache import ensure_features
from emotion.features.normalisation import per_speaker_statistics
from emotion.settings import DataSettings, EvaluateSettings
from emotion.trained import TrainedModel, load_models
from emotion.training.devices import autocast, peak_memory, reset_peak_memory
from emotion.training.inference import item_means
from emotion.training.metrics import ccc_scores, format_scores
from emotion.training.outputs import metrics_record, write_predictions
from emotion.training.recipe import SeenSpeakers, seen_speakers

log = logging.getLogger(__name__)


def run_evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    """Score the models `cfg.ckpt` names (their mean, for several) on `cfg.evaluate.split` of `cfg.data`;
    returns the metrics.json record, written with predictions.csv into `out_dir`."""
    settings, data = EvaluateSettings.of(cfg.evaluate), DataSettings.of(cfg.data)
    split = settings.split
    models = load_models(cfg.ckpt, settings.device, settings.precision)
    reset_peak_memory(models[0].device)  # from here, the models loaded: an evaluate sweep shares one process
    corpus = load_corpus(data, whole=split == "all")
    items, durations = _usable_items(corpus, split, data, out_dir, max(model.min_seconds for model in models))
    first = models[0]
    shared = tuple(dim for dim in first.dimensions if dim in corpus.dimensions)
    if not shared:
        raise ValueError(
            f"{corpus.name} is labelled with {', '.join(corpus.dimensions)}; the model predicts "
            f"{', '.join(first.dimensions)}: no dimension to score"
        )
    unscored = sorted(set(first.dimensions) ^ set(corpus.dimensions))
    if unscored:
        log.warning("scored on %s only; %s is in the model or the corpus, not both", ", ".join(shared), unscored)
    what = "the whole corpus" if split == "all" else f"its {split} split"
    seen = [seen_speakers(model.recipe, corpus, items, what, split, data.fold) for model in models]
    reasons = [f"{model.path}: {each.warning}" for model, each in zip(models, seen, strict=True) if each.warning]
    for reason in reasons:
        log.warning("%s", reason)
    scale_note = _scale_note(first, corpus)
    if scale_note["mapped"]:
        log.warning("%s", scale_note["how"])

    cache_dir = cfg.paths.cache_dir
    predictions = np.mean([_predict(model, corpus, items, durations, settings, cache_dir) for model in models], axis=0)
    pred = predictions[:, [first.dimensions.index(dim) for dim in shared]]
    true = np.stack([corpus.scale.normalise(item.labels) for item in items])
    true = true[:, [corpus.dimensions.index(dim) for dim in shared]]
    # CCC is the same on [0, 1] as on either rating scale: both map to it by one affine function.
    scores = ccc_scores(pred, true, shared)
    log.info("%s, %s split (%d items): CCC %s", corpus.name, split, len(items), format_scores(scores))
    write_predictions(
        out_dir / "predictions.csv", items, corpus.scale.denormalise(true), corpus.scale.denormalise(pred), shared
    )
    fold = None if split == "all" else data.fold  # every item: no fold chose them
    return metrics_record(
        "evaluated",
        fold,
        first.settings.profile,
        test=scores,
        # What the models were kept for in training: evaluated runs are ranked by it too, never by `test`.
        val_best=_mean_validation(models),
        **peak_memory(first.device),
        params={"total": sum(p.numel() for p in first.model.parameters()), "trainable": 0},
        device=str(first.device),
        checkpoints=[str(model.path) for model in models],
        data={
            "name": corpus.name,
            "fold": fold,
            "test_set": data.test_set,
            "split": split,
            "items": len(items),
            "speakers": seen[0].total,
            "seen_speakers": _seen_count(seen),
            "seen_in_training": reasons,
        },
        scale=scale_note,
    )


def _usable_items(corpus: Corpus, split: str, data: DataSettings, out_dir: Path, min_seconds: float):
    """The split's items whose audio and labels can be used, and their durations; the rest stop the run
    (data.on_bad_audio=error) or are left out and listed in skipped_items.csv."""
    items = corpus.splits.all if split == "all" else getattr(corpus.splits, split)
    if not items:
        raise ValueError(f"{corpus.name}, data.fold={data.fold}: its {split} split is empty")
    durations, _ = check_items(items, corpus, min_seconds, data.on_bad_audio, out_dir)
    return [item for item in items if item.id in durations], durations


def _predict(
    model: TrainedModel,
    corpus: Corpus,
    items: list[Item],
    durations: dict[str, float],
    settings: EvaluateSettings,
    cache_dir: str,
) -> np.ndarray:
    """One model's predictions per item ([0, 1] scale), through the path its training's test took."""
    normalised = _speakers_items(corpus, items, model.min_seconds) if model.speaker_norm else items
    cache = model.acoustic_cache(cache_dir)
    acoustic = cache.ensure([item.path for item in normalised], settings.acoustic_workers or available_cores())
    dataset = model.dataset(
        items,
        [durations[item.id] for item in items],
        [acoustic[item.path] for item in items],
        speakers=per_speaker_statistics(normalised, acoustic) if model.speaker_norm else None,
    )
    encoder = model.encoder_settings
    if encoder.freeze and encoder.feature_cache:  # the states training cached, or cached for next time
        dataset.features = ensure_features(
            model.model.encoder,
            {dataset.piece(i): n for i, n in enumerate(dataset.segment_samples)},
            cache_dir,
            model.sample_rate,
            device=model.device,
            autocast=autocast(model.device, model.precision),
            batch_size=settings.batch_size,
            workers=settings.workers,
            max_gb=encoder.feature_cache_max_gb,
            show_bar=settings.progress_bar,
        )
    outputs = model.outputs(dataset, settings.batch_size, settings.workers, show_bar=settings.progress_bar)
    return item_means(outputs.predictions, dataset)


def _speakers_items(corpus: Corpus, items: list[Item], min_seconds: float) -> list[Item]:
    """Under speaker normalisation each speaker's statistics come from all their usable items in the corpus,
    as in training, whatever the split evaluated."""
    speakers = {item.speaker for item in items}
    theirs = [item for item in corpus.splits.all if item.speaker in speakers]
    usable, _ = scan_items(theirs, corpus.dimensions, min_seconds)
    return [item for item in theirs if item.id in usable]


def _mean_validation(models: list[TrainedModel]) -> dict | None:
    """The models' validation scores in training (best.pt's), averaged; None unless every model has them."""
    scores = [model.validation for model in models]
    if not all(scores):
        return None
    mean = {}
    for key in scores[0]:
        values = [score[key] for score in scores]
        mean[key] = None if None in values else float(np.mean(values))
    return mean


def _seen_count(seen: list[SeenSpeakers]) -> int | None:
    """How many evaluated speakers any of the models trained or validated on (an ensemble's models may each
    know others); None when a checkpoint does not record its speakers."""
    if any(each.keys is None for each in seen):
        return None
    return len(set().union(*(each.keys for each in seen)))


def _scale_note(model: TrainedModel, corpus: Corpus) -> dict:
    trained, target = list(model.recipe["label_scale"]), [float(corpus.scale.low), float(corpus.scale.high)]
    mapped = trained != target
    how = (
        f"the model predicts on {model.recipe['corpus']}'s {trained[0]:g}–{trained[1]:g} scale and {corpus.name} "
        f"rates on {target[0]:g}–{target[1]:g}: predictions are mapped through the [0, 1] training scale"
        if mapped
        else f"model and corpus rate on {target[0]:g}–{target[1]:g}"
    )
    return {"model": trained, "data": target, "mapped": mapped, "how": how}
