"""Prosody contours (F0, voicing, intensity) sampled on the speech encoder's frame grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import parselmouth

PROSODY_FEATURES = ("f0_semitones", "f0_semitones_re_median", "voicing", "intensity")
PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 600.0
ANALYSIS_STEP_S = 0.01
# Praat needs a few periods of the lowest pitch in one window; shorter audio gets flat contours.
MIN_ANALYSIS_S = 6.4 / PITCH_FLOOR_HZ


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


def prosody_contours(wave: np.ndarray, sample_rate: int, grid: FrameGrid) -> np.ndarray:
    """(frames, 4) float32: F0 in semitones re 100 Hz and re the utterance's median F0 (both 0 when
    unvoiced), voicing 0/1, intensity in dB.

    Scaled to roughly unit range with fixed constants. The absolute F0 and intensity keep level differences
    (a higher, louder voice) visible; F0 relative to the utterance's own median gives the contour's shape
    (rises, falls, range) free of the speaker's pitch, which is what transfers across speakers.
    """
    n_frames = grid.count(len(wave))
    contours = np.zeros((n_frames, len(PROSODY_FEATURES)), dtype=np.float32)
    if n_frames == 0 or len(wave) < MIN_ANALYSIS_S * sample_rate:
        return contours
    times = grid.centres_s(n_frames, sample_rate)
    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=sample_rate)

    pitch = sound.to_pitch(time_step=ANALYSIS_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0_hz = pitch.selected_array["frequency"][_nearest(pitch.xs(), times)]
    voiced = f0_hz > 0
    if voiced.any():
        semitones = 12.0 * np.log2(f0_hz[voiced] / 100.0)
        contours[voiced, 0] = semitones / 12.0  # one unit per octave
        contours[voiced, 1] = (semitones - np.median(semitones)) / 12.0
    contours[:, 2] = voiced

    intensity = sound.to_intensity(minimum_pitch=PITCH_FLOOR_HZ, time_step=ANALYSIS_STEP_S)
    db = np.interp(times, intensity.xs(), intensity.values[0])
    contours[:, 3] = (np.clip(db, 0.0, 100.0) - 60.0) / 20.0
    return contours


def _nearest(analysis_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the analysis frame nearest each time; nearest, not interpolated, so voicing stays crisp."""
    step = analysis_times[1] - analysis_times[0] if len(analysis_times) > 1 else 1.0
    index = np.rint((times - analysis_times[0]) / step).astype(int)
    return np.clip(index, 0, len(analysis_times) - 1)
