"""Decoding audio files into what the encoder expects: mono float32 at one sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any format libsndfile knows, average the channels, resample to `sample_rate`."""
    wave, file_rate = sf.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if file_rate != sample_rate:
        wave = soxr.resample(wave, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)
