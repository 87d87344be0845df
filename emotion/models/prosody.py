"""A small temporal convolution that turns prosody contours into per-frame features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProsodyEncoder(nn.Module):
    def __init__(self, n_features: int, d_out: int, kernel_size: int = 5):
        super().__init__()
        self.conv_in = nn.Conv1d(n_features, d_out, kernel_size, padding=kernel_size // 2)
        self.conv_out = nn.Conv1d(d_out, d_out, kernel_size, padding=kernel_size // 2)

    def forward(self, contours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, n_features), mask (B, T) → (B, T, d_out).

        The hidden activations are zeroed on padded frames: otherwise the first convolution's bias there
        would leak into the last valid frames through the second, and padding would change predictions.
        """
        keep = mask.unsqueeze(1).to(contours.dtype)
        hidden = F.gelu(self.conv_in(contours.transpose(1, 2) * keep)) * keep
        return self.conv_out(hidden).transpose(1, 2)
