"""The trainer: optimisation pieces, a loss that falls, and whole jobs run as users run them."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from emotion.data.corpora import load_corpus
from emotion.data.corpus import DIMENSIONS, Item, LabelScale
from emotion.data.sampler import LengthBucketSampler
from emotion.features.acoustic import CONTOURS, PROSODY_FEATURES
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.dataset import Batch, UtteranceDataset, collate
from emotion.features.normalisation import acoustic_statistics
from emotion.logger import NoRun
from emotion.models.grid import FrameGrid
from emotion.settings import DataSettings, JobSettings, ModelSettings, OptimSettings
from emotion.training import loop
from emotion.training.checkpoints import load_checkpoint
from emotion.training.devices import peak_memory, reset_peak_memory
from emotion.training.inference import predict
from emotion.training.loop import EarlyStopping, NumericalFault, train_one_epoch
from emotion.training.metrics import ccc_loss
from emotion.training.optim import Optimisation, build_optimizer, warmup_cosine
from emotion.training.outputs import METRICS_KEYS
from emotion.training.preflight import WorstBatch, memory_advice, synthetic_batch
from tests.conftest import SMALL_DEMO, compose_config, read_csv, run_train, untrained_model
from tests.wandb_records import run_summary


def small_setup(cache_dir, overrides=()):
    cfg = compose_config(["experiment=demo", *SMALL_DEMO, *overrides])
    torch.manual_seed(0)
    corpus = load_corpus(DataSettings.of(cfg.data))
    model = untrained_model(cfg, corpus.dimensions)
    return cfg, corpus, model


@pytest.mark.slow
def test_a_short_training_run_lowers_the_loss(cache_dir):
    cfg, corpus, model = small_setup(
        cache_dir,
        [
            "model.d_hidden=64",
            "model.d_prosody_out=16",
            "optim.lr=2e-3",
            "encoder.freeze=false",
            "encoder.random_init.num_hidden_layers=4",
            "model.speech_encoder_layers=[2,4]",
        ],
    )
    items = corpus.splits.train[:16]
    grid = model.encoder.grid
    acoustic = AcousticCache.for_model(cache_dir, 16000, grid, ModelSettings.of(cfg.model))
    prosody = acoustic.ensure([item.path for item in items], workers=1)
    model.set_acoustic_statistics(acoustic_statistics(items, prosody))  # eGeMAPS in hertz and decibels would saturate
    durations = [sf.info(item.path).duration for item in items]
    dataset = UtteranceDataset(
        items, durations, [prosody[item.path] for item in items], corpus.labels(items), grid, 16000, chunk_seconds=60.0
    )
    batches = [collate([dataset[i] for i in range(start, start + 8)]) for start in (0, 8)]
    optimizer = build_optimizer(model, OptimSettings.of(cfg.optim))

    def predictions(batch):
        return model(batch.speech, batch.speech_lengths, batch.prosody, functionals=batch.functionals)

    def loss_on_batches():
        model.eval()
        with torch.no_grad():
            return sum(ccc_loss(predictions(b), b.labels).item() for b in batches) / 2

    before = loss_on_batches()
    model.train()
    for _ in range(20):
        for batch in batches:
            loss = ccc_loss(predictions(batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = loss_on_batches()
    assert after < 0.75 * before, (before, after)


def test_the_encoder_gets_its_own_rate_and_time_constants_are_not_decayed(cache_dir):
    cfg, _, model = small_setup(
        cache_dir, ["encoder.freeze=false", "optim.lr=1e-3", "optim.encoder_lr=1e-5", "optim.weight_decay=0.1"]
    )
    optimizer = build_optimizer(model, OptimSettings.of(cfg.optim))
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    encoder_weight = named["encoder.wavlm.encoder.layers.0.attention.q_proj.weight"]
    assert group_of[id(encoder_weight)]["lr"] == 1e-5
    assert group_of[id(named["blocks.0.mixer.in_proj.weight"])]["weight_decay"] == 0.1
    for name in ("blocks.0.mixer.A_log", "blocks.0.mixer.D", "ema.alpha_logit", "encoder.layer_logits", "norm.weight"):
        assert group_of[id(named[name])]["weight_decay"] == 0.0, name
        assert group_of[id(named[name])]["lr"] == 1e-3, name
    assert not any(id(p) in group_of for p in model.encoder.wavlm.feature_extractor.parameters())  # frozen


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert rates[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))


class MeanProsodyModel(torch.nn.Module):
    """Stands in for the model in loop tests: predictions from the mean prosody frame."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(len(PROSODY_FEATURES), len(DIMENSIONS))

    def forward(self, speech, speech_lengths, prosody, crop=None, functionals=None):
        return self.linear(prosody.mean(dim=1))


def random_batch(size: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        speech=torch.zeros(size, 800),
        speech_lengths=torch.full((size,), 800),
        prosody=torch.randn(size, 2, len(PROSODY_FEATURES), generator=g),
        labels=torch.rand(size, len(DIMENSIONS), generator=g),
        indices=torch.arange(size),
    )


def test_gradients_accumulate_over_micro_batches_and_a_short_last_group_still_steps():
    model = MeanProsodyModel()
    optim_cfg = compose_config().optim
    optimisation = Optimisation.build(
        model, optim_cfg, accumulation_steps=2, total_steps=3, scale_loss=False, device_type="cpu"
    )
    batches = [random_batch(4, seed) for seed in range(5)]
    before = model.linear.weight.detach().clone()
    train_one_epoch(model, batches, optimisation, torch.device("cpu"), "fp32")
    assert optimisation.scheduler.last_epoch == 3  # steps after micro-batches 2, 4 and the lone 5th
    assert model.linear.weight.grad is None  # nothing left over for the next epoch
    assert not torch.equal(model.linear.weight, before)


def test_a_short_last_accumulation_group_is_averaged_over_its_own_size():
    """One epoch of 5 micro-batches with accumulation 3: groups of 3 and 2, each batch's gradient divided by
    its own group's size (by 3 in the last group, its step would be two thirds of the mean)."""
    torch.manual_seed(0)
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 3, total_steps=2, scale_loss=False, device_type="cpu"
    )
    batches = [random_batch(4, seed) for seed in range(5)]
    layers_seen, grads_seen = [], []  # what each micro-batch's forward saw; the gradient it gave
    model.register_forward_pre_hook(lambda module, inputs: layers_seen.append(copy.deepcopy(module.linear)))
    model.linear.weight.register_hook(lambda grad: grads_seen.append(grad.clone()))

    train_one_epoch(model, batches, optimisation, torch.device("cpu"), "fp32")

    for batch, layer, grad, group_size in zip(batches, layers_seen, grads_seen, [3, 3, 3, 2, 2], strict=True):
        (whole,) = torch.autograd.grad(ccc_loss(layer(batch.prosody.mean(dim=1)), batch.labels), layer.weight)
        torch.testing.assert_close(grad, whole / group_size)


def test_a_group_of_micro_batches_steps_on_their_mean_gradient():
    torch.manual_seed(0)
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 2, total_steps=1, scale_loss=False, device_type="cpu"
    )
    batches = [random_batch(4, seed) for seed in range(2)]
    expected = (
        sum(
            torch.autograd.grad(ccc_loss(model(b.speech, b.speech_lengths, b.prosody), b.labels), model.linear.weight)[
                0
            ]
            for b in batches
        )
        / 2
    )
    seen = []
    model.linear.weight.register_hook(lambda grad: seen.append(grad.clone()))
    train_one_epoch(model, batches, optimisation, torch.device("cpu"), "fp32")
    torch.testing.assert_close(seen[0] + seen[1], expected)


def test_a_skipped_step_does_not_write_the_same_checkpoint_again():
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 1, total_steps=6, scale_loss=False, device_type="cpu"
    )
    batches = [random_batch(4, seed) for seed in range(6)]
    batches[2], batches[3] = nan_inputs(batches[2]), nan_inputs(batches[3])  # steps stay at 2 for two batches
    written_at = []
    train_one_epoch(
        model,
        batches,
        optimisation,
        torch.device("cpu"),
        "fp32",
        checkpoint=lambda: written_at.append(optimisation.steps),
        checkpoint_every=2,
    )
    assert written_at == [2, 4]


def test_the_ema_alpha_and_the_layer_mix_receive_gradients_and_move(cache_dir):
    cfg, _, model = small_setup(cache_dir, ["optim.warmup_ratio=0.0"])
    batch = synthetic_batch(WorstBatch("training step", 4, 16000, "waves"), model)
    alpha, mix = model.ema.alpha_logit, model.encoder.layer_logits
    before = {"alpha": alpha.detach().clone(), "mix": mix.detach().clone()}
    grads = {}
    alpha.register_hook(lambda grad: grads.setdefault("alpha", grad.clone()))
    mix.register_hook(lambda grad: grads.setdefault("mix", grad.clone()))
    optimisation = Optimisation.build(
        model, OptimSettings.of(cfg.optim), 1, total_steps=1, scale_loss=False, device_type="cpu"
    )
    train_one_epoch(model, [batch], optimisation, torch.device("cpu"), "fp32")
    assert grads["alpha"].abs().min() > 0 and grads["mix"].abs().min() > 0  # every channel, every layer
    assert (alpha.detach() != before["alpha"]).all() and (mix.detach() != before["mix"]).all()


@pytest.mark.slow
def test_the_test_split_is_scored_with_the_best_checkpoint_not_the_last(cache_dir, tmp_path, monkeypatch):
    cfg = compose_config(["experiment=demo", *SMALL_DEMO, "trainer.max_epochs=2", "trainer.patience=5"])
    cfg.trainer.progress_bar = False
    real_update, real_predict = EarlyStopping.update, loop.predict
    # Epoch 1 is the best whatever validation says, so best.pt and last.pt hold different models.
    monkeypatch.setattr(EarlyStopping, "update", lambda self, score, epoch: real_update(self, 1.0 - epoch, epoch))
    heads_seen = []

    def predict_and_remember(model, *args):
        heads_seen.append({k: v.clone() for k, v in model.heads.state_dict().items()})
        return real_predict(model, *args)

    monkeypatch.setattr(loop, "predict", predict_and_remember)
    metrics = loop.fit(JobSettings.of(cfg), tmp_path, NoRun())
    assert (metrics["best_epoch"], metrics["epochs"]) == (1, 2)
    best, last = (load_checkpoint(tmp_path / "checkpoints" / name)["model"] for name in ("best.pt", "last.pt"))
    tested = heads_seen[-1]  # validation of epochs 1 and 2, then the test
    assert len(heads_seen) == 3
    for key, value in tested.items():
        torch.testing.assert_close(value, best[f"heads.{key}"])
    assert any(not torch.equal(value, last[f"heads.{key}"]) for key, value in tested.items())


def test_report_select_picks_the_epoch_a_job_keeps_and_the_score_it_returns(cache_dir, tmp_path, monkeypatch):
    from emotion.job import selected_score
    from emotion.sweeps.pruning import best_so_far

    cfg = compose_config(
        ["experiment=demo", *SMALL_DEMO, "trainer.max_epochs=2", "trainer.patience=5", "report.select=val_ccc_v"]
    )
    cfg.trainer.progress_bar = False
    # Valence peaks at epoch 1, the mean at epoch 2: the job must keep epoch 1.
    validation = iter(
        [
            {"ccc_a": 0.1, "ccc_v": 0.6, "ccc_d": 0.1, "ccc_mean": 0.27},
            {"ccc_a": 0.9, "ccc_v": 0.3, "ccc_d": 0.9, "ccc_mean": 0.70},
        ]
    )
    real_scores = loop.split_scores

    def planted_then_real(*args):
        planted = next(validation, None)
        return (planted, None) if planted else real_scores(*args)

    monkeypatch.setattr(loop, "split_scores", planted_then_real)
    metrics = loop.fit(JobSettings.of(cfg), tmp_path, NoRun())
    assert metrics["best_epoch"] == 1 and metrics["val_best"]["ccc_v"] == 0.6
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1
    assert selected_score(cfg, metrics) == 0.6  # what the job returns to its sweeper
    # and what a search's pruner last saw of it: the study's value and the pruner's are one quantity
    assert best_so_far(tmp_path / "history.csv", "val_ccc_v")[-1] == 0.6


def test_early_stopping_waits_patience_epochs_after_the_best():
    stopper = EarlyStopping(patience=2)
    improved = [stopper.update(score, epoch) for epoch, score in enumerate([0.1, 0.3, 0.2, 0.3, 0.25], start=1)]
    assert improved == [True, True, False, False, False]
    assert stopper.best_epoch == 2 and stopper.should_stop


def test_a_jobs_cpu_peak_memory_is_its_own_not_an_earlier_jobs_in_the_same_process():
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    before = peak_memory(cpu)["peak_mem_gb"]
    earlier_job = np.ones(600_000_000 // 8)  # 0.6 GB, touched, then freed
    del earlier_job
    assert peak_memory(cpu) == {"peak_mem_gb": pytest.approx(before + 0.6, abs=0.1), "mem_kind": "cpu_peak_rss"}
    reset_peak_memory(cpu)  # the next job starts
    assert peak_memory(cpu)["peak_mem_gb"] == pytest.approx(before, abs=0.1)


MAX_ON_FOLD_2 = ["experiment=demo", "model=max", "data.fold=2", *SMALL_DEMO]


@pytest.mark.slow
def test_the_max_profile_on_fold_2_writes_the_contract_outputs(cache_dir, tmp_path):
    out = tmp_path / "job"
    run_train([*MAX_ON_FOLD_2, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={out}"], cache_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert tuple(metrics) == METRICS_KEYS
    assert (metrics["status"], metrics["fold"], metrics["profile"]) == ("completed", 2, "max")
    assert set(metrics["test"]) == set(metrics["val_best"]) == {"ccc_a", "ccc_v", "ccc_d", "ccc_mean"}
    assert -1.0 <= metrics["test"]["ccc_a"] <= 1.0
    assert (metrics["epochs"], metrics["best_epoch"]) == (1, 1)
    assert (metrics["device"], metrics["mem_kind"]) == ("cpu", "cpu_peak_rss")
    assert metrics["sec_per_epoch"] > 0 and 0.1 < metrics["peak_mem_gb"] < 20
    assert metrics["params"]["total"] >= metrics["params"]["trainable"] > 0

    predictions = read_csv(out / "predictions.csv")
    voices_per_session = 2
    expected = voices_per_session * compose_config(MAX_ON_FOLD_2).data.utterances_per_voice
    assert len(predictions) == expected and all(row["id"].startswith("Ses02") for row in predictions)
    assert all(1.0 <= float(row["arousal_true"]) <= 5.0 for row in predictions)
    assert all(1.0 <= float(row[f"{dim}_pred"]) <= 5.0 for row in predictions for dim in DIMENSIONS)
    history = read_csv(out / "history.csv")
    assert len(history) == 1 and history[0]["bad_steps"] == "0" and 0 <= float(history[0]["padding"]) < 0.5
    assert -1.0 <= float(history[0]["train_ccc_mean"]) <= 1.0
    # The checkpoints carry the training split's statistics of the acoustic features.
    cfg = compose_config(MAX_ON_FOLD_2)
    corpus = load_corpus(DataSettings.of(cfg.data))
    acoustic = AcousticCache.for_model(cache_dir, 16000, FrameGrid(400, 320), ModelSettings.of(cfg.model)).entries(
        [item.path for item in corpus.splits.all]
    )
    expected = acoustic_statistics(corpus.splits.train, acoustic)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(out / "checkpoints" / name)["model"]
        torch.testing.assert_close(state["prosody_norm.mean"], torch.from_numpy(expected.frames.mean))
        torch.testing.assert_close(state["functionals_norm.std"], torch.from_numpy(expected.functionals.std))
    assert (out / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_job_failing_while_it_runs_records_the_error_and_finishes_its_wandb_run_as_failed(cache_dir, tmp_path):
    not_a_corpus = tmp_path / "notes"
    not_a_corpus.mkdir()
    (not_a_corpus / "todo.txt").write_text("the config is valid; the folder only turns out wrong when read")
    out = tmp_path / "job"
    result = run_train(
        ["experiment=demo", f"data.root={not_a_corpus}", "logger=wandb", *SMALL_DEMO, f"hydra.run.dir={out}"],
        cache_dir,
        check=False,
    )
    assert result.returncode != 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "FileExistsError" in metrics["error"] and "holds files but no demo corpus" in metrics["error"]
    assert (not_a_corpus / "todo.txt").exists()
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    assert run_summary(run_file)["exit_code"] == 1


@pytest.mark.slow
def test_a_wandb_offline_run_records_config_metrics_and_summary(cache_dir, tmp_path):
    out = tmp_path / "job"
    run_train(
        [
            "experiment=demo",
            "trainer.max_epochs=2",
            "trainer.patience=5",
            "logger=wandb",
            *SMALL_DEMO,
            f"hydra.run.dir={out}",
        ],
        cache_dir,
    )
    run_files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    run = run_summary(run_files[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert run["config"]["model"]["profile"] == "standard"
    assert run["config"]["data"]["root"].startswith(str(cache_dir))  # resolved, not `${paths.cache_dir}/…`
    assert (run["job_type"], run["tags"], run["group"]) == ("fold1", ["standard", "tiny"], "")
    assert run["history_steps"] == [1, 2]
    assert run["summary"]["test/ccc_mean"] == pytest.approx(metrics["test"]["ccc_mean"])
    assert run["summary"]["val_ccc_mean"] == pytest.approx(float(read_csv(out / "history.csv")[-1]["val_ccc_mean"]))
    assert run["exit_code"] == 0


class ChunkMeanModel(torch.nn.Module):
    """Predicts, for every dimension, the mean sample value of the (unpadded) audio it is given."""

    heads = ("arousal", "valence", "dominance")

    def forward(self, speech, speech_lengths, prosody, crop=None, functionals=None):
        return (speech.sum(dim=1) / speech_lengths).unsqueeze(1).repeat(1, len(self.heads))


def test_a_chunked_item_gets_the_length_weighted_mean_of_its_chunks(tmp_path):
    # 2.5 s at 16 kHz in 1 s chunks: three chunks of 13440, 13440 and 13120 samples (on the 320-sample grid).
    wave = np.concatenate([np.full(13440, 0.1), np.full(13440, 0.2), np.full(13120, 0.3)]).astype(np.float32)
    sf.write(tmp_path / "long.wav", wave, 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", np.full(8000, 0.4, dtype=np.float32), 16000, subtype="FLOAT")
    items = [
        Item(id=name, path=tmp_path / f"{name}.wav", speaker="x", labels=(1.0, 2.0, 3.0), fold=1)
        for name in ("long", "short")
    ]
    grid = FrameGrid(400, 320)
    prosody = AcousticCache(tmp_path / "cache", 16000, grid, [CONTOURS]).ensure([item.path for item in items], 1)
    dataset = UtteranceDataset(
        items,
        [2.5, 0.5],
        [prosody[item.path] for item in items],
        np.stack([LabelScale(1, 5).normalise(item.labels) for item in items]),
        grid,
        16000,
        chunk_seconds=1.0,
    )
    loader = DataLoader(
        dataset, batch_sampler=LengthBucketSampler(dataset.lengths, 2, shuffle=False), collate_fn=collate
    )
    pred, true = predict(ChunkMeanModel(), loader, torch.device("cpu"), "fp32"), dataset.labels()
    expected_long = (0.1 * 13440 + 0.2 * 13440 + 0.3 * 13120) / 40000
    np.testing.assert_allclose(pred, [[expected_long] * 3, [0.4] * 3], rtol=1e-5)
    np.testing.assert_allclose(true, [[0.0, 0.25, 0.5]] * 2)


def nan_inputs(batch: Batch) -> Batch:
    """A batch whose predictions, and so its loss, are NaN (a NaN label is masked out instead: data=multi)."""
    return Batch(
        batch.speech, batch.speech_lengths, torch.full_like(batch.prosody, float("nan")), batch.labels, batch.indices
    )


def test_a_non_finite_loss_skips_its_step_and_is_counted():
    torch.manual_seed(0)
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 1, total_steps=6, scale_loss=False, device_type="cpu"
    )
    batches = [random_batch(4, seed) for seed in range(6)]
    batches[2] = nan_inputs(batches[2])
    progress = train_one_epoch(model, batches, optimisation, torch.device("cpu"), "fp32", max_bad_steps=3)
    assert (progress.bad_steps, progress.bad_in_a_row, optimisation.steps) == (1, 0, 5)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_gradient_skips_its_step():
    torch.manual_seed(0)
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 1, total_steps=2, scale_loss=False, device_type="cpu"
    )
    before = model.linear.weight.detach().clone()
    hook = model.linear.weight.register_hook(lambda grad: grad * float("inf"))
    progress = train_one_epoch(model, [random_batch(4, 0)], optimisation, torch.device("cpu"), "fp32")
    hook.remove()
    assert progress.bad_steps == 1 and optimisation.steps == 0
    assert torch.equal(model.linear.weight, before)


def test_too_many_bad_steps_in_a_row_stop_the_job_with_advice():
    model = MeanProsodyModel()
    optimisation = Optimisation.build(
        model, compose_config().optim, 1, total_steps=5, scale_loss=False, device_type="cpu"
    )
    batches = [nan_inputs(random_batch(4, seed)) for seed in range(5)]
    with pytest.raises(NumericalFault, match=r"3 optimizer steps in a row.*trainer.max_bad_steps=3.*optim.lr"):
        train_one_epoch(model, batches, optimisation, torch.device("cpu"), "fp32", max_bad_steps=3)


def test_memory_advice_names_the_job_keeps_the_utterances_per_step_and_says_the_step_differs():
    cfg = compose_config(["model=max"])
    advice = memory_advice(
        JobSettings.of(cfg), 23.7, total_gb=24.0, device_name="NVIDIA GeForce RTX 4090", what="will not fit"
    )
    assert advice.startswith("will not fit on NVIDIA GeForce RTX 4090: 23.7 GB of 24.0 GB with model=max")
    assert "data.batch_size=6 trainer.accumulation_steps=2" in advice  # 12 per step either way
    assert "not the same step: the CCC loss is computed per micro-batch of 6" in advice
    assert "model.grad_checkpointing=true" in advice  # fine-tuning without it
    frozen = compose_config(["model=max", "encoder.freeze=true"])
    assert "grad_checkpointing" not in memory_advice(JobSettings.of(frozen), 30.0, 24.0, "card", "will not fit")
