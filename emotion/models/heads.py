"""Attentive pooling over frames and the per-dimension regression heads."""

from __future__ import annotations

import torch
from torch import nn


class AttentivePooling(nn.Module):
    """A learned softmax over valid frames; padded frames get zero weight."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames (B, T, d), mask (B, T) → (B, d)."""
        frames = frames.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = self.score(frames).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).to(frames.dtype)
        return torch.einsum("bt,btd->bd", weights, frames)


def regression_head(d_in: int, d_hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, 1))
