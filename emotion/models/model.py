"""Mamba-EMA: WavLM layers + acoustic frames → Mamba blocks over frames → EMA state + attentive pooling,
joined with the utterance's acoustic functionals → A/V/D."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import WavLMConfig, WavLMModel

from emotion.models.acoustic import ProsodyEncoder, Standardise, functionals_encoder
from emotion.models.augment import mask_frames
from emotion.models.ema import EMAState
from emotion.models.encoder import SpeechEncoder, load_wavlm
from emotion.models.heads import AttentivePooling, regression_head
from emotion.models.mamba import ResidualMamba
from emotion.settings import EncoderSettings, ModelSettings


@dataclass(frozen=True)
class AcousticInputs:
    """How many acoustic values the model reads: per frame (the prosody branch) and per utterance (the
    functionals, when `model.functionals`). The features decide: emotion.features.acoustic."""

    per_frame: int
    per_utterance: int


class MambaEMA(nn.Module):
    def __init__(
        self, encoder: SpeechEncoder, dimensions: tuple[str, ...], settings: ModelSettings, acoustic: AcousticInputs
    ):
        super().__init__()
        self.encoder = encoder
        n_acoustic = acoustic.per_frame
        self.prosody_norm = Standardise(n_acoustic)
        self.prosody = ProsodyEncoder(n_acoustic, settings.d_prosody_out)
        self.masking = (settings.time_mask_ratio, settings.time_mask_width, settings.feature_mask_ratio)
        self.fuse = nn.Sequential(
            nn.Linear(encoder.hidden_size + settings.d_prosody_out, settings.d_hidden), nn.Dropout(settings.dropout)
        )
        self.blocks = nn.ModuleList(
            ResidualMamba(
                settings.d_hidden,
                d_state=settings.mamba_d_state,
                d_conv=settings.mamba_d_conv,
                expand=settings.mamba_expand,
                impl=settings.mamba_impl,
                dropout=settings.dropout,
            )
            for _ in range(settings.mamba_n_layers)
        )
        self.norm = nn.RMSNorm(settings.d_hidden)
        self.ema = EMAState(settings.d_hidden, settings.d_state, settings.ema_alpha_init, settings.ema_learn_alpha)
        self.pool = AttentivePooling(settings.d_hidden)
        d_summary = settings.d_hidden + settings.d_state
        if settings.functionals:
            self.functionals_norm = Standardise(acoustic.per_utterance)
            self.functionals = functionals_encoder(acoustic.per_utterance, settings.d_functionals_out, settings.dropout)
            d_summary += settings.d_functionals_out
        else:
            self.functionals = None
        self.summary_dropout = nn.Dropout(settings.dropout)
        self.heads = nn.ModuleDict(
            {dim: regression_head(d_summary, settings.d_hidden, settings.dropout) for dim in dimensions}
        )

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        prosody: torch.Tensor,
        crop: torch.Tensor | None = None,
        functionals: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Padded speech (waves or cached encoder states, see SpeechEncoder.forward; `crop` for a frozen
        encoder's training crops), acoustic frames (B, T, features) and, when the model uses them, the
        utterances' functionals (B, 88) → predictions (B, dimensions) on the label scale mapped to [0, 1],
        within it in evaluation."""
        return self.predict_from(self.embed(speech, speech_lengths, prosody, crop, functionals))

    def embed(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        prosody: torch.Tensor,
        crop: torch.Tensor | None = None,
        functionals: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled vector the heads read (B, d_hidden + d_state [+ d_functionals_out]); arguments as forward's."""
        frames, mask = self.encoder(speech, speech_lengths, crop)
        if prosody.shape[1] != frames.shape[1]:
            raise ValueError(f"{prosody.shape[1]} acoustic frames for {frames.shape[1]} encoder frames")
        prosody = self.prosody_norm(prosody)
        if self.training:
            frames, prosody = mask_frames([frames, prosody], mask, *self.masking)
        # The residual stream stays in float32 under autocast, as in mamba-ssm (residual_in_fp32).
        x = self.fuse(torch.cat([frames, self.prosody(prosody, mask).to(frames.dtype)], dim=-1)).float()
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        summary = [self.pool(x, mask), self.ema(x, mask).to(x.dtype)]
        if self.functionals is not None:
            if functionals is None:
                raise ValueError("this model joins the utterances' functionals (model.functionals=true): pass them")
            summary.append(self.functionals(self.functionals_norm(functionals)).to(x.dtype))
        return torch.cat(summary, dim=-1)

    def predict_from(self, summary: torch.Tensor) -> torch.Tensor:
        """The heads' predictions for pooled vectors from `embed`."""
        summary = self.summary_dropout(summary)
        predictions = torch.cat([head(summary) for head in self.heads.values()], dim=-1)
        # A prediction beyond the rating scale is never right, so evaluation clips to it. Training sees the
        # heads' raw output: with sigmoid heads (the seed's) the demo's valence varied far more across seeds
        # (test CCC-V std 0.17 against 0.05 over 3 seeds) for the same mean.
        return predictions if self.training else predictions.clamp(0.0, 1.0)

    def set_acoustic_statistics(self, stats) -> None:
        """Standardise the acoustic inputs with the training split's statistics (AcousticStatistics)."""
        self.prosody_norm.set(stats.frames.mean, stats.frames.std)
        if self.functionals is not None:
            self.functionals_norm.set(stats.functionals.mean, stats.functionals.std)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The state dict, less the encoder's weights when they are frozen and reloadable from their source."""
        state = self.state_dict()
        if self.encoder.restored_from_source:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.wavlm.")}
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        allowed_missing = self.encoder.restored_from_source
        if unexpected or any(not (allowed_missing and k.startswith("encoder.wavlm.")) for k in missing):
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")


def build_model(
    model: ModelSettings,
    encoder: EncoderSettings,
    dimensions: tuple[str, ...],
    acoustic: AcousticInputs,
    wavlm_config: dict | None = None,
) -> MambaEMA:
    """The model the settings describe. `wavlm_config`: the encoder's architecture as a checkpoint that also
    holds its weights records it; WavLM is then built from it, without reading `encoder.source`."""
    speech_encoder = SpeechEncoder(
        load_wavlm(encoder) if wavlm_config is None else WavLMModel(WavLMConfig.from_dict(wavlm_config)),
        list(model.speech_encoder_layers),
        freeze=encoder.freeze,
        freeze_feature_encoder=encoder.freeze_feature_encoder,
        normalize_waveform=encoder.normalize_waveform,
        pretrained=encoder.source is not None,
        grad_checkpointing=model.grad_checkpointing,
    )
    return MambaEMA(speech_encoder, dimensions, model, acoustic)


def count_parameters(module: nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }
