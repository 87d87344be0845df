"""Acoustic features of an utterance, from the field's own tools: eGeMAPS from openSMILE, and prosody
contours from Praat (through parselmouth).

Frame-level sets come on the speech encoder's frame grid, one row per encoder frame, so that the prosody
branch sees them beside the encoder's states; the utterance-level set is one vector per utterance.

- `egemaps`: the 25 low-level descriptors of eGeMAPSv02 (loudness; spectral balance, slopes and flux;
  MFCC 1–4; F0, jitter, shimmer, HNR, harmonic differences; formants 1–3), one every 10 ms. Each encoder
  frame takes the openSMILE frame whose centre is nearest its own.
- `contours`: F0 in semitones, absolute and relative to the utterance's median; voicing; intensity.
- `functionals`: the 88 eGeMAPSv02 functionals of the whole utterance (means, spreads, percentiles and
  rates of the descriptors above, equivalent sound level).

openSMILE and pandas take seconds to import, so they are imported on first use, not with this module.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import parselmouth

from emotion.models.grid import FrameGrid, nearest_frames

PROSODY_FEATURES = ("f0_semitones", "f0_semitones_re_median", "voicing", "intensity")
PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 600.0
ANALYSIS_STEP_S = 0.01
# Praat needs a few periods of the lowest pitch in one window; shorter audio gets flat contours.
MIN_ANALYSIS_S = 6.4 / PITCH_FLOOR_HZ

# eGeMAPSv02 as opensmile names its levels; the sizes are openSMILE's (the tests check them against it).
EGEMAPS_LLD_LEVEL = "lld"
EGEMAPS_FUNCTIONALS_LEVEL = "func"
EGEMAPS_LLDS = 25
EGEMAPS_FUNCTIONALS = 88
# openSMILE turns samples into 16-bit integers by scaling with 32768: full scale would wrap around.
INT16_FULL_SCALE = 32767 / 32768


@dataclass(frozen=True)
class Extractor:
    """One set of acoustic features: `size` values per encoder frame (`per_frame`) or per utterance."""

    name: str
    size: int
    per_frame: bool
    compute: Callable[[np.ndarray, int, FrameGrid], np.ndarray]
    version: int  # bump when `compute` changes what it computes: cached entries are then recomputed
    library: str  # its version is part of the settings: an upgrade recomputes too

    def __call__(self, wave: np.ndarray, sample_rate: int, grid: FrameGrid) -> np.ndarray:
        return self.compute(wave, sample_rate, grid)

    def settings(self, sample_rate: int, grid: FrameGrid) -> dict:
        """Everything that decides what it computes: the key of its cache."""
        settings = {
            "name": self.name,
            "version": self.version,
            "library": f"{self.library} {importlib.metadata.version(self.library)}",
            "sample_rate": sample_rate,
        }
        if self.per_frame:
            settings.update(window=grid.window, hop=grid.hop)
        return settings


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
    f0_hz = pitch.selected_array["frequency"][nearest_frames(pitch.xs(), times)]
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


def egemaps_frames(wave: np.ndarray, sample_rate: int, grid: FrameGrid) -> np.ndarray:
    """(frames, 25) float32: eGeMAPSv02's low-level descriptors at the openSMILE frame (10 ms apart) whose
    centre is nearest each encoder frame's centre."""
    table = _opensmile(EGEMAPS_LLD_LEVEL, wave, sample_rate)
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    ends = table.index.get_level_values("end").total_seconds().to_numpy()
    # openSMILE stretches its last frame to the end of the signal; the first has the frames' own length.
    centres = starts + (ends[0] - starts[0]) / 2
    n_frames = grid.count(len(wave))
    values = table.to_numpy(dtype=np.float32)
    return values[nearest_frames(centres, grid.centres_s(n_frames, sample_rate))]


def egemaps_functionals(wave: np.ndarray, sample_rate: int, grid: FrameGrid | None = None) -> np.ndarray:
    """(88,) float32: eGeMAPSv02's functionals of the whole utterance; NaN where it is too short for one."""
    return _opensmile(EGEMAPS_FUNCTIONALS_LEVEL, wave, sample_rate).to_numpy(dtype=np.float32)[0]


def _opensmile(level: str, wave: np.ndarray, sample_rate: int):
    """openSMILE's table of eGeMAPSv02 at `level` for one mono wave."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")  # it fills NaN, which normalisation treats
        return _smile(level).process_signal(np.clip(wave, -1.0, INT16_FULL_SCALE), sample_rate)


@functools.cache
def _smile(level: str):
    """One openSMILE extractor per level and process: setting one up takes seconds."""
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level)


CONTOURS = Extractor("contours", len(PROSODY_FEATURES), True, prosody_contours, version=1, library="praat-parselmouth")
EGEMAPS = Extractor("egemaps", EGEMAPS_LLDS, True, egemaps_frames, version=1, library="opensmile")
FUNCTIONALS = Extractor("functionals", EGEMAPS_FUNCTIONALS, False, egemaps_functionals, version=1, library="opensmile")

# model.acoustic: which frame-level sets feed the prosody branch, in the order they are concatenated.
FRAME_SETS = {"egemaps": (EGEMAPS,), "contours": (CONTOURS,), "both": (EGEMAPS, CONTOURS)}


def frame_extractors(acoustic: str) -> tuple[Extractor, ...]:
    if acoustic not in FRAME_SETS:
        raise ValueError(f"model.acoustic={acoustic!r} is not one of {', '.join(FRAME_SETS)}.")
    return FRAME_SETS[acoustic]


def frame_feature_count(acoustic: str) -> int:
    """Values per frame that the prosody branch gets for `model.acoustic`."""
    return sum(extractor.size for extractor in frame_extractors(acoustic))
