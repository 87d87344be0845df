"""The model's parts: layer selection, EMA state, pooling, padding, and the assembled Mamba-EMA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import WavLMModel

from emotion.features.acoustic import EGEMAPS_FUNCTIONALS, frame_feature_count
from emotion.features.normalisation import AcousticStatistics, Moments
from emotion.models.augment import mask_frames, time_spans
from emotion.models.ema import EMAState
from emotion.models.encoder import EncoderNotFoundError, SpeechEncoder, frame_grid, load_wavlm
from emotion.models.heads import AttentivePooling
from emotion.models.model import MambaEMA
from emotion.settings import EncoderSettings
from tests.conftest import compose_config, untrained_model

DIMENSIONS = ("arousal", "valence", "dominance")


def tiny_wavlm(layers=24) -> WavLMModel:
    cfg = compose_config(["encoder=tiny", f"encoder.random_init.num_hidden_layers={layers}"]).encoder
    torch.manual_seed(0)
    return load_wavlm(EncoderSettings.of(cfg)).eval()


def sequential_ema(u: torch.Tensor, mask: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """c_t = α c_{t-1} + (1 - α) u_t on valid frames, c_t = c_{t-1} on padded ones, c_0 = 0."""
    state = torch.zeros(u.shape[0], u.shape[2])
    for t in range(u.shape[1]):
        step = alpha * state + (1 - alpha) * u[:, t]
        state = torch.where(mask[:, t, None], step, state)
    return state


def test_ema_state_equals_the_recurrence_with_masked_frames_skipped():
    torch.manual_seed(0)
    ema = EMAState(d_in=6, d_state=5)
    with torch.no_grad():
        ema.alpha_logit.copy_(torch.linspace(-1.0, 2.0, 5))
    frames = torch.randn(3, 9, 6)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False  # trailing padding
    mask[2, [0, 4, 5]] = False  # holes anywhere are skipped too
    expected = sequential_ema(ema.proj(frames), mask, ema.alpha)
    torch.testing.assert_close(ema(frames, mask), expected, rtol=1e-5, atol=1e-6)


def test_padded_frames_change_neither_the_ema_state_nor_the_pooled_vector():
    torch.manual_seed(0)
    ema, pool = EMAState(8, 4), AttentivePooling(8)
    frames = torch.randn(1, 10, 8)
    padded = torch.cat([frames, 100 * torch.randn(1, 5, 8)], dim=1)
    mask = torch.arange(15)[None] < 10
    torch.testing.assert_close(ema(padded, mask), ema(frames, torch.ones(1, 10, dtype=torch.bool)))
    torch.testing.assert_close(pool(padded, mask), pool(frames, torch.ones(1, 10, dtype=torch.bool)))


def test_alpha_starts_at_the_configured_value_and_can_be_fixed():
    assert torch.allclose(EMAState(4, 3, alpha_init=0.8).alpha, torch.full((3,), 0.8))
    assert not EMAState(4, 3, learn_alpha=False).alpha_logit.requires_grad


def encoder_for(layers, wavlm=None, **kwargs) -> SpeechEncoder:
    options = {"freeze": False, "freeze_feature_encoder": True, "normalize_waveform": True, "pretrained": False}
    return SpeechEncoder(wavlm or tiny_wavlm(), layers, **{**options, **kwargs})


def test_speech_encoder_layers_pick_the_intended_hidden_states():
    wavlm = tiny_wavlm()
    encoder = encoder_for([3, 12, 24], wavlm).eval()
    waves, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    with torch.no_grad():
        hidden = wavlm(encoder_standardised(waves), output_hidden_states=True).hidden_states
        encoder.layer_logits.copy_(torch.tensor([0.0, 30.0, 0.0]))  # softmax ≈ one-hot on layer 12
        frames, _ = encoder(waves, lengths)
        torch.testing.assert_close(frames, hidden[12], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(hidden[12], hidden[24], atol=1e-2)
        encoder.layer_logits.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
        frames, _ = encoder(waves, lengths)
        torch.testing.assert_close(frames, 0.2 * hidden[3] + 0.3 * hidden[12] + 0.5 * hidden[24], rtol=1e-4, atol=1e-4)


def encoder_standardised(waves: torch.Tensor) -> torch.Tensor:
    return (waves - waves.mean(1, keepdim=True)) / waves.std(1, unbiased=False, keepdim=True)


@pytest.mark.parametrize("layers", [[25], [-1], []])
def test_layer_indices_outside_the_encoder_are_refused_with_the_valid_range(layers):
    with pytest.raises(ValueError, match=r"speech_encoder_layers=.*hidden states 0–24"):
        encoder_for(layers, tiny_wavlm())


def test_frame_grid_predicts_wavlm_frame_counts():
    wavlm = tiny_wavlm(layers=1)
    grid = frame_grid(wavlm.config)
    assert (grid.window, grid.hop) == (400, 320)
    for n_samples in (400, 401, 719, 720, 16000, 16321):
        with torch.no_grad():
            frames = wavlm(torch.randn(1, n_samples)).last_hidden_state.shape[1]
        assert grid.count(n_samples) == frames


def test_missing_pretrained_weights_name_the_source_the_cache_and_hf_hub_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = OmegaConf.merge(compose_config().encoder, {"source": str(tmp_path / "no-such-model")})
    with pytest.raises(EncoderNotFoundError, match=r"no-such-model.*Hugging Face cache.*HF_HUB_OFFLINE=1"):
        load_wavlm(EncoderSettings.of(cfg))


def demo_model(overrides=()) -> MambaEMA:
    small = ["model.d_hidden=32", "model.d_state=8", "model.d_prosody_out=8"]
    cfg = compose_config(["experiment=demo", *small, *overrides])
    torch.manual_seed(0)
    return untrained_model(cfg, DIMENSIONS)


def random_statistics(model: MambaEMA, seed: int = 0) -> AcousticStatistics:
    """Statistics far from the identity, so that standardisation is part of what is tested."""
    rng = np.random.default_rng(seed)

    def moments(n):
        return Moments(rng.normal(0, 5, n).astype(np.float32), rng.uniform(0.5, 20, n).astype(np.float32))

    return AcousticStatistics(moments(len(model.prosody_norm.mean)), moments(EGEMAPS_FUNCTIONALS))


@pytest.mark.parametrize("acoustic", ["egemaps", "contours", "both"])
def test_an_utterance_gets_the_same_prediction_alone_and_in_a_padded_batch(acoustic):
    model = demo_model([f"model.acoustic={acoustic}"]).eval()
    model.set_acoustic_statistics(random_statistics(model))
    grid = model.encoder.grid
    short, long = torch.randn(16000), torch.randn(24000)
    n_features = frame_feature_count(acoustic)
    short_frames = 10 * torch.randn(grid.count(16000), n_features)
    long_frames = 10 * torch.randn(grid.count(24000), n_features)
    functionals = 10 * torch.randn(2, EGEMAPS_FUNCTIONALS)
    waves = torch.stack([torch.cat([short, torch.zeros(8000)]), long])
    pad_frames = torch.zeros(len(long_frames) - len(short_frames), n_features)
    prosody = torch.stack([torch.cat([short_frames, pad_frames]), long_frames])
    with torch.no_grad():
        together = model(waves, torch.tensor([16000, 24000]), prosody, functionals=functionals)
        alone = model(short[None], torch.tensor([16000]), short_frames[None], functionals=functionals[:1])
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-4, atol=1e-4)


def test_acoustic_inputs_are_standardised_with_the_statistics_the_model_keeps():
    model = demo_model().eval()
    stats = random_statistics(model)
    model.set_acoustic_statistics(stats)
    frames = torch.randn(1, 5, len(stats.frames.mean))
    expected = (frames - torch.from_numpy(stats.frames.mean)) / torch.from_numpy(stats.frames.std)
    torch.testing.assert_close(model.prosody_norm(frames), expected)
    assert torch.equal(model.state_dict()["functionals_norm.std"], torch.from_numpy(stats.functionals.std))
    nan = torch.full((1, EGEMAPS_FUNCTIONALS), float("nan"))
    assert torch.equal(model.functionals_norm(nan), torch.zeros(1, EGEMAPS_FUNCTIONALS))  # not computable: the mean


def test_evaluation_keeps_predictions_within_the_label_scale():
    model = demo_model()
    with torch.no_grad():
        for head in model.heads.values():
            head[-1].bias.fill_(3.0)  # far above the top of the scale
        model.heads["valence"][-1].bias.fill_(-3.0)  # and far below its bottom
    waves, lengths = torch.randn(2, 16000), torch.tensor([16000, 12000])
    prosody = torch.randn(2, model.encoder.grid.count(16000), len(model.prosody_norm.mean))
    functionals = torch.randn(2, EGEMAPS_FUNCTIONALS)
    with torch.no_grad():
        raw = model.train()(waves, lengths, prosody, functionals=functionals)
        bounded = model.eval()(waves, lengths, prosody, functionals=functionals)
    assert raw[:, 0].min() > 1.0 and raw[:, 1].max() < 0.0  # training sees the heads' own output
    assert torch.equal(bounded[:, [0, 2]], torch.ones(2, 2)) and torch.equal(bounded[:, 1], torch.zeros(2))


def test_frozen_encoder_gets_no_gradients_and_stays_in_eval_mode():
    model = demo_model(["encoder.freeze=true"]).train()
    assert not model.encoder.wavlm.training
    assert all(not p.requires_grad for p in model.encoder.wavlm.parameters())
    assert model.encoder.layer_logits.requires_grad  # the mix of layers is still learned


def test_fine_tuning_keeps_the_convolutional_front_end_fixed():
    model = demo_model(["encoder.freeze=false"])
    assert all(not p.requires_grad for p in model.encoder.wavlm.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.encoder.wavlm.encoder.parameters())


def test_checkpoints_leave_out_frozen_pretrained_weights_and_load_back():
    model = demo_model(["encoder.freeze=true"])
    model.encoder.restored_from_source = True  # as if loaded from the hub
    state = model.checkpoint_state()
    assert state and not any(key.startswith("encoder.wavlm.") for key in state)
    assert "encoder.layer_logits" in state
    fresh = demo_model(["encoder.freeze=true", "trainer.seed=1"])
    fresh.encoder.restored_from_source = True
    fresh.load_checkpoint_state(state)
    torch.testing.assert_close(fresh.heads["valence"][0].weight, model.heads["valence"][0].weight)
    with pytest.raises(RuntimeError, match="does not fit"):
        fresh.load_checkpoint_state({**state, "stray.weight": torch.zeros(1)})


def test_a_group_norm_encoder_gives_the_same_frames_alone_and_padded():
    cfg = compose_config(
        [
            "encoder=tiny",
            "encoder.random_init.feat_extract_norm=group",
            "encoder.random_init.do_stable_layer_norm=false",
        ]
    ).encoder
    torch.manual_seed(0)
    encoder = encoder_for([6, 24], load_wavlm(EncoderSettings.of(cfg))).eval()
    short, long = torch.randn(16000), torch.randn(24000)
    with torch.no_grad():
        together, mask = encoder(
            torch.stack([torch.cat([short, torch.zeros(8000)]), long]), torch.tensor([16000, 24000])
        )
        alone, _ = encoder(short[None], torch.tensor([16000]))
    n = alone.shape[1]
    assert mask[0].sum() == n
    torch.testing.assert_close(together[0, :n], alone[0], rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_recomputes_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = demo_model(["encoder.freeze=false", f"model.grad_checkpointing={checkpointing}"]).train()
        assert model.encoder.wavlm.is_gradient_checkpointing == checkpointing
        torch.manual_seed(1)
        waves, prosody = torch.randn(2, 16000), torch.randn(2, 49, len(model.prosody_norm.mean))
        model(
            waves, torch.tensor([16000, 12000]), prosody, functionals=torch.randn(2, EGEMAPS_FUNCTIONALS)
        ).sum().backward()
        grads.append(model.encoder.wavlm.encoder.layers[3].attention.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_time_masks_hide_about_their_share_of_valid_frames_in_spans_of_their_width():
    torch.manual_seed(0)
    mask = torch.ones(64, 500, dtype=torch.bool)
    mask[:, 400:] = False  # padding is never hidden
    hidden = time_spans(mask, ratio=0.2, width=5)
    assert not hidden[:, 400:].any()
    share = hidden[:, :400].float().mean().item()
    assert 0.15 < share < 0.2  # overlapping spans hide a little less than the ratio
    runs = torch.diff(hidden[:, :400].int(), dim=1)
    starts, ends = (runs == 1).sum().item(), (runs == -1).sum().item()
    assert hidden[:, :400].sum().item() / max(starts, ends) >= 5  # spans, not scattered frames


def test_masking_zeroes_the_same_time_spans_in_every_stream_and_whole_channels_of_each():
    torch.manual_seed(0)
    mask = torch.ones(8, 200, dtype=torch.bool)
    encoder_states, acoustic = torch.randn(8, 200, 64) + 5, torch.randn(8, 200, 25) + 5  # no zeros of their own
    masked_states, masked_acoustic = mask_frames([encoder_states, acoustic], mask, 0.2, 5, 0.0)
    zero_frames = (masked_states == 0).all(-1)
    assert zero_frames.any() and torch.equal(zero_frames, (masked_acoustic == 0).all(-1))
    (only_channels,) = mask_frames([encoder_states], mask, 0.0, 5, 0.3)
    zero_channels = (only_channels == 0).all(dim=1)  # (B, channels) zero on every frame
    assert torch.equal(zero_channels, (only_channels == 0).any(dim=1))  # a channel is hidden wholly or not at all
    assert 0.2 < zero_channels.float().mean() < 0.4


def test_masking_and_dropout_act_in_training_only():
    model = demo_model(["model.time_mask_ratio=0.5", "model.feature_mask_ratio=0.5"])
    waves, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    prosody = torch.randn(2, model.encoder.grid.count(16000), len(model.prosody_norm.mean))
    functionals = torch.randn(2, EGEMAPS_FUNCTIONALS)
    with torch.no_grad():
        evaluated = [model.eval()(waves, lengths, prosody, functionals=functionals) for _ in range(2)]
        trained = [model.train()(waves, lengths, prosody, functionals=functionals) for _ in range(2)]
    assert torch.equal(evaluated[0], evaluated[1])
    assert not torch.allclose(trained[0], trained[1])
