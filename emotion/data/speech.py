"""Where a long recording holds speech, in seconds, so that prediction can cut it into utterances.

Silero VAD gives one speech probability per 32 ms chunk (512 samples at 16 kHz); `spans_from_probabilities`
turns those into segments a model can predict: hysteresis, short pauses bridged, short bursts dropped, long
stretches split evenly.

The file is read a block at a time, its channels averaged and the block resampled to 16 kHz by a streaming
resampler, and the model carries its state from one block to the next: memory stays flat however long the
recording is, and only the probabilities (4 bytes per 32 ms, 450 kB an hour) are kept.

Backend: silero's sequence ONNX model (silero_vad_16k_sequence.onnx, in the pip package from 6.2.2), run by
onnxruntime on one thread. It is the streaming network exported to take many consecutive chunks in one call,
and its probabilities are bit-identical to the per-chunk ONNX model's. Single-threaded on this project's
2-core CPU, one chunk costs 0.24 ms through the TorchScript model, 0.12 ms through the per-chunk ONNX model
and 0.05 ms through the sequence model (about 130×, 280× and 630× real time): the per-call overhead, not
the network, is what the per-chunk models spend their time on. A second thread buys 25 % more speed for 60 %
more CPU time, so the model keeps to one and leaves the caller's threads to the emotion model. Reading and
resampling included, an hour of 16 kHz mono takes about 6 s of CPU time and an hour of 44.1 kHz stereo 10 s.

The model file is found without importing `silero_vad`, whose import sets torch's thread count to 1 for the
whole process.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000  # the model's
CHUNK_SAMPLES = 512
CHUNK_SECONDS = CHUNK_SAMPLES / SAMPLE_RATE
CONTEXT_SAMPLES = 64  # each chunk reaches the model behind the last samples of the one before, as silero streams it
STATE_SHAPE = (1, 1, 128)  # the LSTM's hidden and cell state
HYSTERESIS = 0.15  # speech ends this far below the probability that started it
LOWEST_END_THRESHOLD = 0.01  # with a threshold under HYSTERESIS, speech would otherwise never end
# File frames read at a time: 1.4–4 s at common rates, so each model call takes 45–130 chunks (a larger
# call is no faster) and a block of even 8 channels is 2 MB.
READ_BLOCK_FRAMES = 1 << 16
MODEL_FILE = "silero_vad_16k_sequence.onnx"


@dataclass(frozen=True)
class SpeechSettings:
    threshold: float = 0.5  # speech probability that starts speech; it ends below threshold - HYSTERESIS
    min_segment_seconds: float = 1.0  # shorter speech segments are dropped (after merging)
    max_segment_seconds: float = 10.0  # longer ones are split into equal parts no longer than this
    merge_gap_seconds: float = 0.3  # pauses shorter than this join their neighbours into one segment


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


class UnreadableAudioError(RuntimeError):
    """An audio file that soundfile cannot open or decode (a RuntimeError, as soundfile's own errors are)."""


def speech_settings_problems(settings: SpeechSettings, prefix: str = "predict") -> list[str]:
    """What is wrong with `settings`, one message per key as `prefix.key=value`; empty when they are usable."""
    s, problems = settings, []
    if not 0 < s.threshold < 1:  # written so that NaN fails too
        problems.append(f"{prefix}.vad_threshold={s.threshold}: a speech probability, strictly between 0 and 1")
    if not s.min_segment_seconds > 0:
        problems.append(
            f"{prefix}.min_segment_seconds={s.min_segment_seconds}: must be above 0, as an empty segment "
            "has nothing to predict"
        )
    # A stretch longer than the maximum is cut into equal parts longer than half of it: at twice the
    # minimum, no part falls below the minimum.
    if not s.max_segment_seconds >= 2 * s.min_segment_seconds:
        problems.append(
            f"{prefix}.max_segment_seconds={s.max_segment_seconds} is below twice "
            f"{prefix}.min_segment_seconds={s.min_segment_seconds}: longer speech is cut into equal parts of at "
            "least half the maximum, which would fall below the minimum; raise it to at least twice that"
        )
    if not s.merge_gap_seconds >= 0:
        problems.append(f"{prefix}.merge_gap_seconds={s.merge_gap_seconds}: a pause length, 0 or more")
    return problems


def speech_spans(path: str | Path, settings: SpeechSettings) -> list[Span]:
    """Speech in the audio file at `path`, in seconds of the file; [] when it holds no speech (silence, music)."""
    _require_usable(settings)
    probabilities, duration_s = _scan(Path(path))
    return spans_from_probabilities(probabilities, CHUNK_SECONDS, duration_s, settings)


def speech_probabilities(path: str | Path) -> np.ndarray:
    """One speech probability per 32 ms chunk of the file at 16 kHz, the last chunk padded with silence."""
    return _scan(Path(path))[0]


def spans_from_probabilities(
    probabilities: np.ndarray, chunk_seconds: float, duration_s: float, settings: SpeechSettings
) -> list[Span]:
    """Segments of speech from per-chunk probabilities, in this order: speech starts at a chunk of
    `threshold` or more and ends at the first below `threshold - HYSTERESIS`; spans are clipped to the
    recording's `duration_s` (the last chunk is padded past it); pauses shorter than `merge_gap_seconds`
    are bridged; spans shorter than `min_segment_seconds` are dropped; spans longer than
    `max_segment_seconds` are split into the fewest equal parts that fit, each then longer than half of it.
    """
    _require_usable(settings)
    spans = _hysteresis_spans(np.asarray(probabilities), chunk_seconds, settings.threshold)
    spans = [Span(span.start_s, min(span.end_s, duration_s)) for span in spans if span.start_s < duration_s]
    spans = _bridge_pauses(spans, settings.merge_gap_seconds)
    spans = [span for span in spans if span.seconds >= settings.min_segment_seconds]
    return [part for span in spans for part in _split_evenly(span, settings.max_segment_seconds)]


def _require_usable(settings: SpeechSettings) -> None:
    problems = speech_settings_problems(settings)
    if problems:
        raise ValueError("Speech detection settings out of range:\n  " + "\n  ".join(problems))


def _hysteresis_spans(probabilities: np.ndarray, chunk_seconds: float, threshold: float) -> list[Span]:
    end_threshold = max(threshold - HYSTERESIS, LOWEST_END_THRESHOLD)
    spans, start = [], None
    for index, probability in enumerate(probabilities.tolist()):  # Python floats: a loop over numpy's is slower
        if start is None and probability >= threshold:
            start = index
        elif start is not None and probability < end_threshold:
            spans.append(Span(start * chunk_seconds, index * chunk_seconds))
            start = None
    if start is not None:
        spans.append(Span(start * chunk_seconds, len(probabilities) * chunk_seconds))
    return spans


def _bridge_pauses(spans: list[Span], merge_gap_seconds: float) -> list[Span]:
    bridged: list[Span] = []
    for span in spans:
        if bridged and span.start_s - bridged[-1].end_s < merge_gap_seconds:
            bridged[-1] = Span(bridged[-1].start_s, span.end_s)
        else:
            bridged.append(span)
    return bridged


def _split_evenly(span: Span, max_seconds: float) -> list[Span]:
    if span.seconds <= max_seconds:
        return [span]
    parts = math.ceil(span.seconds / max_seconds - 1e-9)  # a span of 20.0000000001 s in two parts, not three
    edges = np.linspace(span.start_s, span.end_s, parts + 1)
    return [Span(float(start), float(end)) for start, end in zip(edges[:-1], edges[1:], strict=True)]


def _scan(path: Path) -> tuple[np.ndarray, float]:
    """The file's speech probabilities and its duration in seconds."""
    detector = _StreamingDetector(_model_session())
    with _open_audio(path) as file:
        probabilities = [detector.feed(samples) for samples in _mono_blocks_at_model_rate(file)]
        duration_s = file.frames / file.samplerate
    probabilities.append(detector.finish())
    return np.concatenate(probabilities), duration_s


def _open_audio(path: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(path)
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise UnreadableAudioError(f"Cannot open the audio file {path}: {err}") from err


def _mono_blocks_at_model_rate(file: sf.SoundFile) -> Iterator[np.ndarray]:
    """The file's samples a block at a time, channels averaged, resampled to SAMPLE_RATE."""
    resampler = None
    if file.samplerate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(file.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    while len(block := _read_block(file)):
        mono = block.mean(axis=1, dtype=np.float32)
        yield mono if resampler is None else resampler.resample_chunk(mono)
    if resampler is not None:  # the samples still inside its filter
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _read_block(file: sf.SoundFile) -> np.ndarray:
    try:
        return file.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:
        raise UnreadableAudioError(f"Cannot decode the audio file {file.name}: {err}") from err


class _StreamingDetector:
    """The model over a stream of 16 kHz samples: probabilities for the whole chunks that have arrived, its
    LSTM state and the previous chunk's tail carried from one call to the next."""

    def __init__(self, session):
        self.session = session
        self.hidden = np.zeros(STATE_SHAPE, np.float32)
        self.cell = np.zeros(STATE_SHAPE, np.float32)
        self.previous_tail = np.zeros(CONTEXT_SAMPLES, np.float32)  # silence before the first chunk
        self.pending = np.zeros(0, np.float32)  # samples short of a whole chunk

    def feed(self, samples: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self.pending, samples])
        whole = len(samples) // CHUNK_SAMPLES * CHUNK_SAMPLES
        self.pending = samples[whole:]
        return self._run(samples[:whole].reshape(-1, CHUNK_SAMPLES))

    def finish(self) -> np.ndarray:
        """The probability of the last, partial chunk, padded with silence as silero pads it."""
        if not len(self.pending):
            return np.zeros(0, np.float32)
        last = np.zeros((1, CHUNK_SAMPLES), np.float32)
        last[0, : len(self.pending)] = self.pending
        self.pending = np.zeros(0, np.float32)
        return self._run(last)

    def _run(self, chunks: np.ndarray) -> np.ndarray:
        if not len(chunks):
            return np.zeros(0, np.float32)
        tails = np.concatenate([self.previous_tail[None], chunks[:-1, -CONTEXT_SAMPLES:]])
        self.previous_tail = chunks[-1, -CONTEXT_SAMPLES:].copy()
        probabilities, self.hidden, self.cell = self.session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.concatenate([tails, chunks], axis=1), "h": self.hidden, "c": self.cell},
        )
        return probabilities


@functools.cache
def _model_session():
    """The model, loaded once per process (an onnxruntime session may run several files at once, on threads)."""
    import onnxruntime

    package = importlib.util.find_spec("silero_vad")  # found, not imported: see the module's docstring
    if package is None or package.origin is None:
        raise ImportError("Speech detection needs the silero-vad package: pip install 'silero-vad>=6.2.2'")
    model_path = Path(package.origin).parent / "data" / MODEL_FILE
    if not model_path.is_file():
        raise ImportError(
            f"The installed silero-vad has no {MODEL_FILE} (it came with 6.2.2): pip install 'silero-vad>=6.2.2'"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # see the module's docstring
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
