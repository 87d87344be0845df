"""Decoding audio into what the encoder expects: mono float32 at one sample rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


@dataclass(frozen=True)
class Clip:
    """A stretch of an audio file, in seconds of the file: one speech segment of a long recording, read and
    analysed as an utterance of its own."""

    path: Path
    start_s: float
    end_s: float


# What an item's audio is: a whole file, or a clip of one.
AudioSource = Path | Clip

# Around a stretch read at another sample rate, this much more (a tenth of a second) is resampled with it,
# so that its edges are filtered as they are in the whole file.
RESAMPLING_MARGIN_S = 0.1


def load_audio(source: str | Path | Clip, sample_rate: int, start: int = 0, length: int | None = None) -> np.ndarray:
    """Read any format libsndfile knows, average the channels, resample to `sample_rate`. `start` and `length`
    (samples at `sample_rate`, within `source`) pick a stretch, read without decoding the rest of the file."""
    if isinstance(source, Clip):
        path, offset_s, end_s = source.path, source.start_s, source.end_s
    else:
        path, offset_s, end_s = Path(source), 0.0, None
    if offset_s == 0 and start == 0 and length is None and end_s is None:
        wave, file_rate = sf.read(path, dtype="float32", always_2d=True)
        return mono_at_rate(wave, file_rate, sample_rate)
    start_s = offset_s + start / sample_rate
    if length is not None:
        end_s = start_s + length / sample_rate if end_s is None else min(end_s, start_s + length / sample_rate)
    return _read_stretch(path, start_s, end_s, sample_rate)


def _read_stretch(path: Path, start_s: float, end_s: float | None, sample_rate: int) -> np.ndarray:
    """Samples [start_s, end_s) at `sample_rate`, as resampling the whole file would give them. The file is read
    from a point where its samples and the resampled ones coincide (every rate / gcd samples), so the resampled
    stretch lies on the whole file's sample grid; the margin before and after gives its edges their context."""
    with sf.SoundFile(path) as f:
        rate, frames = f.samplerate, f.frames
        common = math.gcd(rate, sample_rate)
        block_in, block_out = rate // common, sample_rate // common
        margin = 0 if rate == sample_rate else round(RESAMPLING_MARGIN_S * sample_rate)
        total = (2 * frames * sample_rate + rate) // (2 * rate)  # the whole file's length: soxr rounds half up
        first = min(total, round(start_s * sample_rate))
        last = total if end_s is None else min(total, round(end_s * sample_rate))
        low_block = max(0, first - margin) // block_out
        high = min(frames, math.ceil((last + margin) * rate / sample_rate))
        f.seek(low_block * block_in)
        wave = mono_at_rate(f.read(high - low_block * block_in, dtype="float32", always_2d=True), rate, sample_rate)
    skip = first - low_block * block_out
    return wave[skip : skip + last - first]


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
