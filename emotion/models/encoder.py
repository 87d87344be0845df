"""The speech encoder: WavLM from `transformers`, a learned softmax mix of chosen hidden states."""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WavLMConfig, WavLMModel

from emotion.models.grid import FrameGrid
from emotion.settings import EncoderSettings

log = logging.getLogger(__name__)

# A frozen encoder's hidden states are kept in float16, on disk (the feature cache) and when computed live.
STATES_DTYPE = torch.float16

# transformers' WavLM attention passes a boolean padding mask beside a float position bias; torch warns
# on every process's first batch about a deprecation that is theirs to fix, not the user's.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask", category=UserWarning)


class EncoderNotFoundError(RuntimeError):
    pass


def load_wavlm(encoder: EncoderSettings) -> WavLMModel:
    """WavLM from a hub id or local directory (`encoder.source`), or random-init from `encoder.random_init`."""
    # Layer drop skips whole layers in training, which would shift which hidden state an index names.
    overrides = {"layerdrop": 0.0, "mask_time_prob": encoder.mask_time_prob}
    if encoder.source is None:
        config = WavLMConfig(**encoder.random_init, **overrides)
        log.warning(
            "encoder=%s: randomly initialised WavLM (%d layers, hidden %d), no pretrained weights; "
            "fine for checking the pipeline, not for results.",
            encoder.name,
            config.num_hidden_layers,
            config.hidden_size,
        )
        return WavLMModel(config)
    try:
        return WavLMModel.from_pretrained(encoder.source, **overrides)
    except (OSError, ValueError) as err:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise EncoderNotFoundError(
            f"encoder.source={encoder.source!r}: no WavLM weights found, neither as a local directory nor in the "
            f"Hugging Face cache ({HF_HUB_CACHE}; HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). "
            f"Fetch them once on a machine with network access (`hf download {encoder.source}`, "
            "then copy the cache), or set encoder.source to a local directory holding config.json and the "
            f"weights. ({err.__class__.__name__}: {err})"
        ) from err


def frame_grid(config: WavLMConfig) -> FrameGrid:
    """Receptive field and hop of WavLM's convolutional feature extractor (400 and 320 samples for WavLM)."""
    window, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        window += (kernel - 1) * hop
        hop *= stride
    return FrameGrid(window=window, hop=hop)


class SpeechEncoder(nn.Module):
    """WavLM hidden states at `layers` (0 = feature projection, N = last layer), mixed by learned softmax weights."""

    def __init__(
        self,
        wavlm: WavLMModel,
        layers: list[int],
        *,
        freeze: bool,
        freeze_feature_encoder: bool,
        normalize_waveform: bool,
        pretrained: bool,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        depth = wavlm.config.num_hidden_layers
        bad = [layer for layer in layers if not 0 <= layer <= depth]
        if bad or not layers:
            raise ValueError(
                f"model.speech_encoder_layers={list(layers)}: this encoder has hidden states 0–{depth} "
                f"(0 = feature projection, {depth} = last layer); choose indices in that range."
            )
        self.wavlm = wavlm
        self.layers = list(layers)
        self.layer_logits = nn.Parameter(torch.zeros(len(layers)))
        self.frozen = freeze
        self.normalize_waveform = normalize_waveform
        # Frozen pretrained weights are reloaded from their source, so checkpoints need not carry them.
        self.restored_from_source = pretrained and freeze
        self.grid = frame_grid(wavlm.config)
        if freeze:
            wavlm.requires_grad_(False)
        elif freeze_feature_encoder:
            wavlm.freeze_feature_encoder()
        if grad_checkpointing and not freeze:
            # Recompute each transformer layer in the backward pass instead of keeping its activations.
            # transformers 5 renamed the method; 4.x has only the old name.
            getattr(wavlm, "activation_checkpointing_enable", wavlm.gradient_checkpointing_enable)()

    @property
    def hidden_size(self) -> int:
        return self.wavlm.config.hidden_size

    def train(self, mode: bool = True) -> SpeechEncoder:
        super().train(mode)
        if self.frozen:
            self.wavlm.eval()  # no dropout in a frozen encoder
        return self

    def frame_lengths(self, wave_lengths: torch.Tensor) -> torch.Tensor:
        return ((wave_lengths - self.grid.window) // self.grid.hop + 1).clamp(min=0)

    def forward(
        self, speech: torch.Tensor, lengths: torch.Tensor, crop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded waves (B, samples) with their lengths in samples, or the chosen hidden states read from
        the feature cache (B, frames, layers, hidden) with their lengths in frames → frames (B, T, hidden)
        and frame mask (B, T). `crop` (B, 2): of each row, keep the frames [first, first + count) of the
        states of the whole wave (a frozen encoder's training crop)."""
        if speech.dim() == 2:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                chosen = self.hidden_states(speech, lengths)
            lengths = self.frame_lengths(lengths)
            if self.frozen:  # rounded as the feature cache keeps them: the cache changes nothing but speed
                chosen = chosen.to(STATES_DTYPE).float()
            if crop is not None:
                chosen, lengths = crop_frames(chosen, crop)
        else:
            chosen = speech.float()  # stored as float16; under autocast the mix runs in its precision
        weights = torch.softmax(self.layer_logits, dim=0).to(chosen.dtype)
        frames = torch.einsum("k,btkh->bth", weights, chosen)
        frame_mask = torch.arange(frames.shape[1], device=frames.device) < lengths[:, None]
        return frames, frame_mask

    def hidden_states(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> torch.Tensor:
        """The hidden states at `layers` of zero-padded waves: (B, frames, layers, hidden)."""
        sample_mask = torch.arange(waves.shape[1], device=waves.device) < wave_lengths[:, None]
        if self.normalize_waveform:
            waves = _standardise(waves, sample_mask)
        if self.wavlm.config.feat_extract_norm != "group":
            hidden = self.wavlm(waves, attention_mask=sample_mask, output_hidden_states=True).hidden_states
            return torch.stack([hidden[layer] for layer in self.layers], dim=2)
        # Group norm in the first convolution (WavLM-Base+) normalises over the padded length too, so a
        # padded utterance would come out different: run each one alone, then pad the frames.
        n_frames = self.grid.count(waves.shape[1])
        per_utterance = []
        for wave, length in zip(waves, wave_lengths.tolist(), strict=True):
            hidden = self.wavlm(wave[None, :length], output_hidden_states=True).hidden_states
            chosen = torch.stack([hidden[layer][0] for layer in self.layers], dim=1)  # (T_i, K, hidden)
            per_utterance.append(F.pad(chosen, (0, 0, 0, 0, 0, n_frames - chosen.shape[0])))
        return torch.stack(per_utterance)


def crop_frames(states: torch.Tensor, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [first, first + count) of each row of `states` (B, T, ...) for `crop` (B, 2) = (first, count),
    zero-padded to the longest count; and the counts."""
    first, count = crop[:, 0], crop[:, 1]
    steps = torch.arange(int(count.max()), device=states.device)
    index = (first[:, None] + steps).clamp(max=states.shape[1] - 1)  # clamped only where padding goes
    index = index.view(*index.shape, *[1] * (states.dim() - 2)).expand(-1, -1, *states.shape[2:])
    keep = (steps < count[:, None]).view(*index.shape[:2], *[1] * (states.dim() - 2))
    return states.gather(1, index) * keep, count


def _standardise(waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's own samples, as WavLM-Large's feature extractor does."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (waves * mask).sum(dim=1, keepdim=True) / count
    var = (((waves - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(var + 1e-7) * mask
