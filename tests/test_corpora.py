"""Real corpora in their on-disk layouts: items, labels, folds and splits, and the errors users meet first."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf

from emotion.data.corpora import load_corpus
from emotion.data.corpus import LabelScale
from tests.conftest import CONF, compose_config, run_train
from tests.trees import csv_tree, iemocap_tree, msp_podcast_tree


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    root = tmp_path_factory.mktemp("IEMOCAP_full_release")
    return root, iemocap_tree(root)


@pytest.fixture(scope="module")
def msp(tmp_path_factory):
    root = tmp_path_factory.mktemp("MSP-PODCAST")
    return root, msp_podcast_tree(root)


def data_config(overrides):
    return compose_config(overrides).data


def test_iemocap_reads_every_labelled_turn_with_arousal_valence_dominance_in_that_order(iemocap):
    root, truth = iemocap
    corpus = load_corpus(data_config(["data=iemocap", f"data.root={root}"]))
    items = corpus.splits.all
    assert len(items) == len(truth) == 30
    assert corpus.dimensions == ("arousal", "valence", "dominance") and corpus.scale == LabelScale(1.0, 5.0)
    for item in items:
        expected = truth[item.id]
        assert item.labels == pytest.approx([expected[d] for d in corpus.dimensions], abs=1e-4)
        assert (item.fold, item.speaker) == (expected["session"], expected["speaker"])
        assert item.path.is_file()


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("validation", ["next_session", "speaker_holdout"])
def test_iemocap_fold_k_tests_exactly_session_k_and_shares_no_speaker_with_training(iemocap, fold, validation):
    root, truth = iemocap
    splits = load_corpus(
        data_config(["data=iemocap", f"data.root={root}", f"data.fold={fold}", f"data.validation={validation}"])
    ).splits
    assert {item.id for item in splits.test} == {turn for turn, t in truth.items() if t["session"] == fold}
    speakers = {name: {item.speaker for item in part} for name, part in vars(splits).items()}
    assert not speakers["train"] & speakers["test"]
    assert not speakers["train"] & speakers["val"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    if validation == "next_session":
        assert {item.fold for item in splits.val} == {fold % 5 + 1}
    else:  # 20% of the 8 training speakers, rounded: 2 speakers
        assert len(speakers["val"]) == 2 and {item.fold for item in splits.val} <= set(range(1, 6)) - {fold}


def test_a_fold_outside_iemocap_names_the_valid_folds(iemocap):
    root, _ = iemocap
    with pytest.raises(ValueError, match=r"data.fold=6: IEMOCAP has folds 1–5"):
        load_corpus(data_config(["data=iemocap", f"data.root={root}", "data.fold=6"]))


def test_iemocap_without_a_root_names_the_key_the_environment_variable_and_the_layout(monkeypatch):
    monkeypatch.delenv("IEMOCAP_ROOT", raising=False)
    with pytest.raises(ValueError, match=r"data.root is not set.*IEMOCAP_ROOT.*EmoEvaluation"):
        load_corpus(data_config(["data=iemocap"]))


def test_a_folder_that_is_not_iemocap_says_what_it_should_hold(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not an IEMOCAP release.*Session1.*IEMOCAP_full_release"):
        load_corpus(data_config(["data=iemocap", f"data.root={tmp_path}"]))


def test_the_iemocap_root_comes_from_the_environment(iemocap, monkeypatch):
    root, _ = iemocap
    monkeypatch.setenv("IEMOCAP_ROOT", str(root))
    cfg = data_config(["data=iemocap"])
    assert cfg.root == str(root) and len(load_corpus(cfg).splits.all) == 30


def test_a_local_config_makes_iemocap_the_default_and_the_command_line_still_wins(iemocap, tmp_path):
    root, _ = iemocap
    conf = shutil.copytree(CONF, tmp_path / "conf")
    (conf / "local" / "default.yaml").write_text(
        f"# @package _global_\ndefaults:\n  - override /data: iemocap\npaths:\n  iemocap_root: {root}\n"
    )
    # compose_config selects local=none, as the tests must; a user's run picks local=default.
    picked = compose_config(["local=default", "model=max", "data.fold=1"], config_dir=conf)
    assert (picked.data.name, picked.data.root, picked.model.profile) == ("iemocap", str(root), "max")
    assert compose_config(["local=default", "experiment=demo"], config_dir=conf).data.name == "demo"
    assert compose_config(["local=default", "data=demo"], config_dir=conf).data.name == "demo"


def test_msp_podcast_uses_its_fixed_splits_and_the_chosen_test_set(msp):
    root, split_of = msp
    for test_set in ("Test1", "Test2"):
        corpus = load_corpus(data_config(["data=msp_podcast", f"data.root={root}", f"data.test_set={test_set}"]))
        names = {part: {item.path.name for item in getattr(corpus.splits, part)} for part in ("train", "val", "test")}
        assert names["train"] == {f for f, s in split_of.items() if s == "Train"}
        assert names["val"] == {f for f, s in split_of.items() if s == "Development"}
        assert names["test"] == {f for f, s in split_of.items() if s == test_set}
    assert corpus.scale == LabelScale(1.0, 7.0)


def test_msp_podcast_labels_are_scaled_from_1_to_7(msp):
    root, _ = msp
    corpus = load_corpus(data_config(["data=msp_podcast", f"data.root={root}"]))
    labels = np.array([item.labels for item in corpus.splits.all])
    assert labels.min() >= 1.0 and labels.max() <= 7.0
    normalised = corpus.scale.normalise(labels)
    np.testing.assert_allclose(normalised, (labels - 1.0) / 6.0, rtol=1e-6)
    np.testing.assert_allclose(corpus.scale.denormalise(normalised), labels, rtol=1e-6)


def test_msp_podcast_refuses_a_fold(msp):
    root, _ = msp
    with pytest.raises(ValueError, match=r"data.fold=2: MSP-Podcast has fixed splits.*data.test_set"):
        load_corpus(data_config(["data=msp_podcast", f"data.root={root}", "data.fold=2"]))


def test_csv_with_a_fold_column_cross_validates(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "speaker", "arousal", "valence", "dominance", "fold"])
    splits = load_corpus(data_config(["data=csv", f"data.manifest={manifest}", "data.fold=2"])).splits
    assert {item.fold for item in splits.test} == {2} and {item.fold for item in splits.val} == {3}
    assert {item.fold for item in splits.train} == {1}


def test_csv_with_a_split_column_uses_it_and_refuses_a_fold(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "speaker", "arousal", "split"])
    cfg = data_config(["data=csv", f"data.manifest={manifest}", "data.fold=null"])
    corpus = load_corpus(cfg)
    assert corpus.dimensions == ("arousal",)
    assert [len(part) for part in (corpus.splits.train, corpus.splits.val, corpus.splits.test)] == [8, 2, 2]
    with pytest.raises(ValueError, match=r"data.fold=1: data.manifest=.* has a split column, so its splits are fixed"):
        load_corpus(OmegaConf.merge(cfg, {"fold": 1}))


def test_csv_without_folds_makes_speaker_grouped_folds(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "speaker", "valence", "dominance"], n_speakers=10)
    cfg = data_config(["data=csv", f"data.manifest={manifest}", "data.n_folds=5"])
    folds_of_speaker = {}
    for fold in range(1, 6):
        splits = load_corpus(OmegaConf.merge(cfg, {"fold": fold})).splits
        assert len(splits.test) == 4  # 10 speakers × 2 items in 5 folds
        for item in splits.test:
            folds_of_speaker.setdefault(item.speaker, set()).add(fold)
        assert not {i.speaker for i in splits.train} & {i.speaker for i in splits.test}
    assert len(folds_of_speaker) == 10 and all(len(folds) == 1 for folds in folds_of_speaker.values())


def test_a_manifest_missing_columns_names_them(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "arousal"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['speaker'\].*needs path, speaker"):
        load_corpus(data_config(["data=csv", f"data.manifest={manifest}"]))


def test_a_job_on_iemocap_fold_3_predicts_only_session_3(iemocap, cache_dir, tmp_path):
    root, truth = iemocap
    out = tmp_path / "job"
    run_train(
        [
            "data=iemocap",
            f"data.root={root}",
            "encoder=tiny",
            "data.fold=3",
            "trainer.max_epochs=1",
            "logger=none",
            f"hydra.run.dir={out}",
        ],
        cache_dir,
    )
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["id"] for row in rows} == {turn for turn, t in truth.items() if t["session"] == 3}
    for row in rows:
        assert float(row["arousal_true"]) == pytest.approx(truth[row["id"]]["arousal"], abs=1e-3)  # the 1–5 scale
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["status"], metrics["fold"]) == ("completed", 3)


def test_msp_podcast_maps_emoact_emoval_emodom_to_arousal_valence_dominance(msp):
    root, _ = msp
    with open(root / "Labels" / "labels_consensus.csv", newline="") as f:
        rows = {row["FileName"]: row for row in csv.DictReader(f)}
    corpus = load_corpus(data_config(["data=msp_podcast", f"data.root={root}"]))
    for item in corpus.splits.all:
        row = rows[item.path.name]
        assert item.labels == (float(row["EmoAct"]), float(row["EmoVal"]), float(row["EmoDom"]))
        assert item.speaker == row["SpkrID"]
