"""The embedded demo corpus: synthetic voices whose acoustics carry arousal, valence and dominance.

A source-filter synthesiser (glottal pulse train with an F0 contour, a spectral-tilt filter, aspiration
noise, formant resonators per syllable) renders utterances whose labels drive the acoustics the way
speech-emotion studies report them: arousal raises F0 level and range, loudness, speaking rate and
high-frequency energy; valence bends the F0 contour upwards, brightens the formants and steadies the
period; dominance lowers F0 and adds loudness and a firmer (less breathy) voice. Each voice has its own
baselines and every utterance its own expression noise, so the task is learnable but not trivial, and
speaker-independent folds have to generalise across voices.

The corpus is laid out as IEMOCAP is (5 sessions of 2 voices) and written as a CSV manifest in the
format of the generic CSV corpus. It is a pipeline check, not a benchmark.

A second studio (`data=demo_b`) records other voices through another chain (quieter, band-limited, at
22.05 kHz) and rates them on another scale (1–7) without dominance, as a second real corpus differs from
the first: what cross-corpus training, evaluation and normalisation are tested on.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
GENERATOR_VERSION = 4
MANIFEST_NAME = "manifest.csv"
ITEM_COLUMNS = ("id", "path", "speaker", "fold")  # the manifest's, before the studio's dimensions
LABEL_RANGE = (1.0, 5.0)  # what the voices express; a studio rates it on its own scale
SESSIONS = range(1, 6)  # five sessions of two voices, as IEMOCAP

# Formant frequencies (Hz) of five vowels for an adult male vocal tract; other voices scale them.
VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]], dtype=float
)
FORMANT_BANDWIDTHS = np.array([80.0, 110.0, 160.0])


@dataclass(frozen=True)
class Voice:
    """A speaker's baselines; emotions move the acoustics away from them."""

    speaker: str
    session: int
    f0_hz: float
    level_db: float
    syllables_per_s: float
    tract_scale: float
    tilt_hz: float
    breathiness: float


@dataclass(frozen=True)
class Studio:
    """Where a demo corpus is recorded and how it is rated."""

    name: str  # the corpus's name: checkpoints record its speakers under it
    speaker_prefix: str
    label_range: tuple[float, float]
    dimensions: tuple[str, ...]  # those its raters gave
    gain_db: float  # of the recording chain
    lowpass_hz: float | None  # the chain's band limit (a telephone-like microphone); None: none
    file_rate: int  # the files' sample rate


STUDIOS = {
    "a": Studio("demo", "Ses", LABEL_RANGE, ("arousal", "valence", "dominance"), 0.0, None, SAMPLE_RATE),
    "b": Studio("demo-b", "Spk", (1.0, 7.0), ("arousal", "valence"), -12.0, 3400.0, 22_050),
}


@dataclass(frozen=True)
class Expression:
    """Emotion as expressed in one utterance, each dimension centred on neutral and scaled to about [-1, 1]."""

    arousal: float
    valence: float
    dominance: float


def ensure_demo_corpus(root: str | Path, seed: int = 0, utterances_per_voice: int = 32, studio: str = "a") -> Path:
    """Return the demo manifest under `root`, generating the corpus first when missing or incomplete."""
    root = Path(root)
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "utterances_per_voice": utterances_per_voice}
    if studio != "a":  # the first studio's corpora, made before there was a second, stay valid
        wanted["studio"] = studio
    if _is_complete(root, wanted):
        return root / MANIFEST_NAME
    if root.exists() and any(root.iterdir()) and not (root / "generator.json").is_file():
        raise FileExistsError(
            f"data.root={str(root)!r} holds files but no demo corpus, and the demo corpus would replace them. "
            "For a real corpus choose data=iemocap, data=msp_podcast or data=csv; for the demo leave data.root "
            "at its default."
        )
    log.info("Generating the demo corpus in %s (seed %d)", root, seed)
    staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write_demo_corpus(staging, seed, utterances_per_voice, STUDIOS[studio])
    (staging / "generator.json").write_text(json.dumps(wanted))
    _publish(staging, root, wanted)
    return root / MANIFEST_NAME


def _is_complete(root: Path, wanted: dict) -> bool:
    try:
        if json.loads((root / "generator.json").read_text()) != wanted:
            return False
        with open(root / MANIFEST_NAME, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return False
    return len(rows) > 0 and all((root / row["path"]).is_file() for row in rows)


def _publish(staging: Path, root: Path, wanted: dict) -> None:
    """Move a finished corpus into place; a concurrent job that got there first wins.

    A stale demo corpus (another generator version, or incomplete) is first renamed aside, so that no
    reader ever sees a half-deleted folder.
    """
    if root.exists() and not _is_complete(root, wanted):
        stale = root.with_name(f"{root.name}.stale-{os.getpid()}")
        with contextlib.suppress(OSError):  # gone already, or replaced by a concurrent job
            root.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_complete(root, wanted):
            raise


def write_demo_corpus(out_dir: Path, seed: int, utterances_per_voice: int, studio: Studio = STUDIOS["a"]) -> None:
    """Render every utterance as a 16-bit WAV file through the studio's chain and write the manifest last."""
    (out_dir / "wav").mkdir(parents=True)
    rows = []
    for voice in make_voices(seed, studio.speaker_prefix):
        for index in range(utterances_per_voice):
            utt_id = f"{voice.speaker}_{index:03d}"
            rng = np.random.default_rng([seed, voice.session, ord(voice.speaker[-1]), index])
            labels = draw_labels(rng)
            wave = record(synthesise(voice, expression_of(labels, rng), rng), studio)
            path = Path("wav") / f"{utt_id}.wav"
            sf.write(out_dir / path, wave, studio.file_rate, subtype="PCM_16")
            rated = {name: rate(labels[name], studio) for name in studio.dimensions}
            rows.append({"id": utt_id, "path": str(path), "speaker": voice.speaker, "fold": voice.session, **rated})
    with open(out_dir / MANIFEST_NAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*ITEM_COLUMNS, *studio.dimensions])
        writer.writeheader()
        writer.writerows(rows)


def record(wave: np.ndarray, studio: Studio) -> np.ndarray:
    """A rendered utterance as the studio's chain records it: band-limited, at its gain and file rate."""
    if studio.lowpass_hz is not None:
        wave = _one_pole_lowpass(_one_pole_lowpass(wave, studio.lowpass_hz), studio.lowpass_hz)
    wave = wave * 10 ** (studio.gain_db / 20)
    if studio.file_rate != SAMPLE_RATE:
        wave = soxr.resample(wave, SAMPLE_RATE, studio.file_rate, quality="HQ")
    return np.clip(wave, -0.99, 0.99).astype(np.float32)


def rate(value: float, studio: Studio) -> float:
    """A label of LABEL_RANGE on the studio's scale, by the affine map between the two."""
    (low, high), (own_low, own_high) = LABEL_RANGE, studio.label_range
    return round(own_low + (value - low) * (own_high - own_low) / (high - low), 2)


def make_voices(seed: int, speaker_prefix: str = "Ses") -> list[Voice]:
    """Two voices per session, one higher and one lower, as IEMOCAP pairs a female and a male actor."""
    rng = np.random.default_rng(seed)
    voices = []
    for session in SESSIONS:
        for sex, f0_range, tract_range in (("F", (180, 240), (1.12, 1.22)), ("M", (95, 135), (0.95, 1.03))):
            voices.append(
                Voice(
                    speaker=f"{speaker_prefix}{session:02d}{sex}",
                    session=session,
                    f0_hz=rng.uniform(*f0_range),
                    level_db=rng.uniform(-2.0, 2.0),
                    syllables_per_s=rng.uniform(3.5, 5.0),
                    tract_scale=rng.uniform(*tract_range),
                    tilt_hz=rng.uniform(350, 600),
                    breathiness=rng.uniform(0.02, 0.08),
                )
            )
    return voices


def draw_labels(rng: np.random.Generator) -> dict[str, float]:
    """A/V/D on 1–5; dominance follows arousal in part, as in acted corpora."""
    arousal = rng.normal(3.0, 0.9)
    valence = rng.normal(3.0, 0.9)
    dominance = 3.0 + 0.6 * (arousal - 3.0) + rng.normal(0.0, 0.7)
    low, high = LABEL_RANGE
    return {
        name: round(float(np.clip(value, low, high)), 2)
        for name, value in (("arousal", arousal), ("valence", valence), ("dominance", dominance))
    }


def expression_of(labels: dict[str, float], rng: np.random.Generator) -> Expression:
    """The emotion a speaker puts into the utterance: the label plus the disagreement of annotators."""
    centred = {name: (value - 3.0) / 2.0 + rng.normal(0.0, 0.18) for name, value in labels.items()}
    return Expression(**centred)


def synthesise(voice: Voice, expr: Expression, rng: np.random.Generator, seconds: float | None = None) -> np.ndarray:
    """Render one utterance as float32 samples, `seconds` long or 1–4 s at random."""
    n_samples = int((rng.uniform(1.0, 4.0) if seconds is None else seconds) * SAMPLE_RATE)
    rate = voice.syllables_per_s * (1.0 + 0.35 * expr.arousal) * rng.uniform(0.9, 1.1)
    syllables = _syllable_plan(n_samples, rate, rng)

    f0 = _f0_contour(voice, expr, n_samples, rng)
    jitter = max(0.004, 0.006 + 0.012 * -expr.valence)
    pulses = _pulse_train(f0, jitter, rng)
    tilt_hz = voice.tilt_hz * 2.0 ** (1.5 * expr.arousal + 0.4 * expr.dominance)
    source = _one_pole_lowpass(_one_pole_lowpass(pulses, tilt_hz), tilt_hz)
    source /= np.sqrt(np.mean(source**2)) + 1e-9
    breathiness = voice.breathiness * (1.0 + 1.5 * max(0.0, -expr.dominance))
    source = source + breathiness * 4.0 * rng.standard_normal(n_samples)

    voiced = np.zeros(n_samples)
    for _, vowel_start, end, vowel in syllables:
        voiced[vowel_start:end] = _formant_filter(source[vowel_start:end], voice, vowel, expr.valence)
        voiced[vowel_start:end] *= np.hanning(end - vowel_start) ** 0.5
    consonants = _consonants(syllables, n_samples, rng)

    speech = np.diff(voiced + consonants, prepend=0.0)  # lip radiation: +6 dB per octave
    level_db = -30.0 + voice.level_db + 7.0 * expr.arousal + 3.0 * expr.dominance + rng.normal(0, 1.0)
    speech *= 10 ** (level_db / 20) / (np.sqrt(np.mean(speech**2)) + 1e-9)
    speech += 10 ** (-62 / 20) * rng.standard_normal(n_samples)  # room noise
    return np.clip(speech, -0.99, 0.99).astype(np.float32)


def _syllable_plan(n_samples: int, rate: float, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """(start, vowel start, end, vowel index) per syllable, with a consonant onset and the odd pause."""
    syllables = []
    position = int(rng.uniform(0.03, 0.1) * SAMPLE_RATE)
    while True:
        length = int(SAMPLE_RATE / rate * rng.uniform(0.7, 1.3))
        if position + length > n_samples - int(0.03 * SAMPLE_RATE):
            break
        onset = int(length * rng.uniform(0.15, 0.35))
        syllables.append((position, position + onset, position + length, int(rng.integers(len(VOWEL_FORMANTS)))))
        position += length
        if rng.random() < 0.1:
            position += int(rng.uniform(0.08, 0.25) * SAMPLE_RATE)
    return syllables


def _f0_contour(voice: Voice, expr: Expression, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """F0 in Hz: level, range and slope in semitones from the expression, a few smooth accents."""
    t = np.arange(n_samples) / SAMPLE_RATE
    level_st = 3.0 * expr.arousal + 0.5 * expr.valence - 1.2 * expr.dominance + rng.normal(0, 0.6)
    range_st = max(0.3, 1.6 + 1.8 * expr.arousal + 1.0 * expr.valence)
    slope_st_per_s = 4.0 * expr.valence - 0.8 + rng.normal(0, 0.4)
    accents = (
        sum(
            np.sin(2 * np.pi * rng.uniform(0.6, 2.5) * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
            for _ in range(3)
        )
        / 2.0
    )
    semitones = level_st + slope_st_per_s * (t - t.mean()) + range_st * accents
    return voice.f0_hz * 2.0 ** (semitones / 12.0)


def _pulse_train(f0: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Glottal closures where the phase of the (jittered) F0 crosses an integer, placed at fractional samples."""
    period_noise = rng.standard_normal(len(f0) // 80 + 1).repeat(80)[: len(f0)]
    phase = np.cumsum(f0 * (1.0 + jitter * period_noise)) / SAMPLE_RATE
    crossings = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    step = np.maximum(phase[crossings] - phase[crossings - 1], 1e-9)
    fraction = (phase[crossings] - np.floor(phase[crossings])) / step  # how far past the closure sample `crossing` is
    shimmer = 1.0 + 0.08 * rng.standard_normal(len(crossings))
    pulses = np.zeros(len(f0) + 1)
    np.add.at(pulses, crossings - 1, shimmer * fraction)
    np.add.at(pulses, crossings, shimmer * (1.0 - fraction))
    return pulses[: len(f0)]


def _one_pole_lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    # Imported here, as below: scipy.signal takes a second to load, and the config checks import this module.
    from scipy.signal import lfilter

    pole = np.exp(-2 * np.pi * min(cutoff_hz, 6000.0) / SAMPLE_RATE)
    return lfilter([1.0 - pole], [1.0, -pole], x)


def _formant_filter(x: np.ndarray, voice: Voice, vowel: int, valence: float) -> np.ndarray:
    """A cascade of two-pole resonators; a smile (positive valence) raises the second formant."""
    from scipy.signal import lfilter

    formants = VOWEL_FORMANTS[vowel] * voice.tract_scale * np.array([1.0, 1.0 + 0.08 * valence, 1.0])
    for freq, bandwidth in zip(formants, FORMANT_BANDWIDTHS, strict=True):
        radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        a = [1.0, -2 * radius * np.cos(2 * np.pi * freq / SAMPLE_RATE), radius**2]
        x = lfilter([sum(a)], a, x)  # unit gain at 0 Hz
    return x


def _consonants(syllables: list, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Fricative-like noise bursts in the syllable onsets."""
    noise = np.diff(rng.standard_normal(n_samples + 1)) * 0.15
    out = np.zeros(n_samples)
    for start, vowel_start, _, _ in syllables:
        if rng.random() < 0.6:
            out[start:vowel_start] = noise[start:vowel_start] * np.hanning(vowel_start - start)
    return out
