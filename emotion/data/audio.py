"""Decoding audio into what the encoder expects: mono float32 at one sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any format libsndfile knows, average the channels, resample to `sample_rate`."""
    wave, file_rate = sf.read(path, dtype="float32", always_2d=True)
    return mono_at_rate(wave, file_rate, sample_rate)


def mono_at_rate(wave: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """A wave (samples,) or (samples, channels), as soundfile reads it, averaged over its channels and
    resampled from `rate` to `sample_rate`."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    elif wave.ndim != 1:
        raise ValueError(f"a wave is (samples,) or (samples, channels); this one has shape {wave.shape}")
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)
