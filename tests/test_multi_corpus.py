"""Several corpora trained on together (data=multi): one common label scale, masked dimensions, speakers and
statistics kept per corpus, corpus weights, per-corpus scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emotion.data.corpora import config_problems, load_corpus
from emotion.data.sampler import CorpusDraws, LengthBucketSampler
from emotion.features.acoustic import FUNCTIONALS
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.normalisation import acoustic_statistics, own_statistics
from emotion.prediction import run_predict
from emotion.training.metrics import batch_ccc, ccc_loss, split_scores
from emotion.training.outputs import write_predictions
from tests.conftest import SMALL_DEMO, data_settings, evaluate_in_process, predict_config, read_csv, run_train

# The demo (rated 1–5, with dominance) and demo_b (other voices, rated 1–7, no dominance), small.
TWO_CORPORA = [
    "data=multi",
    "data.corpora=[{config:demo,utterances_per_voice:4},{config:demo_b,utterances_per_voice:4}]",
]


@pytest.fixture(scope="module")
def two_corpora(cache_dir):
    return load_corpus(data_settings(TWO_CORPORA))


def test_a_1_to_7_and_a_1_to_5_corpus_meet_on_0_to_1_and_map_back_exactly(two_corpora):
    corpus = two_corpora
    assert corpus.name == "demo+demo-b" and corpus.dimensions == ("arousal", "valence", "dominance")
    assert [(part.name, part.scale.low, part.scale.high) for part in corpus.parts] == [("demo", 1, 5), ("demo-b", 1, 7)]
    items = corpus.splits.all
    labels = corpus.labels(items)
    for item, row in zip(items, labels, strict=True):
        low, high = (1, 5) if item.corpus == "demo" else (1, 7)
        expected = (np.array(item.labels) - low) / (high - low)
        if item.corpus == "demo":
            np.testing.assert_allclose(row, expected, rtol=1e-6)
        else:  # no dominance: NaN, never invented
            np.testing.assert_allclose(row[:2], expected, rtol=1e-6)
            assert np.isnan(row[2])
    back = corpus.on_own_scales(items, labels)
    for item, row in zip(items, back, strict=True):
        np.testing.assert_allclose(row[: len(item.labels)], item.labels, rtol=1e-6)
    assert np.nanmin(labels) >= 0.0 and np.nanmax(labels) <= 1.0


def test_ids_and_speakers_are_named_per_corpus(two_corpora, tmp_path):
    corpus = two_corpora
    assert {item.id.split("/")[0] for item in corpus.splits.all} == {"demo", "demo-b"}
    demo_items = [item for item in corpus.splits.all if item.corpus == "demo"]
    # The same speaker id in two corpora is two people: as the checkpoint records them, and in predictions.csv.
    twin = demo_items[0].__class__(**{**demo_items[0].__dict__, "corpus": "demo-b", "id": "demo-b/twin"})
    assert twin.speaker == demo_items[0].speaker and twin.voice != demo_items[0].voice
    assert len(corpus.speaker_keys([demo_items[0], twin])) == 2
    items, values = [demo_items[0], twin], np.zeros((2, 3))
    write_predictions(tmp_path / "p.csv", items, values, values, corpus.dimensions, corpus)
    rows = read_csv(tmp_path / "p.csv")
    assert [row["speaker"] for row in rows] == [f"demo/{twin.speaker}", f"demo-b/{twin.speaker}"]
    assert [(row["corpus"], row["scale_high"]) for row in rows] == [("demo", "5"), ("demo-b", "7")]


def test_a_missing_dimension_is_masked_out_of_the_loss_and_gets_no_gradient():
    torch.manual_seed(0)
    pred = torch.rand(6, 3, requires_grad=True)
    true = torch.rand(6, 3)
    true[3:, 2] = float("nan")  # three items of a corpus without dominance
    loss = ccc_loss(pred, true)
    rated = 1 - batch_ccc(pred[:, :2], true[:, :2])
    expected = (rated.sum() + 1 - batch_ccc(pred[:3, 2], true[:3, 2])) / 3
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[3:, 2] == 0).all() and (pred.grad[:3, 2] != 0).all()
    # A batch where no dimension is rated twice adds nothing, and stays finite.
    lone = torch.full((4, 3), float("nan"))
    lone[0] = 0.5
    assert ccc_loss(pred[:4], lone).item() == 0.0


def test_scores_are_per_corpus_and_the_split_scores_their_mean(two_corpora):
    corpus = two_corpora
    items = corpus.splits.test
    true = corpus.labels(items)
    rng = np.random.default_rng(0)
    pred = np.clip(np.nan_to_num(true, nan=0.5) + rng.normal(0, 0.1, true.shape), 0, 1)
    mean, by_corpus = split_scores(corpus, items, pred, true)
    assert set(by_corpus) == {"demo", "demo-b"}
    assert by_corpus["demo-b"]["ccc_d"] is None and by_corpus["demo"]["ccc_d"] is not None
    assert mean["ccc_a"] == pytest.approx((by_corpus["demo"]["ccc_a"] + by_corpus["demo-b"]["ccc_a"]) / 2)
    assert mean["ccc_d"] == pytest.approx(by_corpus["demo"]["ccc_d"])  # the one corpus that rates it
    focused, _ = split_scores(corpus, items, pred, true, focus="demo-b")
    assert focused == by_corpus["demo-b"]


@pytest.mark.slow
def test_each_corpus_is_standardised_with_its_own_training_statistics(two_corpora, cache_dir):
    corpus = two_corpora
    cache = AcousticCache(cache_dir, 16000, None, frame_sets=(), functionals=FUNCTIONALS)
    acoustic = cache.ensure([item.path for item in corpus.splits.all], workers=1)
    own = own_statistics("corpus", corpus.splits.all, acoustic, sample=corpus.splits.train)
    assert set(own.by_group) == {"demo", "demo-b"}
    for name in ("demo", "demo-b"):
        train = [item for item in corpus.splits.train if item.corpus == name]
        expected = acoustic_statistics(train, acoustic)
        np.testing.assert_array_equal(own.by_group[name].functionals.mean, expected.functionals.mean)
    # demo-b is 12 dB quieter: its own statistics, not demo's, bring its loudness to zero mean.
    test_b = [item for item in corpus.splits.test if item.corpus == "demo-b"]
    raw = np.stack([acoustic[item.path].read_functionals() for item in test_b])
    standardised = np.stack([own.functionals(item, acoustic[item.path].read_functionals()) for item in test_b])
    by_demo = own.by_group["demo"].functionals.standardise(raw)
    assert np.abs(standardised.mean(axis=0)).mean() < np.abs(by_demo.mean(axis=0)).mean() / 2
    speakers = own_statistics("speaker", corpus.splits.all, acoustic)
    assert len(speakers.by_group) == len({item.voice for item in corpus.splits.all}) == 20


def test_balanced_weights_draw_each_corpus_equally_often_and_the_same_seed_draws_the_same():
    groups = np.array([0] * 30 + [1] * 10)
    draws = CorpusDraws(groups, np.array([0.5, 0.5]))
    first = draws.indices(np.random.default_rng([0, 1]))
    assert len(first) == 40
    assert np.bincount(groups[first]).tolist() == [20, 20]
    assert len(set(first[groups[first] == 0].tolist())) == 20  # the large corpus sampled without repeats
    assert sorted(set(first[groups[first] == 1].tolist())) == list(range(30, 40))  # the small one repeated
    np.testing.assert_array_equal(first, draws.indices(np.random.default_rng([0, 1])))
    weighted = CorpusDraws(groups, np.array([0.25, 0.75])).indices(np.random.default_rng(0))
    assert np.bincount(groups[weighted]).tolist() == [10, 30]
    sampler = LengthBucketSampler([1000] * 40, 4, shuffle=True, draws=draws)
    assert sum(len(batch) for batch in sampler) == 40 and len(list(sampler)) == len(sampler)


def test_config_problems_name_the_entry_the_value_and_the_fix(cache_dir):
    def problems(*overrides):
        return "\n".join(config_problems(data_settings([*TWO_CORPORA, *overrides])))

    assert "data.corpus_weights=[1.0]: one weight per corpus of data.corpora (2: demo, demo-b)" in problems(
        "data.corpus_weights=[1.0]"
    )
    assert "data.val_corpus='iemocap': not one of the corpora (demo, demo-b)" in problems("data.val_corpus=iemocap")
    assert problems("data.corpus_weights=[1,3]", "data.val_corpus=demo-b") == ""
    assert "data.corpora[1] (demo): data.fold=9" in problems("data.corpora=[demo_b,{config:demo,fold:9}]")
    assert "demo twice" in problems("data.corpora=[demo,demo]")
    with pytest.raises(Exception, match="'nope' is not a data option; use one of csv, demo, demo_b"):
        data_settings(["data=multi", "data.corpora=[demo,nope]"])


@pytest.mark.slow
def test_a_two_corpus_job_with_noisy_copies_scores_each_corpus_and_evaluate_py_agrees_on_one(cache_dir, tmp_path):
    job = tmp_path / "job"
    noisy = ["augment=noise", "augment.copies=1"]
    args = ["experiment=demo", *TWO_CORPORA, *noisy, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={job}"]
    log = run_train(args, cache_dir).stdout + (job / "train.log").read_text()
    # 24 training utterances in each corpus (fold 1 of 40): trained on them and one noisy copy each.
    assert "augment=noise: 48 augmented copies" in log and "96 train, 16 validation, 16 test utterances" in log
    assert not any("~aug" in row["id"] for row in read_csv(job / "predictions.csv"))  # tested on the corpora's own
    metrics = json.loads((job / "metrics.json").read_text())
    by_corpus = metrics["by_corpus"]
    assert set(by_corpus) == {"demo", "demo-b"}
    assert by_corpus["demo-b"]["test"]["ccc_d"] is None and by_corpus["demo"]["test"]["ccc_d"] is not None
    mean_a = (by_corpus["demo"]["test"]["ccc_a"] + by_corpus["demo-b"]["test"]["ccc_a"]) / 2
    assert metrics["test"]["ccc_a"] == pytest.approx(mean_a)
    assert metrics["val_best"]["ccc_mean"] == pytest.approx(
        np.mean([scores["val_best"]["ccc_mean"] for scores in by_corpus.values()])
    )
    rows = read_csv(job / "predictions.csv")
    assert {row["corpus"] for row in rows} == {"demo", "demo-b"}
    b_rows = [row for row in rows if row["corpus"] == "demo-b"]
    assert all(row["dominance_true"] == "" == row["dominance_pred"] for row in b_rows)
    assert max(float(row["arousal_true"]) for row in b_rows) > 5  # on demo-b's own 1–7 scale
    history = read_csv(job / "history.csv")
    assert {"val_demo_ccc_a", "val_demo-b_ccc_v"} <= set(history[0])

    # The model scored on one of its corpora by evaluate.py: the same items, the same path, the same scores.
    evaluated = evaluate_in_process([f"ckpt={job}", "data=demo_b", *SMALL_DEMO], tmp_path / "evaluation")
    assert evaluated["data"]["normalise"] == "training"  # a corpus it trained on: as in training
    assert evaluated["test"] == pytest.approx(by_corpus["demo-b"]["test"], abs=1e-5)
    # Scored on both corpora at once, as its job's test was: the mean over corpora, and each one's.
    both = evaluate_in_process([f"ckpt={job}", *TWO_CORPORA], tmp_path / "both")
    assert both["data"]["normalise"] == "training" and both["test"] == pytest.approx(metrics["test"], abs=1e-5)
    assert both["by_corpus"]["demo"]["test"] == pytest.approx(by_corpus["demo"]["test"], abs=1e-5)
    every_item = ["evaluate.split=all", "data.fold=null"]
    assert evaluate_in_process([f"ckpt={job}", *TWO_CORPORA, *every_item], tmp_path / "all")["data"]["items"] == 80

    # Predictions on [0, 1] by default (two scales), and on either corpus's scale when asked: the same numbers.
    recordings = cache_dir / "demo-b-seed1-n4" / "wav"
    outputs = {}
    for scale in ("null", "unit", "demo-b", "demo"):
        out = tmp_path / f"{scale}.csv"
        run_predict(predict_config(job, recordings, out, f"predict.label_scale={scale}", "predict.workers=0"))
        outputs[scale] = np.array([[float(row[dim]) for dim in ("arousal", "valence")] for row in read_csv(out)])
    np.testing.assert_array_equal(outputs["null"], outputs["unit"])
    np.testing.assert_allclose(outputs["demo-b"], outputs["unit"] * 6 + 1, atol=1e-3)
    np.testing.assert_allclose(outputs["demo"], outputs["unit"] * 4 + 1, atol=1e-3)
    with pytest.raises(ValueError, match="predict.label_scale='iemocap'"):
        run_predict(predict_config(job, recordings, tmp_path / "x.csv", "predict.label_scale=iemocap"))
