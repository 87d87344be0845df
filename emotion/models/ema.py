"""The EMA state: a slow summary of the frame sequence, c_t = α c_{t-1} + (1 - α) u_t."""

from __future__ import annotations

import math

import torch
from torch import nn


class EMAState(nn.Module):
    """Project frames to `d_state` channels and return the final exponential moving average.

    α is per channel, starts at `alpha_init` and is learned unless `learn_alpha` is false. Padded frames
    leave the state unchanged, so with c_0 = 0 the final state has the closed form
        c_T = Σ_t m_t (1 - α) α^{k_t} u_t,   k_t = number of valid frames after t,
    which is what `forward` computes, in parallel over time.
    """

    def __init__(self, d_in: int, d_state: int, alpha_init: float = 0.8, learn_alpha: bool = True):
        super().__init__()
        self.proj = nn.Linear(d_in, d_state)
        logit = math.log(alpha_init / (1.0 - alpha_init))
        self.alpha_logit = nn.Parameter(torch.full((d_state,), logit), requires_grad=learn_alpha)

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha_logit)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames (B, T, d_in), mask (B, T) true on valid frames → final state (B, d_state)."""
        u = self.proj(frames).float()
        valid = mask.to(u.dtype)
        later = valid.flip(1).cumsum(1).flip(1) - valid  # valid frames strictly after t
        alpha = self.alpha
        weights = (1.0 - alpha) * torch.exp(later.unsqueeze(-1) * torch.log(alpha)) * valid.unsqueeze(-1)
        return (weights * u).sum(dim=1)
