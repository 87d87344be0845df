"""The speech encoder's frame grid: where its frames fall in time, and how other analyses are put on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameGrid:
    """Where a strided convolution stack puts its frames: one every `hop` samples, each `window` wide.

    For stacked unpadded convolutions, floor((n - window) / hop) + 1 is exactly the nested per-layer count.
    """

    window: int
    hop: int

    def count(self, n_samples: int) -> int:
        return max(0, (n_samples - self.window) // self.hop + 1)

    def centres_s(self, n_frames: int, sample_rate: int) -> np.ndarray:
        return (np.arange(n_frames) * self.hop + self.window / 2) / sample_rate


def nearest_frames(analysis_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the evenly spaced analysis frame nearest each time (clipped to the frames there are).

    Nearest, not interpolated: voicing stays crisp and every value is one the analysis produced.
    """
    step = analysis_times[1] - analysis_times[0] if len(analysis_times) > 1 else 1.0
    index = np.rint((times - analysis_times[0]) / step).astype(int)
    return np.clip(index, 0, len(analysis_times) - 1)
