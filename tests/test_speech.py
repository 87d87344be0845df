"""Speech detection: spans from hand-built probabilities, and silero's model on silence, tones and synthetic
speech placed at known times, read from files of any rate and channel count a block at a time."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from emotion.data import demo, speech
from emotion.data.speech import (
    CHUNK_SECONDS,
    Span,
    SpeechSettings,
    UnreadableAudioError,
    spans_from_probabilities,
    speech_probabilities,
    speech_settings_problems,
    speech_spans,
)

RATE = speech.SAMPLE_RATE
STEP = 0.1  # seconds per probability in the hand-built arrays, for round numbers
# Utterances (start, seconds) placed in 12 s of near silence; a female voice, a male voice, the female again.
PLACED = [(1.0, 2.5), (5.0, 3.0), (9.0, 2.0)]
# The model hears an onset up to 0.1 s late and lets go of an end up to 0.15 s late (measured on PLACED).
TOLERANCE_S = 0.2


def probabilities(*runs: tuple[float, float]) -> np.ndarray:
    """(probability, seconds) runs at STEP seconds per value."""
    return np.concatenate([np.full(round(seconds / STEP), value) for value, seconds in runs])


def spans_of(values: np.ndarray, duration_s: float | None = None, **settings) -> list[tuple[float, float]]:
    duration_s = len(values) * STEP if duration_s is None else duration_s
    spans = spans_from_probabilities(values, STEP, duration_s, SpeechSettings(**settings))
    return [(round(span.start_s, 3), round(span.end_s, 3)) for span in spans]


# spans_from_probabilities


def test_speech_starts_at_the_threshold_and_ends_only_below_it_less_the_hysteresis():
    # 0.45 never starts speech; once started, 0.4 keeps it going (above 0.5 - 0.15) and 0.3 ends it.
    values = probabilities((0.1, 1.0), (0.45, 1.0), (0.6, 1.0), (0.4, 1.0), (0.3, 1.0), (0.45, 1.0))
    assert spans_of(values, merge_gap_seconds=0.0) == [(2.0, 4.0)]


def test_a_pause_shorter_than_the_gap_joins_its_neighbours():
    values = probabilities((0.0, 1.0), (0.9, 1.0), (0.0, 0.2), (0.9, 1.5), (0.0, 1.0))
    assert spans_of(values, merge_gap_seconds=0.3) == [(1.0, 3.7)]


def test_a_pause_as_long_as_the_gap_separates_two_segments():
    values = probabilities((0.0, 1.0), (0.9, 1.0), (0.0, 0.5), (0.9, 1.5), (0.0, 1.0))
    assert spans_of(values, merge_gap_seconds=0.3) == [(1.0, 2.0), (2.5, 4.0)]


def test_a_short_burst_is_dropped_unless_a_short_pause_joins_it_to_more_speech():
    alone = probabilities((0.0, 1.0), (0.9, 0.5), (0.0, 2.0))
    assert spans_of(alone, min_segment_seconds=1.0) == []
    joined = probabilities((0.0, 1.0), (0.9, 0.5), (0.0, 0.2), (0.9, 0.6), (0.0, 1.0))
    assert spans_of(joined, min_segment_seconds=1.0, merge_gap_seconds=0.3) == [(1.0, 2.3)]


def test_a_25_s_stretch_with_a_10_s_limit_is_split_into_three_equal_parts():
    values = probabilities((0.0, 2.0), (0.9, 25.0), (0.0, 1.0))
    parts = spans_of(values, max_segment_seconds=10.0)
    assert parts == [(2.0, 10.333), (10.333, 18.667), (18.667, 27.0)]
    exact = spans_from_probabilities(values, STEP, 28.0, SpeechSettings(max_segment_seconds=10.0))
    assert all(part.seconds == pytest.approx(25.0 / 3) for part in exact)
    assert [a.end_s for a in exact[:-1]] == [b.start_s for b in exact[1:]]  # no gap, no overlap


def test_a_stretch_of_the_limit_itself_stays_whole_despite_rounding():
    values = probabilities((0.0, 0.3), (0.9, 10.0), (0.0, 1.0))  # 10.3 - 0.3 is 10.000000000000002 in floats
    assert spans_of(values, max_segment_seconds=10.0) == [(0.3, 10.3)]


def test_speech_is_clipped_to_the_recording_whose_last_chunk_was_padded():
    values = probabilities((0.0, 1.0), (0.9, 2.0))
    assert spans_of(values, duration_s=2.95) == [(1.0, 2.95)]
    assert spans_of(values, duration_s=1.05) == []  # 0.05 s of speech left: shorter than a segment
    assert spans_of(values, duration_s=0.9) == []


def test_no_speech_and_no_chunks_give_no_spans():
    assert spans_of(probabilities((0.2, 5.0))) == []
    assert spans_of(np.zeros(0), duration_s=0.0) == []


# settings


def test_the_defaults_are_usable():
    assert speech_settings_problems(SpeechSettings()) == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"threshold": 0.0}, "predict.vad_threshold=0.0"),
        ({"threshold": 1.0}, "predict.vad_threshold=1.0"),
        ({"threshold": float("nan")}, "predict.vad_threshold=nan"),
        ({"min_segment_seconds": 0.0}, "predict.min_segment_seconds=0.0"),
        ({"max_segment_seconds": 1.5}, "predict.max_segment_seconds=1.5 is below twice"),
        ({"merge_gap_seconds": -0.1}, "predict.merge_gap_seconds=-0.1"),
    ],
)
def test_a_setting_out_of_range_is_named_with_its_key_and_value(changes, named):
    problems = speech_settings_problems(SpeechSettings(**changes))
    assert len(problems) == 1
    assert problems[0].startswith(named)


def test_bad_settings_are_refused_before_the_file_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"predict\.merge_gap_seconds=-1"):
        speech_spans(tmp_path / "not-there.wav", SpeechSettings(merge_gap_seconds=-1))


# files


def write(path, wave: np.ndarray, rate: int = RATE, subtype: str = "FLOAT"):
    sf.write(path, wave, rate, subtype=subtype)
    return path


def test_a_missing_or_broken_file_is_named_in_the_error(tmp_path):
    with pytest.raises(UnreadableAudioError, match="not-there.wav"):
        speech_spans(tmp_path / "not-there.wav", SpeechSettings())
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not a wave file" * 10)
    with pytest.raises(UnreadableAudioError, match="broken.wav"):
        speech_spans(broken, SpeechSettings())


def test_silence_and_low_noise_hold_no_speech(tmp_path):
    noise = 10 ** (-60 / 20) * np.random.default_rng(0).standard_normal(10 * RATE)
    for name, wave in (("zeros", np.zeros(10 * RATE)), ("noise", noise)):
        path = write(tmp_path / f"{name}.wav", wave)
        assert speech_probabilities(path).max() < 0.2  # measured 0.01 and 0.09
        assert speech_spans(path, SpeechSettings()) == []


def test_a_steady_tone_and_sustained_chords_are_not_speech(tmp_path):
    t = np.arange(10 * RATE) / RATE
    tone = 0.25 * np.sin(2 * np.pi * 220 * t)
    # C, Am, F, G and C again, 2 s each, every note with six harmonics falling off as 1/n, as an organ holds them.
    triads = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    notes = np.zeros_like(t)
    for index, triad in enumerate(triads + triads[:1]):
        held = slice(index * 2 * RATE, (index + 1) * 2 * RATE)
        notes[held] = sum(np.sin(2 * np.pi * f * n * t[held]) / n for f in triad for n in range(1, 7))
    chords = 0.1 * notes / np.abs(notes).max()
    for name, wave in (("tone", tone), ("chords", chords)):
        path = write(tmp_path / f"{name}.wav", wave)
        assert speech_probabilities(path).max() < 0.3  # measured 0.16 and 0.07
        assert speech_spans(path, SpeechSettings()) == []


def placed_speech(seconds: float) -> np.ndarray:
    """Demo-corpus utterances of neutral expression at PLACED, over a noise floor at -70 dBFS."""
    rng = np.random.default_rng(1)
    female, male = demo.make_voices(0)[:2]
    wave = 10 ** (-70 / 20) * rng.standard_normal(int(seconds * RATE))
    for (start, length), voice in zip(PLACED, (female, male, female), strict=True):
        utterance = demo.synthesise(voice, demo.Expression(0.0, 0.0, 0.0), rng, seconds=length)
        wave[int(start * RATE) : int(start * RATE) + len(utterance)] += utterance
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    # 12 s and 80 samples: the last chunk holds only samples that a streaming resampler returns when flushed
    return write(tmp_path_factory.mktemp("speech") / "placed.wav", placed_speech(12.0 + 80 / RATE))


def audible_extent(wave: np.ndarray, rate: int = RATE, floor_db: float = -50.0) -> tuple[float, float]:
    """Seconds from the start of `wave` to its first and past its last 10 ms louder than `floor_db` (dBFS):
    where an utterance sounds, inside the quiet lead and tail the synthesiser leaves around its syllables."""
    hop = rate // 100
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(10 * np.log10(np.mean(frames**2, axis=1) + 1e-12) > floor_db)
    return loud[0] / 100, (loud[-1] + 1) / 100


@pytest.fixture(scope="module")
def sounded(speech_file) -> list[tuple[float, float]]:
    """Where each PLACED utterance of `speech_file` sounds, in seconds of the file."""
    wave = sf.read(speech_file, dtype="float32")[0]
    extents = [audible_extent(wave[int(start * RATE) : int((start + length) * RATE)]) for start, length in PLACED]
    return [(start + first, start + last) for (start, _), (first, last) in zip(PLACED, extents, strict=True)]


def test_synthetic_utterances_are_found_where_they_sound(speech_file, sounded):
    spans = speech_spans(speech_file, SpeechSettings())
    assert len(spans) == len(PLACED)
    for span, (start, end) in zip(spans, sounded, strict=True):
        assert span.start_s == pytest.approx(start, abs=TOLERANCE_S)
        assert span.end_s == pytest.approx(end, abs=TOLERANCE_S)
    chance = speech_probabilities(speech_file)
    for start, end in sounded:  # the model is sure of each, not hovering at the threshold
        assert chance[int(start / CHUNK_SECONDS) : int(end / CHUNK_SECONDS)].max() > 0.95


@pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")  # silero_vad's loader's own
def test_probabilities_equal_silero_own_streaming_model_across_read_blocks(speech_file, monkeypatch):
    """Blocks of 1000 frames (no multiple of a chunk) carry the state, the chunk's tail and the leftover
    samples from block to block; silero's per-chunk ONNX model, as its own wrapper runs it, is the reference."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # its import sets torch to one thread

        reference = load_silero_vad(onnx=True).audio_forward(torch.from_numpy(sf.read(speech_file)[0]).float(), RATE)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(speech, "READ_BLOCK_FRAMES", 1000)
    streamed = speech_probabilities(speech_file)
    np.testing.assert_allclose(streamed, reference.numpy().ravel(), atol=1e-5)


def test_a_44k_three_channel_file_gives_the_spans_of_its_16k_mono_version(speech_file, tmp_path):
    mono = sf.read(speech_file, dtype="float32")[0]
    at_44k = soxr.resample(mono, RATE, 44_100)
    # Other speech, 3 s later, in two channels with opposite signs: only their average is the mono file.
    other = np.roll(at_44k, 3 * 44_100)
    channels = np.stack([at_44k + other, at_44k - other, at_44k], axis=1)
    stereo_path = write(tmp_path / "three-channel.wav", channels, 44_100, "PCM_24")
    expected = speech_spans(speech_file, SpeechSettings())
    found = speech_spans(stereo_path, SpeechSettings())
    assert len(speech_probabilities(stereo_path)) == len(speech_probabilities(speech_file)) == 376
    assert len(found) == len(expected) == len(PLACED)
    for a, b in zip(found, expected, strict=True):
        assert a.start_s == pytest.approx(b.start_s, abs=CHUNK_SECONDS + 1e-9)
        assert a.end_s == pytest.approx(b.end_s, abs=CHUNK_SECONDS + 1e-9)


def test_a_three_minute_file_is_read_a_block_at_a_time(speech_file, tmp_path):
    """Peak Python allocation while scanning 3 minutes of 44.1 kHz stereo stays under a tenth of the decoded
    file (63 MB as float32); the utterances near its start, middle and end are found."""
    rate, seconds, placed_at = 44_100, 180, (10.0, 95.0, 170.0)
    first_placed = sf.read(speech_file, dtype="float32", start=int(0.9 * RATE), stop=int(3.6 * RATE))[0]
    sounds_from, _ = audible_extent(first_placed)
    utterance = soxr.resample(first_placed, RATE, rate)
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", rate, channels=2, subtype="PCM_16") as file:
        for second in range(seconds):
            block = np.zeros((rate, 2), np.float32)
            for start in placed_at:
                offset = round((start - second) * rate)
                if -len(utterance) < offset < rate:
                    piece = utterance[max(0, -offset) : rate - offset]
                    block[max(0, offset) : max(0, offset) + len(piece)] += piece[:, None]
            file.write(block)
    decoded_bytes = seconds * rate * 2 * 4

    tracemalloc.start()
    try:
        spans = speech_spans(path, SpeechSettings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < decoded_bytes / 10
    assert len(spans) == len(placed_at)
    for span, start in zip(spans, placed_at, strict=True):
        assert span.start_s == pytest.approx(start + sounds_from, abs=TOLERANCE_S)


def test_detection_imports_neither_torch_nor_silero_vad_which_would_pin_torch_to_one_thread(speech_file):
    script = (
        "import sys; from emotion.data.speech import speech_spans, SpeechSettings; "
        f"assert speech_spans({str(speech_file)!r}, SpeechSettings()); "
        "assert 'silero_vad' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_span_seconds_is_its_length():
    assert Span(1.25, 4.0).seconds == 2.75
