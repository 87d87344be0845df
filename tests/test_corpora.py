"""Real corpora in their on-disk layouts: items, labels, folds and splits, and the errors users meet first."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emotion.checks import check_config
from emotion.data.corpora import config_problems, load_corpus
from emotion.data.corpus import Corpus, Item, LabelScale, Splits
from emotion.settings import DataSettings
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


def data_config(overrides) -> DataSettings:
    return DataSettings.of(compose_config(overrides).data)


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


@pytest.mark.parametrize("validation", ["next_session", "speaker_holdout"])
def test_an_excluded_fold_is_in_no_split_as_if_the_corpus_had_no_such_fold(iemocap, validation):
    root, truth = iemocap
    job = ["data=iemocap", f"data.root={root}", f"data.validation={validation}"]
    splits = load_corpus(data_config([*job, "data.fold=5", "data.exclude_fold=1"])).splits
    assert {item.fold for item in splits.all} == {2, 3, 4, 5}
    assert len(splits.all) == sum(t["session"] != 1 for t in truth.values())
    if validation == "next_session":  # fold 5's next is the first fold the corpus has left: 2
        assert {item.fold for item in splits.val} == {2}
    with pytest.raises(ValueError, match="data.exclude_fold=3: the job's test fold"):
        load_corpus(data_config([*job, "data.fold=3", "data.exclude_fold=3"]))
    with pytest.raises(ValueError, match=r"data.exclude_fold=9: must be one of IEMOCAP's folds \[1, 2, 3, 4, 5\]"):
        load_corpus(data_config([*job, "data.fold=3", "data.exclude_fold=9"]))


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
    with pytest.raises(ValueError, match=r"data.exclude_fold=1: MSP-Podcast has no folds"):
        load_corpus(data_config(["data=msp_podcast", f"data.root={root}", "data.exclude_fold=1"]))


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
        load_corpus(replace(cfg, fold=1))


def test_csv_without_folds_makes_speaker_grouped_folds(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "speaker", "valence", "dominance"], n_speakers=10)
    cfg = data_config(["data=csv", f"data.manifest={manifest}", "data.n_folds=5"])
    folds_of_speaker = {}
    for fold in range(1, 6):
        splits = load_corpus(replace(cfg, fold=fold)).splits
        assert len(splits.test) == 4  # 10 speakers × 2 items in 5 folds
        for item in splits.test:
            folds_of_speaker.setdefault(item.speaker, set()).add(fold)
        assert not {i.speaker for i in splits.train} & {i.speaker for i in splits.test}
    assert len(folds_of_speaker) == 10 and all(len(folds) == 1 for folds in folds_of_speaker.values())


def test_a_csv_corpus_is_named_after_its_folder_or_data_corpus_name_and_its_speakers_after_both(tmp_path):
    manifests = {
        name: csv_tree(tmp_path / name, ["path", "speaker", "arousal", "fold"]) for name in ("ravdess", "cremad")
    }
    corpus_of = {name: ["data=csv", f"data.manifest={path}", "data.fold=1"] for name, path in manifests.items()}
    corpora = {name: load_corpus(data_config(overrides)) for name, overrides in corpus_of.items()}
    assert [corpus.name for corpus in corpora.values()] == ["ravdess", "cremad"]
    # Both name their speakers s0…s5: different people, whose recorded keys differ.
    keys = {name: corpus.speaker_keys(corpus.splits.all) for name, corpus in corpora.items()}
    assert len(keys["ravdess"]) == len(keys["cremad"]) == 6 and not keys["ravdess"] & keys["cremad"]
    named = ["experiment=demo", *corpus_of["cremad"], "data.corpus_name=CREMA-D"]
    check_config(compose_config(named))  # a key the config checks know
    assert load_corpus(DataSettings.of(compose_config(named).data)).name == "CREMA-D"


def test_speakers_a_corpus_does_not_know_are_no_one():
    corpus = Corpus("MSP-Podcast", Splits([], [], []), LabelScale(1.0, 7.0))
    items = [Item(str(n), Path(f"{n}.wav"), speaker, (4.0,) * 3) for n, speaker in enumerate(["Unknown", "", "12"])]
    assert len(corpus.speaker_keys(items)) == 1  # MSP-Podcast's Unknown is not one speaker in every split


def test_every_item_of_a_cross_validated_corpus_is_read_without_a_fold_and_only_then(iemocap, tmp_path):
    root, _ = iemocap
    demo = data_config(["data=demo", "data.fold=null"])
    assert config_problems(demo, whole=True) == [] and "data.fold=None: the demo corpus" in config_problems(demo)[0]
    cfg = data_config(["data=iemocap", f"data.root={root}", "data.fold=null"])
    assert len(load_corpus(cfg, whole=True).splits.all) == 30
    with pytest.raises(ValueError, match=r"data.fold=None: IEMOCAP has folds 1–5"):
        load_corpus(cfg)  # training, or one split of it, needs its test fold
    for columns in (
        ["path", "speaker", "arousal", "fold"],
        ["path", "speaker", "arousal"],
    ):  # fold column, speaker folds
        manifest = csv_tree(tmp_path / str(len(columns)), columns)
        cfg = data_config(["data=csv", f"data.manifest={manifest}", "data.fold=null"])
        assert len(load_corpus(cfg, whole=True).splits.all) == 12
        with pytest.raises(ValueError, match=r"data.fold=None: data.manifest=.* has folds 1–\d.*pick the test fold"):
            load_corpus(cfg)


def test_a_manifest_missing_columns_names_them(tmp_path):
    manifest = csv_tree(tmp_path, ["path", "arousal"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['speaker'\].*needs path, speaker"):
        load_corpus(data_config(["data=csv", f"data.manifest={manifest}"]))


@pytest.mark.slow
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
