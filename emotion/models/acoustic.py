"""The acoustic branch: frame-level features (eGeMAPS descriptors, prosody contours) through a small temporal
convolution, and the utterance's eGeMAPS functionals through a small MLP, both standardised first."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Standardise(nn.Module):
    """(x - mean) / std per feature with the training split's statistics, kept as buffers so that the
    checkpoint carries them. NaN (a descriptor openSMILE could not compute) becomes 0, the mean."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num((values - self.mean) / self.std, nan=0.0)


class ProsodyEncoder(nn.Module):
    def __init__(self, n_features: int, d_out: int, kernel_size: int = 5):
        super().__init__()
        self.conv_in = nn.Conv1d(n_features, d_out, kernel_size, padding=kernel_size // 2)
        self.conv_out = nn.Conv1d(d_out, d_out, kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, n_features), mask (B, T) → (B, T, d_out).

        The inputs and hidden activations are zeroed on padded frames: otherwise the first convolution's bias
        there would leak into the last valid frames through the second, and padding would change predictions.
        """
        keep = mask.unsqueeze(1).to(features.dtype)
        hidden = F.gelu(self.conv_in(features.transpose(1, 2) * keep)) * keep
        return self.conv_out(hidden).transpose(1, 2)


def functionals_encoder(n_features: int, d_out: int, dropout: float) -> nn.Module:
    """The utterance's functionals → a vector joined with the pooled frames before the heads."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(n_features, d_out), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_out, d_out)
    )
