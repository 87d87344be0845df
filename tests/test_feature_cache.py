"""A frozen encoder's states are computed once, found again by any job that shares them, and read back as
the encoder would have computed them."""

from __future__ import annotations

import json
import threading
import time
from contextlib import nullcontext

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion.data.audio import load_audio
from emotion.data.corpus import Item
from emotion.features.acoustic import CONTOURS
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.dataset import UtteranceDataset, collate
from emotion.features.encoder_cache import FeatureCacheError, Piece, ensure_features
from emotion.files import locked
from emotion.models.encoder import SpeechEncoder, load_wavlm
from emotion.settings import EncoderSettings
from emotion.training.devices import autocast as precision_context
from tests.conftest import compose_config, csv_job, run_train
from tests.trees import long_csv_tree, speech

SR = 16000


def frozen_encoder(layers=(3, 6, 9, 12), seed=0) -> SpeechEncoder:
    cfg = compose_config(["encoder=tiny", "encoder.random_init.num_hidden_layers=12"]).encoder
    torch.manual_seed(seed)
    options = {"freeze": True, "freeze_feature_encoder": True, "normalize_waveform": True, "pretrained": False}
    return SpeechEncoder(load_wavlm(EncoderSettings.of(cfg)), list(layers), **options).eval()


def utterances(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    pieces = {}
    for seed in range(count):
        path = folder / f"{seed}.wav"
        sf.write(path, speech(seed)[0], SR)
        pieces[Piece(path)] = sf.info(path).frames
    return pieces


def ensure(encoder, pieces, cache, max_gb=1.0, autocast=None):
    return ensure_features(
        encoder,
        pieces,
        cache,
        SR,
        device=torch.device("cpu"),
        autocast=autocast or nullcontext(),
        batch_size=2,
        workers=0,
        max_gb=max_gb,
    )


def test_entries_hold_the_encoders_hidden_states_in_float16(tmp_path):
    pieces = utterances(tmp_path / "audio", 3)
    encoder = frozen_encoder()
    store = ensure(encoder, pieces, tmp_path / "cache")
    for piece in pieces:
        wave = torch.from_numpy(load_audio(piece.path, SR))[None]
        with torch.no_grad():
            expected = encoder.hidden_states(wave, torch.tensor([wave.shape[1]]))[0]  # (frames, layers, hidden)
        states = store.read(piece)
        assert states.dtype == np.float16 and states.shape == expected.shape
        torch.testing.assert_close(torch.from_numpy(states).float(), expected, rtol=2e-3, atol=2e-3)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_later_job_computes_nothing_and_a_superset_of_layers_serves_a_subset(tmp_path, monkeypatch):
    pieces = utterances(tmp_path / "audio", 3)
    first = ensure(frozen_encoder((3, 6, 9, 12)), pieces, tmp_path / "cache")

    def fail(*_):
        raise AssertionError("recomputed cached states")

    monkeypatch.setattr("emotion.features.encoder_cache._compute", fail)
    subset = ensure(frozen_encoder((12, 6)), pieces, tmp_path / "cache")
    assert subset.dir == first.dir
    piece = next(iter(pieces))
    np.testing.assert_array_equal(subset.read(piece), first.read(piece)[:, [3, 1]])


def test_other_weights_or_input_handling_get_their_own_entries(tmp_path):
    pieces = utterances(tmp_path / "audio", 1)
    base = ensure(frozen_encoder(), pieces, tmp_path / "cache").dir
    assert ensure(frozen_encoder(seed=1), pieces, tmp_path / "cache").dir != base
    raw = frozen_encoder()
    raw.normalize_waveform = False
    assert ensure(raw, pieces, tmp_path / "cache").dir != base


def test_states_computed_in_one_precision_are_never_read_for_another(tmp_path, monkeypatch):
    pieces, cpu = utterances(tmp_path / "audio", 2), torch.device("cpu")
    encoder = frozen_encoder()
    fp32 = ensure(encoder, pieces, tmp_path / "cache", autocast=precision_context(cpu, "fp32"))
    bf16 = ensure(encoder, pieces, tmp_path / "cache", autocast=precision_context(cpu, "bf16"))
    assert bf16.dir != fp32.dir
    piece = next(iter(pieces))
    assert not np.array_equal(bf16.read(piece), fp32.read(piece))  # what reading the other's states would change

    def fail(*_):
        raise AssertionError("recomputed cached states")

    monkeypatch.setattr("emotion.features.encoder_cache._compute", fail)
    for precision, store in (("fp32", fp32), ("bf16", bf16)):  # each finds its own entries again, whichever came first
        assert ensure(encoder, pieces, tmp_path / "cache", autocast=precision_context(cpu, precision)).dir == store.dir


def test_the_size_limit_stops_before_any_work_with_the_key_to_change(tmp_path):
    pieces = utterances(tmp_path / "audio", 2)
    with pytest.raises(FeatureCacheError, match=r"encoder\.feature_cache_max_gb=1e-06.*would grow to"):
        ensure(frozen_encoder(), pieces, tmp_path / "cache", max_gb=1e-6)
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_a_second_builder_waits_for_the_first_and_then_finds_its_entries(tmp_path):
    pieces = utterances(tmp_path / "audio", 2)
    encoder = frozen_encoder()
    store = ensure(encoder, {}, tmp_path / "cache")  # creates the encoder's folder, computes nothing
    results = []
    with locked(store.dir / ".build.lock"):  # another job is building
        waiter = threading.Thread(target=lambda: results.append(ensure(encoder, pieces, tmp_path / "cache")))
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not list(store.dir.rglob("*.npy"))
    waiter.join(timeout=60)
    assert len(list(store.dir.rglob("*.npy"))) == len(pieces) * len(encoder.layers)
    assert results[0].read(next(iter(pieces))).shape[1:] == (4, encoder.hidden_size)


def test_cached_training_crops_are_taken_in_frame_space_with_matching_contours(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate([speech(seed)[0] for seed in range(3)]), SR)
    encoder = frozen_encoder()
    store = ensure(encoder, {Piece(path): sf.info(path).frames}, tmp_path / "cache")
    prosody = AcousticCache(tmp_path / "cache", SR, encoder.grid, [CONTOURS]).ensure([path], workers=1)[path]
    item = Item(id="long", path=path, speaker="x", labels=(1.0, 3.0, 5.0), fold=1)
    dataset = UtteranceDataset(
        [item], [sf.info(path).duration], [prosody], None, encoder.grid, SR, 60.0, 1.0, features=store
    )
    whole, contours, crop_frames = store.read(Piece(path)), prosody.read_frames(), encoder.grid.count(SR)
    firsts = set()
    for epoch in range(5):
        dataset.set_epoch(epoch)
        example = dataset[0]
        assert example["speech"].shape == (crop_frames, 4, encoder.hidden_size)
        first = next(f for f in range(len(whole) - crop_frames + 1) if np.array_equal(whole[f], example["speech"][0]))
        np.testing.assert_array_equal(example["speech"], whole[first : first + crop_frames])
        np.testing.assert_array_equal(example["prosody"], contours[first : first + crop_frames])
        firsts.add(first)
    assert len(firsts) > 1  # crops move between epochs


def test_a_frozen_encoders_training_crop_is_the_same_with_and_without_the_cache(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate([speech(seed)[0] for seed in range(3)]), SR)
    encoder = frozen_encoder()
    store = ensure(encoder, {Piece(path): sf.info(path).frames}, tmp_path / "cache")
    prosody = AcousticCache(tmp_path / "cache", SR, encoder.grid, [CONTOURS]).ensure([path], workers=1)[path]
    item = Item(id="long", path=path, speaker="x", labels=(1.0, 3.0, 5.0), fold=1)

    def dataset(**how):
        return UtteranceDataset([item], [sf.info(path).duration], [prosody], None, encoder.grid, SR, 60.0, 1.0, **how)

    cached, live = dataset(features=store), dataset(crop_after_encoding=True)
    for epoch in range(3):
        cached.set_epoch(epoch)
        live.set_epoch(epoch)
        from_cache, computed = collate([cached[0]]), collate([live[0]])
        assert computed.speech.shape[1] == sf.info(path).frames  # the whole wave, cropped after encoding
        with torch.no_grad():
            expected, _ = encoder(from_cache.speech, from_cache.speech_lengths)
            actual, mask = encoder(computed.speech, computed.speech_lengths, computed.crop)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
        assert mask.all() and torch.equal(computed.prosody, from_cache.prosody)


@pytest.mark.slow
def test_a_cached_and_an_uncached_frozen_run_on_long_utterances_give_the_same_scores(tmp_path, cache_dir):
    """8 s utterances are cropped for training; 25 s ones are also chunked. (The defaults' 12 s crops and
    60 s chunks, with 20 s and 70 s utterances, agree as well, in four minutes rather than one.)"""
    manifest = long_csv_tree(tmp_path / "corpus", seconds=(8.0, 25.0))
    shorter = ["data.max_seconds=4", "data.eval_chunk_seconds=20", "trainer.max_epochs=2"]
    for cached in ("true", "false"):
        run_train(csv_job(manifest, tmp_path / cached, *shorter, f"encoder.feature_cache={cached}"), cache_dir)
    metrics = {cached: json.loads((tmp_path / cached / "metrics.json").read_text()) for cached in ("true", "false")}
    for split in ("test", "val_best"):
        for key, value in metrics["false"][split].items():
            assert metrics["true"][split][key] == pytest.approx(value, abs=1e-4), (split, key)
    assert list((cache_dir / "features").rglob("*@*.L24.npy"))  # chunks of the 70 s utterances were cached
