"""Secrets stay out of what a job writes; manifests cannot reach outside their corpus."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from emotion.data.corpora import load_corpus
from emotion.data.manifest import read_manifest
from emotion.data.scan import BadItemsError, scan_items, usable_corpus
from emotion.logger import REDACTED, redact_secrets
from emotion.prediction import read_inputs
from tests.conftest import SMALL_DEMO, csv_job, data_settings, run_train
from tests.trees import csv_tree


def test_secret_looking_keys_and_secret_values_are_redacted():
    config = {"logger": {"api_key": "k1", "project": "emotion"}, "x": ["s3cr3t", 3], "hf_token": None, "y": "a=s3cr3t"}
    assert redact_secrets(config, secrets={"s3cr3t"}) == {
        "logger": {"api_key": REDACTED, "project": "emotion"},
        "x": [REDACTED, 3],
        "hf_token": REDACTED,
        "y": f"a={REDACTED}",
    }


@pytest.mark.slow
def test_an_api_key_in_the_environment_appears_in_no_file_of_the_job(cache_dir, tmp_path, monkeypatch):
    secret = "0123456789abcdef-not-a-real-key-4f2c"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    out = tmp_path / "job"
    run_train(
        [
            "experiment=demo",
            "trainer.max_epochs=1",
            "logger=wandb",
            *SMALL_DEMO,
            f"hydra.run.dir={out}",
            "+notes.reminder=${oc.env:WANDB_API_KEY}",
        ],  # a config that pulls the key in on purpose
        cache_dir,
    )
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files)
    assert not [path for path in files if secret.encode() in path.read_bytes()]


def test_manifest_paths_leading_outside_the_corpus_are_reported_together_and_never_read(tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "fold"])
    (tmp_path / "outside.wav").write_bytes(b"not read")
    with open(manifest, "a", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["../../etc/passwd", "s9", "3.0", "1"], ["../outside.wav", "s9", "3.0", "1"]])
    cfg = data_settings(["experiment=demo", "data=csv", f"data.manifest={manifest}", "data.fold=1"])
    with pytest.raises(BadItemsError) as error:
        usable_corpus(load_corpus(cfg), cfg, tmp_path)
    message = str(error.value)
    assert "2 of 14 utterances cannot be used" in message
    assert "line 14: path='../../etc/passwd' leads outside the corpus folder" in message
    assert "line 15: path='../outside.wav' leads outside the corpus folder" in message

    cfg = replace(cfg, on_bad_audio="skip")
    corpus, durations = usable_corpus(load_corpus(cfg), cfg, tmp_path)
    assert len(corpus.splits.all) == 12 and all(item.path.is_relative_to(manifest.parent) for item in corpus.splits.all)
    with open(tmp_path / "skipped_items.csv", newline="") as f:
        assert [row["id"] for row in csv.DictReader(f)] == ["passwd", "outside"]


def test_a_prediction_manifest_treats_paths_leading_outside_its_folder_as_training_does(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    sf.write(folder / "inside.wav", np.zeros(16000), 16000)
    (tmp_path / "outside.wav").write_bytes(b"not audio: an unreadable file if it were read")
    manifest = folder / "manifest.csv"
    paths = ["inside.wav", "../outside.wav", str(tmp_path / "outside.wav"), "sub/../inside.wav"]
    manifest.write_text("id,path,speaker,arousal\n" + "".join(f"u{i},{path},s1,3.0\n" for i, path in enumerate(paths)))

    items = read_inputs(manifest)
    durations, problems = scan_items(items, lambda item: (), min_seconds=0.5)
    assert sorted(durations) == ["inside.wav", "sub/../inside.wav"]
    reasons = {problem.item.id: problem.reason for problem in problems}
    assert list(reasons) == paths[1:3]
    assert reasons["../outside.wav"].startswith("line 3: path='../outside.wav' leads outside the corpus folder")
    # The very paths and reasons training's reader gives for the same rows.
    training_items, _ = read_manifest(manifest)
    assert [(item.path, item.unusable) for item in items] == [(item.path, item.unusable) for item in training_items]


@pytest.mark.slow
def test_ids_that_look_like_paths_write_nothing_outside_the_job(cache_dir, tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "fold"], n_speakers=6, per_speaker=2)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", *rows[0]])
        writer.writeheader()
        writer.writerows({"id": f"../../escaped_{i}", **row} for i, row in enumerate(rows))
    before = {path for path in tmp_path.rglob("*")}
    out = tmp_path / "job"
    run_train(csv_job(manifest, out), cache_dir)
    new = {path for path in tmp_path.rglob("*")} - before
    assert new and all(path.is_relative_to(out) for path in new)
    assert not list(tmp_path.parent.glob("escaped_*"))
