"""Masking of the frame inputs in training, so that a small corpus is not memorised: spans of time and whole
feature channels are zeroed at random (SpecAugment's idea, on the encoder's states and the acoustic features).

Both draw on torch's global generator, like dropout, so a resumed run draws the same masks (its state is
in every checkpoint).
"""

from __future__ import annotations

import torch


def time_spans(mask: torch.Tensor, ratio: float, width: int) -> torch.Tensor:
    """(B, T) true on the frames to hide: spans of `width` frames that start at each valid frame with
    probability ratio / width, so that about `ratio` of every utterance is hidden (a little less where
    spans overlap). `mask` is true on valid frames."""
    starts = (torch.rand(mask.shape, device=mask.device) < ratio / width) & mask
    # A frame is hidden when a span started within the `width` frames up to it.
    opened = starts.cumsum(dim=1)
    closed = torch.nn.functional.pad(opened, (width, 0))[:, : opened.shape[1]]
    return (opened - closed > 0) & mask


def feature_channels(batch: int, channels: int, ratio: float, device: torch.device) -> torch.Tensor:
    """(B, 1, channels) true on the channels to hide, each with probability `ratio`, for a whole utterance."""
    return torch.rand(batch, 1, channels, device=device) < ratio


def mask_frames(
    streams: list[torch.Tensor], mask: torch.Tensor, time_ratio: float, time_width: int, feature_ratio: float
) -> list[torch.Tensor]:
    """Zero the same time spans in every stream (B, T, channels), so one cannot fill in for another, and
    channels of each stream independently."""
    hidden_time = time_spans(mask, time_ratio, time_width).unsqueeze(-1) if time_ratio > 0 else None
    masked = []
    for stream in streams:
        if hidden_time is not None:
            stream = stream.masked_fill(hidden_time, 0.0)
        if feature_ratio > 0:
            stream = stream.masked_fill(
                feature_channels(len(stream), stream.shape[-1], feature_ratio, stream.device), 0.0
            )
        masked.append(stream)
    return masked
