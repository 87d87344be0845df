"""One training job, top to bottom: `fit` = `prepare` (data, model, caches) → `train` (epochs of training,
validation and checkpoints) → `finish` (the test of the best checkpoint, or the record of a pruned job)."""

from __future__ import annotations

import gc
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from emotion.cpu import CpuBudget, job_budget
from emotion.cpu import apply as apply_budget
from emotion.data.augment import AUGMENTED_ID, augmented_items
from emotion.data.corpora import Corpus, load_corpus
from emotion.data.corpus import Item
from emotion.data.sampler import CorpusDraws
from emotion.data.scan import usable_corpus
from emotion.features.acoustic_cache import AcousticCache, AcousticFiles
from emotion.features.dataset import UtteranceDataset
from emotion.features.encoder_cache import ensure_features
from emotion.features.normalisation import acoustic_statistics, own_statistics
from emotion.logger import Run
from emotion.models.grid import FrameGrid
from emotion.models.model import MambaEMA, count_parameters
from emotion.selection import score_key
from emotion.settings import DataSettings, JobSettings, ResumeMode
from emotion.signals import GracefulStop
from emotion.training.checkpoints import load_checkpoint, load_latest, restore_rng, rng_state, save_checkpoint
from emotion.training.devices import autocast, peak_memory, reset_peak_memory, resolve_device, resolve_precision
from emotion.training.inference import batch_loader, predict
from emotion.training.metrics import ccc_loss, format_scores, split_scores
from emotion.training.optim import Optimisation
from emotion.training.outputs import metrics_record, write_history, write_predictions
from emotion.training.preflight import BatchCuts, Preflight
from emotion.training.progress import Progress
from emotion.training.recipe import initialise_from, model_recipe, new_model

log = logging.getLogger(__name__)


def fit(
    settings: JobSettings,
    out_dir: Path,
    run: Run,
    stop: GracefulStop | None = None,
    budget: CpuBudget | None = None,
    prune: Pruning | None = None,
) -> dict:
    """Train one job and return its metrics.json record; history, predictions and checkpoints go to `out_dir`.

    `stop` is checked between steps and between the pieces of the long phases before training: once it is
    requested, everything needed to resume is saved and Interrupted raised, from wherever it was. `budget`:
    the CPU budget the job runs in, already applied (by default the settings', applied here). `prune`: the
    sweep's say on ending the job early.
    """
    stop = stop or GracefulStop()
    prune = prune or NeverPruned()
    if budget is None:
        budget = job_budget(settings)
        apply_budget(budget)
    training = prepare(settings, out_dir, stop, budget)
    train(training, out_dir, run, stop, prune)
    return finish(training, out_dir, pruned=prune.why)


def prepare(settings: JobSettings, out_dir: Path, stop: GracefulStop, budget: CpuBudget) -> Training:
    """Data, model and caches: the corpus's usable items, the model (from model.init_from, or resumed from
    last.pt), acoustic features and a frozen encoder's states computed, batches that fit in memory."""
    trainer, data, encoder = settings.trainer, settings.data, settings.encoder
    seed_everything(trainer.seed)
    device = resolve_device(trainer.device)
    precision = resolve_precision(trainer.precision, device)
    reset_peak_memory(device)  # the job's own peak: a sweep's earlier jobs may have run in this process

    corpus, durations = usable_corpus(load_corpus(data), data, out_dir)
    copies = augmented_copies(corpus, durations, settings, budget.feature_workers)
    model = new_model(settings.model, encoder, corpus.dimensions).to(device)
    start, started_from = None, {}
    if settings.model.init_from:  # before resuming: a resumed run goes on from its own last.pt
        start = initialise_from(model, settings.model.init_from)
        started_from = {"init_from": start.record(corpus, data.fold)}
    grid = model.encoder.grid
    acoustic_cache = AcousticCache.for_model(settings.cache_dir, data.sample_rate, grid, settings.model)
    acoustic = acoustic_cache.entries([item.audio for item in [*corpus.splits.all, *copies]])
    cached = encoder.freeze and encoder.feature_cache
    datasets = make_datasets(corpus, durations, acoustic, grid, settings, encoder.freeze, copies)
    draws = corpus_draws(corpus, data, datasets[0])
    train_loader = make_loader(datasets[0], settings, device, budget.loader_workers, shuffle=True, draws=draws)

    # Memory first, before any long work; it also decides how much audio a batch of whole utterances may hold.
    cuts = BatchCuts.first(data)
    if trainer.preflight is True or (trainer.preflight == "auto" and device.type == "cuda"):
        preflight = Preflight(model, settings, device, autocast(device, precision))
        cuts = preflight.check(datasets, train_loader.batch_sampler.largest_batch(), cached)
    acoustic_cache.compute(acoustic, budget.feature_workers, stop)
    standardise_acoustics(model, datasets, corpus, acoustic, data.normalise)
    if cached:
        use_feature_cache(model, datasets, settings, device, precision, stop, cuts.cache_build, budget.loader_workers)
    val_loader, test_loader = (
        make_loader(dataset, settings, device, budget.loader_workers, False, cuts.evaluation)
        for dataset in datasets[1:]
    )
    log.info(
        "%s fold %s: %d train, %d validation, %d test utterances; %s on %s, %s",
        corpus.name,
        data.fold,
        len(train_loader.dataset),
        len(val_loader.dataset),
        len(test_loader.dataset),
        _format_params(count_parameters(model)),
        device,
        precision,
    )
    optimisation = Optimisation.build(
        model,
        settings.optim,
        trainer.accumulation_steps,
        total_steps=math.ceil(len(train_loader) / trainer.accumulation_steps) * trainer.max_epochs,
        scale_loss=precision == "fp16",
        device_type=device.type,
    )
    training = Training(
        settings,
        corpus,
        model,
        model_recipe(settings, corpus, model, start),
        device,
        precision,
        train_loader,
        val_loader,
        test_loader,
        optimisation,
        out_dir / "checkpoints",
        started_from,
    )
    resume(training, trainer.resume)
    return training


def train(training: Training, out_dir: Path, run: Run, stop: GracefulStop, prune: Pruning) -> None:
    """Epochs of training and validation until early stopping, the last epoch, or the sweep's pruning. The
    best epoch by `report.select` is kept (best.pt); history.csv and last.pt after every epoch."""
    trainer, model, progress = training.settings.trainer, training.model, training.progress
    corpus, dimensions = training.corpus, training.corpus.dimensions
    selected = score_key(training.settings.report.select)
    val_items, val_labels = training.val_loader.dataset.items, training.val_loader.dataset.labels()
    focus = training.settings.data.val_corpus
    while not progress.finished:
        epoch = progress.epoch
        progress.start_clock()
        training.train_loader.dataset.set_epoch(epoch)
        training.train_loader.batch_sampler.set_epoch(epoch, first_batch=progress.batches_done)
        train_one_epoch(
            model,
            training.train_loader,
            training.optimisation,
            training.device,
            training.precision,
            progress,
            checkpoint=training.save_last,
            checkpoint_every=trainer.checkpoint_every_steps,
            stop=stop,
            prune=prune,
            max_bad_steps=trainer.max_bad_steps,
            desc=f"epoch {epoch}/{trainer.max_epochs}",
            show_bar=trainer.progress_bar,
        )
        if prune.why is not None:  # between two steps: the epoch is left unfinished
            return
        val_pred = predict(model, training.val_loader, training.device, training.precision)
        val, val_by_corpus = split_scores(corpus, val_items, val_pred, val_labels, focus)
        row = {
            "epoch": epoch,
            "train_loss": progress.mean_loss,
            "train_ccc_mean": progress.ccc_mean(dimensions),
            **{f"val_{k}": v for k, v in val.items()},
            **{f"val_{name}_{k}": v for name, scores in (val_by_corpus or {}).items() for k, v in scores.items()},
            "lr": training.optimisation.lr,
            "padding": progress.padding,
            "bad_steps": progress.bad_steps,
            "seconds": progress.elapsed(),
        }
        run.log(row, step=epoch)
        log.info(
            "epoch %d: loss %.4f, val CCC %s, %.1f s", epoch, row["train_loss"], format_scores(val), row["seconds"]
        )
        stopper = training.stopper
        if stopper.update(val[selected], epoch):
            training.save_best(epoch, val, val_by_corpus)
        progress.end_epoch(row, finished=stopper.should_stop or epoch == trainer.max_epochs)
        training.save_last()  # first: an epoch in history.csv is one a resumed job does not train again
        write_history(out_dir / "history.csv", progress.history)
        if stopper.should_stop:
            log.info("early stop: no better validation %s for %d epochs", selected, stopper.patience)
        stop.check()
        if prune.check(force=True):
            return


def finish(training: Training, out_dir: Path, pruned: str | None) -> dict:
    """How the job ended, as its metrics.json record: `pruned` by its sweep (how far it got, no test), or
    completed, tested on its best epoch (predictions.csv). An interruption never gets here: it raised
    Interrupted where it was caught, with everything to resume saved."""
    model, device, corpus = training.model, training.device, training.corpus
    best_file = training.checkpoints / "best.pt"
    seconds = [row["seconds"] for row in training.progress.history]
    ran = {
        "epochs": len(training.progress.history),
        "sec_per_epoch": float(np.mean(seconds)) if seconds else None,
        **peak_memory(device),
        "params": count_parameters(model),
        "device": str(device),
    }
    fold, profile = training.settings.data.fold, training.settings.model.profile
    if pruned is not None:
        log.info("pruned: %s", pruned)
        best = load_checkpoint(best_file, device) if best_file.is_file() else {}
        return metrics_record(
            "pruned", fold, profile, val_best=best.get("val"), best_epoch=best.get("epoch"), **ran, error=pruned
        )
    best = load_checkpoint(best_file, device)
    model.load_checkpoint_state(best["model"])
    test_loader = training.test_loader
    test_items = test_loader.dataset.items
    test_pred = predict(model, test_loader, device, training.precision)
    test_true = test_loader.dataset.labels()
    test, test_by_corpus = split_scores(corpus, test_items, test_pred, test_true)
    log.info("test (best epoch %d): CCC %s", best["epoch"], format_scores(test))
    for name, scores in (test_by_corpus or {}).items():
        log.info("test on %s: CCC %s", name, format_scores(scores))
    write_predictions(
        out_dir / "predictions.csv",
        test_items,
        corpus.on_own_scales(test_items, test_true),
        corpus.on_own_scales(test_items, test_pred),
        corpus.dimensions,
        corpus,
    )
    by_corpus = {}
    if test_by_corpus is not None:
        val_by_corpus = best.get("val_by_corpus") or {}
        by_corpus["by_corpus"] = {
            name: {"test": scores, "val_best": val_by_corpus.get(name)} for name, scores in test_by_corpus.items()
        }
    return metrics_record(
        "completed",
        fold,
        profile,
        test=test,
        val_best=best["val"],
        best_epoch=best["epoch"],
        **ran,
        **training.started_from,
        **by_corpus,
    )


class Pruning(Protocol):
    """Whether the sweep around the job has ended it early, looked up between steps: a search pruning its trial
    hands one in (emotion.sweeps.pruning.PruneWatch); the loop knows nothing of sweeps."""

    why: str | None  # once pruned: what the sweep said

    def check(self, force: bool = False) -> bool: ...


class NeverPruned:
    why = None

    def check(self, force: bool = False) -> bool:
        return False


@dataclass
class Training:
    """Everything a job trains with, prepared before its first step, and where it is."""

    settings: JobSettings
    corpus: Corpus
    model: MambaEMA
    recipe: dict  # what rebuilds the model: stored beside its weights (emotion.training.recipe)
    device: torch.device
    precision: str
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    optimisation: Optimisation
    checkpoints: Path
    started_from: dict  # metrics.json's `init_from`: only a job started from a checkpoint has one
    stopper: EarlyStopping = field(init=False)
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        self.stopper = EarlyStopping(self.settings.trainer.patience)

    def save_last(self) -> None:
        """Everything needed to continue exactly from here, the random generators included."""
        state = {
            "model": self.model.checkpoint_state(),
            "recipe": self.recipe,
            **self.optimisation.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "progress": self.progress.state_dict(),
            "rng": rng_state(),
        }
        save_checkpoint(self.checkpoints / "last.pt", state, keep_previous=True)

    def save_best(self, epoch: int, val: dict, val_by_corpus: dict | None = None) -> None:
        state = {"model": self.model.checkpoint_state(), "recipe": self.recipe, "epoch": epoch, "val": val}
        if val_by_corpus is not None:
            state["val_by_corpus"] = val_by_corpus
        save_checkpoint(self.checkpoints / "best.pt", state)


def train_one_epoch(
    model: MambaEMA,
    loader,
    optimisation: Optimisation,
    device: torch.device,
    precision: str,
    progress: Progress | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    stop: GracefulStop | None = None,
    prune: Pruning | None = None,
    max_bad_steps: int | None = None,
    desc: str = "train",
    show_bar: bool = False,
) -> Progress:
    """Train on `loader`'s batches (those of the epoch not yet in `progress`), recording into `progress`.

    `checkpoint()` is called every `checkpoint_every` optimizer steps, at a step's end, when no gradient is
    waiting to be accumulated, so that nothing but the checkpoint is needed to go on; and, when `stop` has
    caught a signal, once more before stopping. Between steps, it returns early once `prune` sees that the
    job's search has pruned its trial: nothing more is saved, a pruned job is not resumed.
    """
    progress = progress or Progress()
    model.train()
    total = len(loader)
    group_is_finite = True  # checkpoints fall between accumulation groups, so a resumed epoch starts clean
    bar = tqdm(loader, desc=desc, initial=progress.batches_done, total=total, leave=False, disable=not show_bar)
    accumulation = optimisation.accumulation_steps
    for batch in bar:
        batch = batch.to(device)
        with autocast(device, precision):
            pred = model(batch.speech, batch.speech_lengths, batch.prosody, batch.crop, batch.functionals)
        loss = ccc_loss(pred, batch.labels)
        # One non-finite micro-batch spoils its accumulation group: the group's step is skipped.
        group_is_finite = group_is_finite and bool(torch.isfinite(loss))
        if group_is_finite:
            group_start = progress.batches_done - progress.batches_done % accumulation
            optimisation.backward(loss, group_size=min(accumulation, total - group_start))
            progress.record_predictions(pred, batch.labels)
        progress.record(loss.item() if group_is_finite else None, batch.speech_lengths.cpu(), batch.speech.shape[1])
        if progress.batches_done % accumulation == 0 or progress.batches_done == total:
            taken = group_is_finite and optimisation.step(model.parameters())
            if not group_is_finite:
                optimisation.discard()
            progress.record_step(taken)
            group_is_finite = True
            if max_bad_steps and progress.bad_in_a_row >= max_bad_steps:
                raise NumericalFault(
                    f"{progress.bad_in_a_row} optimizer steps in a row had a non-finite loss or gradient and were "
                    f"skipped (trainer.max_bad_steps={max_bad_steps}): lower optim.lr, look for extreme labels or "
                    "audio in the data, or train with trainer.precision=fp32"
                )
            # Only after a step taken: a skipped one leaves `steps` where it was, and the same checkpoint
            # would be written again.
            if taken and checkpoint and checkpoint_every and optimisation.steps % checkpoint_every == 0:
                checkpoint()
            if stop is not None and stop.requested:
                if checkpoint:
                    checkpoint()
                stop.check()
            if prune is not None and prune.check():
                return progress
        bar.set_postfix(loss=f"{progress.mean_loss:.4f}", lr=f"{optimisation.lr:.2e}")
    return progress


class NumericalFault(RuntimeError):
    pass


def resume(training: Training, mode: str) -> None:
    """Continue from `checkpoints/last.pt` (`trainer.resume=auto`) when it exists; `never` starts over."""
    if mode not in get_args(ResumeMode):
        raise ValueError(f"trainer.resume={mode!r} is not one of {get_args(ResumeMode)}.")
    last = training.checkpoints / "last.pt"
    state = load_latest(last, training.device) if mode == "auto" else None
    if state is None:
        if mode == "never" and last.exists():
            log.info("trainer.resume=never: starting over; %s will be overwritten", training.checkpoints)
        return
    training.model.load_checkpoint_state(state["model"])
    training.optimisation.load_state_dict(state)
    training.stopper.load_state_dict(state["early_stopping"])
    training.progress.load_state_dict(state["progress"])
    restore_rng(state["rng"])
    progress = training.progress
    log.info("resuming from %s: epoch %d, %d batches into it", last, progress.epoch, progress.batches_done)


def make_datasets(
    corpus: Corpus,
    durations: dict[str, float],
    acoustic: dict[Path, AcousticFiles],
    grid: FrameGrid,
    settings: JobSettings,
    crop_after_encoding: bool = False,
    copies: list[Item] = (),
) -> tuple[UtteranceDataset, UtteranceDataset, UtteranceDataset]:
    """Train (the training split and its augmented `copies`), validation and test: training crops at
    data.max_seconds (a frozen encoder's states, with `crop_after_encoding`); evaluation sees utterances whole."""

    def dataset(items, train: bool) -> UtteranceDataset:
        return UtteranceDataset(
            items,
            [durations[item.id] for item in items],
            [acoustic[item.audio] for item in items],
            corpus.labels(items),
            grid,
            settings.data.sample_rate,
            chunk_seconds=settings.data.eval_chunk_seconds,
            crop_seconds=settings.data.max_seconds if train else None,
            seed=settings.trainer.seed,
            crop_after_encoding=crop_after_encoding,
        )

    splits = corpus.splits
    return dataset([*splits.train, *copies], True), dataset(splits.val, False), dataset(splits.test, False)


def augmented_copies(corpus: Corpus, durations: dict[str, float], settings: JobSettings, workers: int) -> list[Item]:
    """The augmented copies of the training split (augment=; none by default), written to the cache on first
    use; each copy lasts as long as its original, whose duration it gets in `durations`. Normalisation
    statistics stay those of the clean training split: the copies are added to the training batches only."""
    copies = augmented_items(
        corpus.splits.train, settings.augment, settings.data.sample_rate, settings.cache_dir, workers
    )
    for copy in copies:
        durations[copy.id] = durations[copy.id.rsplit(AUGMENTED_ID, 1)[0]]
    if copies:
        log.info("augment=%s: %d augmented copies of the training utterances", settings.augment.name, len(copies))
    return copies


def standardise_acoustics(
    model: MambaEMA, datasets, corpus: Corpus, acoustic: dict[Path, AcousticFiles], normalise: str
) -> None:
    """The model standardises its acoustic inputs with statistics of the training split, after each speaker's
    or corpus's own standardisation as `normalise` (data.normalise) asks, which the datasets then apply: a
    corpus's own statistics come from its training split."""
    own = own_statistics(normalise, corpus.splits.all, acoustic, sample=corpus.splits.train)
    for dataset in datasets:
        dataset.own = own
    model.set_acoustic_statistics(acoustic_statistics(corpus.splits.train, acoustic, own))


def use_feature_cache(
    model: MambaEMA,
    datasets,
    settings: JobSettings,
    device: torch.device,
    precision: str,
    stop: GracefulStop,
    max_batch_samples: int,
    workers: int,
) -> None:
    """Compute the frozen encoder's states once (or find them cached) and make the datasets read them,
    in batches of at most `max_batch_samples` samples of audio. The encoder then leaves the GPU: training
    never runs it."""
    pieces = {dataset.piece(i): n for dataset in datasets for i, n in enumerate(dataset.segment_samples)}
    store = ensure_features(
        model.encoder,
        pieces,
        settings.cache_dir,
        settings.data.sample_rate,
        device=device,
        autocast=autocast(device, precision),
        batch_size=settings.data.batch_size,
        max_batch_samples=max_batch_samples,
        workers=workers,
        max_gb=settings.encoder.feature_cache_max_gb,
        show_bar=settings.trainer.progress_bar,
        stop=stop,
    )
    for dataset in datasets:
        dataset.features = store
    model.encoder.wavlm.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_loader(
    dataset: UtteranceDataset,
    settings: JobSettings,
    device: torch.device,
    workers: int,
    shuffle: bool,
    max_batch_samples: int | None = None,
    draws: CorpusDraws | None = None,
) -> DataLoader:
    """The job's batches of `dataset` (see batch_loader): shuffled for training, longest first for evaluation;
    `draws`: how often a training epoch draws each corpus's items."""
    return batch_loader(
        dataset,
        settings.data.batch_size,
        workers=workers,
        device=device,
        shuffle=shuffle,
        seed=settings.trainer.seed,
        pool_batches={"bucket": 32, "random": 1}[settings.data.batching],
        max_batch_samples=max_batch_samples,
        draws=draws,
    )


def corpus_draws(corpus: Corpus, data: DataSettings, train: UtteranceDataset) -> CorpusDraws | None:
    """How often an epoch draws each corpus's training segments (data.corpus_weights); None: each once."""
    if not corpus.parts or data.corpus_weights in (None, "natural"):
        return None
    names = [part.name for part in corpus.parts]
    groups = np.array([names.index(train.items[segment.item].corpus) for segment in train.segments])
    weights = np.ones(len(corpus.parts)) if data.corpus_weights == "balanced" else np.array(data.corpus_weights)
    return CorpusDraws(groups, weights / weights.sum())


class EarlyStopping:
    """Stop after `patience` epochs without a better validation score."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, score: float, epoch: int) -> bool:
        """Whether `score` is the best yet. The first epoch always is, so a best checkpoint always exists."""
        # None: the validation corpus (data.val_corpus) does not rate report.select's dimension
        score = -math.inf if score is None or math.isnan(score) else score
        if score > self.best_score or self.best_epoch == 0:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best_score, self.best_epoch, self.bad_epochs = (
            state["best_score"],
            state["best_epoch"],
            state["bad_epochs"],
        )


def release_memory() -> None:
    """The basic launcher runs a sweep's jobs in one process: hand the last job's GPU memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _format_params(params: dict) -> str:
    return f"{params['total'] / 1e6:.2f} M parameters ({params['trainable'] / 1e6:.2f} M trainable)"
