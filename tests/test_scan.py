"""Unusable items are all found before training, named in one message, or skipped and listed."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from emotion.data.corpora import load_corpus
from emotion.data.scan import BadItemsError, usable_corpus
from emotion.settings import DataSettings
from tests.conftest import compose_config, csv_job, run_train
from tests.trees import csv_tree

BAD_ROWS = {
    # id: (file contents or None for no file, label text, expected reason)
    "gone": (None, "3.0", "missing file"),
    "garbage": (b"RIFF....WAVEfmt not really audio", "3.0", "unreadable"),
    "silent": (np.zeros(0, dtype=np.float32), "3.0", "empty"),
    "blip": (np.zeros(800, dtype=np.float32), "3.0", "too short: 0.050 s"),
    "unrated": (np.zeros(16000, dtype=np.float32), "n/a", "label not a finite number: arousal=nan"),
}


def manifest_with_bad_items(root):
    manifest = csv_tree(root, ["path", "speaker", "arousal", "fold"], n_speakers=6, per_speaker=3)
    with open(manifest, "a", newline="") as f:
        writer = csv.writer(f)
        for index, (item_id, (content, label, _)) in enumerate(BAD_ROWS.items()):
            path = root / "audio" / f"{item_id}.wav"
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif content is not None:
                sf.write(path, content, 16000)
            writer.writerow([f"audio/{item_id}.wav", f"s{index}", label, index % 3 + 1])
    return manifest


def test_every_kind_of_unusable_item_is_named_in_one_error(tmp_path):
    manifest = manifest_with_bad_items(tmp_path / "corpus")
    cfg = DataSettings.of(compose_config(["data=csv", f"data.manifest={manifest}", "data.fold=1"]).data)
    with pytest.raises(BadItemsError) as error:
        usable_corpus(load_corpus(cfg), cfg, tmp_path)
    message = str(error.value)
    assert "5 of 23 utterances cannot be used" in message and "data.on_bad_audio=skip" in message
    for item_id, (_, _, reason) in BAD_ROWS.items():
        assert any(item_id in line and reason in line for line in message.splitlines()), item_id
    assert not (tmp_path / "skipped_items.csv").exists()


def test_skip_keeps_the_good_items_and_lists_the_others(tmp_path):
    manifest = manifest_with_bad_items(tmp_path / "corpus")
    cfg = DataSettings.of(
        compose_config(["data=csv", f"data.manifest={manifest}", "data.fold=1", "data.on_bad_audio=skip"]).data
    )
    corpus, durations = usable_corpus(load_corpus(cfg), cfg, tmp_path)
    kept = {item.id for item in corpus.splits.all}
    assert len(kept) == 18 and not kept & set(BAD_ROWS)
    assert set(durations) >= kept and all(1.0 <= durations[i] <= 4.0 for i in kept)
    with open(tmp_path / "skipped_items.csv", newline="") as f:
        assert {row["id"] for row in csv.DictReader(f)} == set(BAD_ROWS)


@pytest.mark.slow
def test_a_job_with_skip_trains_on_the_rest(cache_dir, tmp_path):
    manifest = manifest_with_bad_items(tmp_path / "corpus")
    out = tmp_path / "job"
    run_train(csv_job(manifest, out, "data.on_bad_audio=skip"), cache_dir)
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"
    with open(out / "predictions.csv", newline="") as f:
        predicted = {row["id"] for row in csv.DictReader(f)}
    assert len(predicted) == 6 and not predicted & set(BAD_ROWS)  # fold 1: two speakers × three items
    assert (out / "skipped_items.csv").is_file()
