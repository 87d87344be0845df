"""The memory preflight: every phase's worst batch is run before any long work; evaluation batches are cut
by their total length until the worst fits."""

from __future__ import annotations

import pytest
import torch

from emotion.data.corpora import load_corpus
from emotion.data.sampler import capped_batches
from emotion.data.scan import usable_corpus
from emotion.features.acoustic_cache import AcousticCache
from emotion.settings import DataSettings, JobSettings
from emotion.training.devices import autocast
from emotion.training.loop import make_datasets
from emotion.training.preflight import BatchCuts, Preflight, PreflightError, WorstBatch, first_batch_cap
from tests.conftest import SMALL_DEMO, compose_config, run_train, untrained_model

CPU = torch.device("cpu")


def demo_job(tmp_path, overrides=()):
    cfg = compose_config(["experiment=demo", *SMALL_DEMO, "data.max_seconds=2.0", "data.batch_size=2", *overrides])
    data = DataSettings.of(cfg.data)
    corpus, durations = usable_corpus(load_corpus(data), data, tmp_path)
    torch.manual_seed(0)
    model = untrained_model(cfg, corpus.dimensions)
    settings = JobSettings.of(cfg)
    acoustic = AcousticCache.for_model(settings.cache_dir, 16000, model.encoder.grid, settings.model)
    entries = acoustic.entries([i.path for i in corpus.splits.all])
    datasets = make_datasets(
        corpus, durations, entries, model.encoder.grid, settings, crop_after_encoding=settings.encoder.freeze
    )
    return settings, model, datasets


@pytest.mark.parametrize(
    ("overrides", "cached", "phases"),
    [
        (["encoder.freeze=false"], False, {"training step": "waves", "evaluation": "waves"}),
        (["encoder.feature_cache=false"], False, {"training step": "whole waves", "evaluation": "waves"}),
        ([], True, {"training step": "states", "evaluation": "states", "feature cache build": "waves"}),
    ],
    ids=["fine-tuned", "frozen", "frozen and cached"],
)
def test_every_phase_runs_its_worst_batch_and_training_is_left_untouched(
    cache_dir, tmp_path, monkeypatch, overrides, cached, phases
):
    settings, model, datasets = demo_job(tmp_path, overrides)
    measured = []
    real_measure = Preflight.measure
    monkeypatch.setattr(Preflight, "measure", lambda self, worst: measured.append(worst) or real_measure(self, worst))
    rng_before, weights_before = torch.get_rng_state(), model.heads["arousal"][0].weight.detach().clone()

    cuts = Preflight(model, settings, CPU, autocast(CPU, "fp32")).check(datasets, training_rows=3, cached=cached)

    first_cut = first_batch_cap(settings.data)
    assert first_cut == 2 * 2.0 * 16000
    assert cuts == BatchCuts(evaluation=first_cut, cache_build=first_cut)  # all fits in this machine's memory
    assert {worst.phase: worst.inputs for worst in measured} == phases
    training = next(worst for worst in measured if worst.phase == "training step")
    longest = max(datasets[0].segment_samples)
    assert training.rows == 3 and training.samples == (longest if not cached and settings.encoder.freeze else 32000)
    evaluated = [n for dataset in datasets[1:] for n in dataset.segment_samples]
    assert max(worst.samples for worst in measured if worst.phase == "evaluation") == max(evaluated)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(model.heads["arousal"][0].weight, weights_before)
    assert all(p.grad is None for p in model.parameters())


class SmallCard(Preflight):
    """A card that holds `capacity` samples of audio in all: what a batch needs is its padded size (a tenth
    of it for encoder states)."""

    halving_helps = True

    def __init__(self, settings, capacity, model=None):
        self.settings, self.model, self.device = settings, model, CPU
        self.card, self.card_gb, self.measured = "a small card", capacity / 0.95, []

    def measure(self, worst):
        self.measured.append(worst)
        return worst.rows * (worst.crop_samples or worst.samples) * (0.1 if worst.inputs == "states" else 1)


def test_evaluation_batches_are_halved_until_the_worst_fits():
    settings = JobSettings.of(compose_config(["data.batch_size=8", "data.max_seconds=10"]))  # a first cut of 80 s
    card = SmallCard(settings, capacity=50 * 16000)
    lengths = [int(seconds * 16000) for seconds in (30, 20, 10, 10, 10, 10, 8, 5, 5, 5)]
    cap = card._fitting_cap(lengths, "evaluation", "waves")
    # Cut at 80 s, the worst batch holds 30 s + 20 s padded to 60 s: too much. At 40 s the 30 s item goes
    # alone, and every batch fits.
    assert [(worst.rows, worst.samples // 16000) for worst in card.measured] == [(2, 30), (1, 30), (2, 20)]
    assert cap == 40 * 16000
    batches = capped_batches(lengths, 8, cap)
    assert max(len(batch) * lengths[batch[0]] for batch in batches) <= 50 * 16000


def test_the_cache_build_gets_its_own_cut_when_its_waves_do_not_fit(cache_dir, tmp_path):
    """Evaluation reads states and keeps the first cut; the build runs waves through the encoder and is cut
    until its widest batch fits."""
    settings, model, datasets = demo_job(tmp_path, ["data.batch_size=8"])  # a first cut of 16 s
    lengths = [n for dataset in datasets for n in dataset.segment_samples]
    card = SmallCard(settings, capacity=max(lengths), model=model)  # any utterance alone fits, not 16 s of them

    cuts = card.check(datasets, training_rows=8, cached=True)

    assert cuts.evaluation == first_batch_cap(settings.data) == 16 * 16000
    assert cuts.cache_build < first_batch_cap(settings.data)
    build_batches = capped_batches(lengths, 8, cuts.cache_build)
    assert max(len(batch) * lengths[batch[0]] for batch in build_batches) <= max(lengths)


def test_an_utterance_that_does_not_fit_alone_stops_the_job_with_the_chunk_advice():
    settings = JobSettings.of(compose_config(["data.batch_size=4", "data.max_seconds=10"]))
    card = SmallCard(settings, capacity=20 * 16000)
    with pytest.raises(PreflightError) as error:
        card._fitting_cap([30 * 16000, 5 * 16000], "evaluation", "waves")
    message = str(error.value)
    assert message.startswith("the worst evaluation (1 × 30.0 s of waves) will not fit on a small card")
    assert "a shorter data.eval_chunk_seconds (now 60.0" in message


@pytest.mark.slow
def test_the_preflight_runs_before_acoustic_features_and_the_feature_cache_are_computed(tmp_path):
    fresh_cache = tmp_path / "cache"  # nothing computed yet
    out = tmp_path / "job"
    result = run_train(
        ["experiment=demo", *SMALL_DEMO, "trainer.max_epochs=1", "trainer.preflight=true", f"hydra.run.dir={out}"],
        fresh_cache,
    )
    log = result.stdout + result.stderr
    order = [
        log.index(text)
        for text in (
            "preflight: training step",
            "preflight: feature cache build",
            "computing acoustic features",
            "feature cache: computing",
        )
    ]
    assert order == sorted(order)


def test_worst_batches_name_their_phase_and_size():
    assert WorstBatch("evaluation", 2, 48000, "waves").describe(16000) == "evaluation (2 × 3.0 s of waves)"
