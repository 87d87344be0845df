"""The memory preflight: every phase's worst batch is run before any long work; evaluation batches are cut
by their total length until the worst fits."""

from __future__ import annotations

import pytest
import torch

from emotion.data.corpora import load_corpus
from emotion.data.prosody_cache import ProsodyCache
from emotion.data.sampler import capped_batches
from emotion.data.scan import usable_corpus
from emotion.models.model import build_model
from emotion.training.loop import autocast, make_datasets
from emotion.training.preflight import Preflight, PreflightError, WorstBatch, eval_batch_cap
from tests.conftest import SMALL_DEMO, compose_config, run_train

CPU = torch.device("cpu")


def demo_job(tmp_path, overrides=()):
    cfg = compose_config(["experiment=demo", *SMALL_DEMO, "data.max_seconds=2.0", "data.batch_size=2", *overrides])
    corpus, durations = usable_corpus(load_corpus(cfg.data), cfg.data, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.encoder, corpus.dimensions)
    prosody = ProsodyCache(cfg.paths.cache_dir, 16000, model.encoder.grid).entries([i.path for i in corpus.splits.all])
    datasets = make_datasets(
        corpus, durations, prosody, model.encoder.grid, cfg, crop_after_encoding=cfg.encoder.freeze
    )
    return cfg, model, datasets


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
    cfg, model, datasets = demo_job(tmp_path, overrides)
    measured = []
    real_measure = Preflight.measure
    monkeypatch.setattr(Preflight, "measure", lambda self, worst: measured.append(worst) or real_measure(self, worst))
    rng_before, weights_before = torch.get_rng_state(), model.heads["arousal"][0].weight.detach().clone()

    cap = Preflight(model, cfg, CPU, autocast(CPU, "fp32")).check(datasets, training_rows=3, cached=cached)

    assert cap == eval_batch_cap(cfg) == 2 * 2.0 * 16000  # everything fits in this machine's memory
    assert {worst.phase: worst.inputs for worst in measured} == phases
    training = next(worst for worst in measured if worst.phase == "training step")
    longest = max(datasets[0].segment_samples)
    assert training.rows == 3 and training.samples == (longest if not cached and cfg.encoder.freeze else 32000)
    evaluated = [n for dataset in datasets[1:] for n in dataset.segment_samples]
    assert max(worst.samples for worst in measured if worst.phase == "evaluation") == max(evaluated)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(model.heads["arousal"][0].weight, weights_before)
    assert all(p.grad is None for p in model.parameters())


class SmallCard(Preflight):
    """A card that holds `capacity` samples of audio in all: what a batch needs is its padded size."""

    def __init__(self, cfg, capacity):
        self.cfg, self.card, self.card_gb, self.measured = cfg, "a small card", capacity / 0.95, []

    def measure(self, worst):
        self.measured.append(worst)
        return worst.rows * worst.samples


def test_evaluation_batches_are_halved_until_the_worst_fits():
    cfg = compose_config(["data.batch_size=8", "data.max_seconds=10"])  # a first cut of 80 s
    card = SmallCard(cfg, capacity=50 * 16000)
    lengths = [int(seconds * 16000) for seconds in (30, 20, 10, 10, 10, 10, 8, 5, 5, 5)]
    cap = card._evaluation_cap(lengths, "waves")
    # Cut at 80 s, the worst batch holds 30 s + 20 s padded to 60 s: too much. At 40 s the 30 s item goes
    # alone, and every batch fits.
    assert [(worst.rows, worst.samples // 16000) for worst in card.measured] == [(2, 30), (1, 30), (2, 20)]
    assert cap == 40 * 16000
    batches = capped_batches(lengths, 8, cap)
    assert max(len(batch) * lengths[batch[0]] for batch in batches) <= 50 * 16000


def test_an_utterance_that_does_not_fit_alone_stops_the_job_with_the_chunk_advice():
    cfg = compose_config(["data.batch_size=4", "data.max_seconds=10"])
    card = SmallCard(cfg, capacity=20 * 16000)
    with pytest.raises(PreflightError) as error:
        card._evaluation_cap([30 * 16000, 5 * 16000], "waves")
    message = str(error.value)
    assert message.startswith("the worst evaluation (1 × 30.0 s of waves) will not fit on a small card")
    assert "a shorter data.eval_chunk_seconds (now 60.0" in message


def test_the_preflight_runs_before_prosody_and_the_feature_cache_are_computed(tmp_path):
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
            "computing prosody contours",
            "feature cache: computing",
        )
    ]
    assert order == sorted(order)


def test_worst_batches_name_their_phase_and_size():
    assert WorstBatch("evaluation", 2, 48000, "waves").describe(16000) == "evaluation (2 × 3.0 s of waves)"
