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
from emotion.data.augment import condition_problems, corrupted_items
from emotion.data.corpora import Corpus, load_corpus
from emotion.data.corpus import Item
from emotion.data.scan import check_items, scan_items
from emotion.features.encoder_cache import ensure_features
from emotion.features.normalisation import resolved_normalisation
from emotion.settings import DataSettings, EvaluateSettings
from emotion.sweeps.breakdown import plot_snr_curves
from emotion.trained import TrainedModel, load_models
from emotion.training.devices import autocast, peak_memory, reset_peak_memory
from emotion.training.inference import item_means
from emotion.training.metrics import ccc_scores, format_scores, split_scores
from emotion.training.outputs import metrics_record, write_predictions
from emotion.training.recipe import SeenSpeakers, seen_speakers
from emotion.uncertainty import spread_ranking

log = logging.getLogger(__name__)


def run_evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    """Score the models `cfg.ckpt` names (their mean, for several) on `cfg.evaluate.split` of `cfg.data`;
    returns the metrics.json record, written with predictions.csv into `out_dir`."""
    settings, data = EvaluateSettings.of(cfg.evaluate), DataSettings.of(cfg.data)
    problems = condition_problems(settings.conditions)
    if problems:
        raise ValueError("\n".join(problems))
    models = load_models(cfg.ckpt, settings.device, settings.precision)
    reset_peak_memory(models[0].device)  # from here, the models loaded: an evaluate sweep shares one process
    return evaluate_models(models, data, settings, cfg.paths.cache_dir, out_dir)


def evaluate_models(
    models: list[TrainedModel], data: DataSettings, settings: EvaluateSettings, cache_dir: str, out_dir: Path
) -> dict:
    """Score `models` (their mean) on `settings.split` of the corpus `data` configures, under each of
    `settings.conditions`; returns the metrics.json record, written with predictions.csv into `out_dir`."""
    split = settings.split
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

    true = corpus.labels(items)[:, [corpus.dimensions.index(dim) for dim in shared]]
    by_condition, by_corpus, uncertainty = {}, {}, None
    columns = [first.dimensions.index(dim) for dim in shared]
    for condition in settings.conditions:
        # (items, models, dimensions): each model's predictions, whose mean is scored and whose spread is ranked.
        members = np.stack(
            [_predict(model, corpus, items, durations, settings, cache_dir, condition) for model in models], axis=1
        )[:, :, columns]
        pred = members.mean(axis=1)
        # CCC is the same on [0, 1] as on either rating scale: both map to it by one affine function.
        by_condition[condition], by_corpus[condition] = _scores(corpus, items, pred, true, shared)
        log.info(
            "%s, %s split (%d items), %s: CCC %s",
            corpus.name,
            split,
            len(items),
            condition,
            format_scores(by_condition[condition]),
        )
        name = "predictions.csv" if condition == settings.conditions[0] else f"predictions.{condition}.csv"
        write_predictions(
            out_dir / name, items, corpus.on_own_scales(items, true), corpus.on_own_scales(items, pred), shared, corpus
        )
        if condition == settings.conditions[0] and len(models) > 1:
            uncertainty = spread_ranking(members, true, shared)
            log.info("%s", _ranking_line(uncertainty))
    scores = by_condition[settings.conditions[0]]
    breakdowns = {"uncertainty": uncertainty} if len(models) > 1 else {}
    if by_corpus[settings.conditions[0]] is not None:  # several corpora: each one's, as training reports them
        breakdowns["by_corpus"] = {name: {"test": scores} for name, scores in by_corpus[settings.conditions[0]].items()}
    if len(by_condition) > 1:
        breakdowns["conditions"] = by_condition
        plot_snr_curves([(corpus.name, by_condition)], out_dir / "robustness.png", f"test CCC, {split} split")
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
            # Whose statistics standardised the evaluated audio's acoustic features, and what was asked.
            "normalise": evaluated_normalisation(settings.normalise, first, corpus),
            "normalise_asked": settings.normalise,
            "items": len(items),
            "speakers": seen[0].total,
            "seen_speakers": _seen_count(seen),
            "seen_in_training": reasons,
        },
        scale=scale_note,
        **breakdowns,
    )


def _ranking_line(uncertainty: dict[str, dict]) -> str:
    """How well the models' spread ranks their mean's errors, per dimension, in one log line."""
    parts = [
        f"{dim} Spearman {each['spearman']:.3f}, CCC {each['ccc_certain']:.3f} certain half / "
        f"{each['ccc_uncertain']:.3f} other half"
        for dim, each in uncertainty.items()
        if each["spearman"] is not None
    ]
    return "spread across models against error: " + ("; ".join(parts) or "too few items to say")


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
    condition: str = "clean",
) -> np.ndarray:
    """One model's predictions per item ([0, 1] scale), through the path its training's test took, its
    acoustic inputs standardised as evaluate.normalise says, the audio heard under `condition`
    (evaluate.conditions). Own statistics (corpus, speaker) come from the audio evaluated, corrupted as it is:
    a model trained with `corpus` took its corpus's from the training split, so its in-corpus scores here
    differ a little from its job's own test."""
    normalise = evaluated_normalisation(settings.normalise, model, corpus)
    normalised = _speakers_items(corpus, items, model.min_seconds) if normalise == "speaker" else items
    if condition != "clean":
        heard = corrupted_items(
            normalised,
            condition,
            settings.condition_seed,
            model.sample_rate,
            cache_dir,
            settings.noise_dir,
            settings.rir_dir,
            workers=settings.acoustic_workers or available_cores(),
        )
        by_id = {item.id: item for item in heard}
        normalised, items = heard, [by_id[item.id] for item in items]
    cache = model.acoustic_cache(cache_dir)
    acoustic = cache.ensure([item.audio for item in normalised], settings.acoustic_workers or available_cores())
    own = model.standardise_inputs(normalise, normalised, acoustic)
    dataset = model.dataset(
        items, [durations[item.id] for item in items], [acoustic[item.audio] for item in items], own=own
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


def _scores(corpus: Corpus, items: list[Item], pred: np.ndarray, true: np.ndarray, shared: tuple[str, ...]):
    """The scores of `shared` dimensions, and each corpus's where `corpus` holds several (split_scores: then the
    overall scores are the corpora's mean, as a multi-corpus job's test is)."""
    if not corpus.parts:
        return ccc_scores(pred, true, shared), None
    columns = [corpus.dimensions.index(dim) for dim in shared]
    full_pred, full_true = (np.full((len(items), len(corpus.dimensions)), np.nan) for _ in range(2))
    full_pred[:, columns], full_true[:, columns] = pred, true
    return split_scores(corpus, items, full_pred, full_true)


def evaluated_normalisation(normalise: str, model: TrainedModel, corpus: Corpus) -> str:
    """evaluate.normalise, with `auto` made a choice (resolved_normalisation): on the corpora the model trained
    on (every one of a multi-corpus `corpus`), as in its training."""
    trained_on_it = all(part.name in model.label_scales for part in corpus.parts or [corpus])
    return resolved_normalisation(normalise, model.normalisation, trained_on_it)


def _speakers_items(corpus: Corpus, items: list[Item], min_seconds: float) -> list[Item]:
    """Under speaker normalisation each speaker's statistics come from all their usable items in the corpus,
    as in training, whatever the split evaluated."""
    speakers = {item.voice for item in items}
    theirs = [item for item in corpus.splits.all if item.voice in speakers]
    usable, _ = scan_items(theirs, corpus.rated, min_seconds)
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
