"""Augmented copies of the training audio, and fixed corruptions of test audio, written once to the cache.

`augmented_items` makes `augment.copies` copies of each training utterance: audio files in the cache, each an
`Item` like its original (speaker, labels, fold, split) with the id `<id>~aug<k>`. A copy is then read like any
other item, so the acoustic-feature and encoder-state caches keep one entry per copy. Each copy keeps its
original's exact length (a reverberation tail is cut), so durations and labels stay aligned. A copy applies, in
this order, each transform whose probability it draws: reverberation, noise, gain, band limits, MP3 coding, a
telephone channel (audiomentations, and pyroomacoustics for simulated rooms).

`corrupted_items` gives evaluation's fixed conditions (`clean`, `snr10`, `reverb`, `codec16`, `telephone`):
items with the same ids whose audio is corrupted the same way every time, for robustness curves.

    <cache_dir>/augment/<name>-<recipe hash>/<aa>/<version hash>.wav     copies
    <cache_dir>/augment/rooms-<hash>/room<i>.wav                          simulated rooms' impulse responses
    <cache_dir>/conditions/<condition>-<recipe hash>/<aa>/<version hash>.wav

The recipe hash covers everything that changes the audio (the settings but `copies`, the files of a noise or
impulse-response folder, the sample rate, the libraries' versions); the version hash adds the source file (its
path, size and modification time), the item's id and k. Files are written whole or not at all, and a file that
exists is used as it is.

Copy k of an item is a function of (augment.seed, item.id, k) alone: audiomentations draws from Python's and
NumPy's global generators, which are seeded from those for each copy and given back to the caller as they were.

audiomentations and pyroomacoustics take a second each to import: they are imported on first use, so that a
config check that reads `condition_problems` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import multiprocessing
import random
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from emotion.data.audio import load_audio, mono_at_rate
from emotion.data.corpus import Item
from emotion.files import write_atomically
from emotion.settings import AugmentSettings

log = logging.getLogger(__name__)

# Bump when the same settings would give other audio (a transform's code changed): old files are then not reused.
AUGMENT_VERSION = 1
ROOMS_VERSION = 1
# What a noise or impulse-response folder is searched for, at any depth.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

# Simulated rooms: shoebox sizes (length, width, height; metres) and where talker and microphone may stand.
ROOM_SIZE_M = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))
WALL_DISTANCE_M = 0.5
TALKER_HEIGHT_M = (1.2, 1.9)
MIN_TALKER_DISTANCE_M = 0.5
ROOM_ATTEMPTS = 100

MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)  # kbit/s
MIN_CODEC_SECONDS = 0.1  # fast-mp3-augment's shortest input: shorter audio is left uncoded
# Band limits stay below the Nyquist frequency, where a low-pass filter could not be designed.
HIGHEST_CUTOFF_OF_NYQUIST = 0.9
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU_LAW = 255  # G.711's μ: 8-bit codes
WAVE_FORMAT_IEEE_FLOAT = 3

# Evaluation's conditions.
CONDITION_FORMS = "clean, snrN (e.g. snr10, snr-5), reverb, codec or codecN (MP3 at N kbit/s, e.g. codec32), telephone"
PINK_DB_PER_OCTAVE = -3.01  # snrN's generated noise
CONDITION_ROOMS = 8  # reverb: each utterance in one of these rooms
CONDITION_RT60_S = [0.4, 0.8]
CONDITION_CODEC_KBPS = 16  # codec without a bitrate
# A condition is the augmentation of one transform, applied always: these are the others, switched off.
NO_AUGMENTATION = {
    "copies": 1,
    "noise_p": 0.0,
    "noise_dir": None,
    "snr_db": [0.0, 0.0],
    "noise_slope_db": [PINK_DB_PER_OCTAVE, PINK_DB_PER_OCTAVE],
    "reverb_p": 0.0,
    "rir_dir": None,
    "rooms": CONDITION_ROOMS,
    "rt60_s": CONDITION_RT60_S,
    "gain_p": 0.0,
    "gain_db": [0.0, 0.0],
    "band_p": 0.0,
    "band_low_hz": list(TELEPHONE_BAND_HZ[:1]) * 2,
    "band_high_hz": list(TELEPHONE_BAND_HZ[1:]) * 2,
    "codec_p": 0.0,
    "codec_kbps": [CONDITION_CODEC_KBPS] * 2,
    "telephone_p": 0.0,
}


# An augmented copy's id: its original's, then this and the copy's number (`Ses01F_000~aug2`).
AUGMENTED_ID = "~aug"


def augmented_items(
    items: list[Item], settings: AugmentSettings, sample_rate: int, cache_dir: str | Path, workers: int = 1
) -> list[Item]:
    """`settings.copies` augmented copies of each item (`<id>~aug<k>`, k = 1, 2, …), their audio written to
    the cache where it is not there yet, in `workers` processes. Items already known to be unusable get none.
    Pass training items only: validation and test audio are never augmented."""
    if settings.copies == 0 or not items:
        return []
    recipe = _recipe(settings, sample_rate, Path(cache_dir), "augment")
    copies, jobs = [], []
    for item in items:
        if item.unusable is not None:
            continue
        versions = [(_seed_key(settings.seed, item.id, k), recipe.file(item, k)) for k in range(1, settings.copies + 1)]
        copies += [
            replace(item, id=f"{item.id}{AUGMENTED_ID}{k}", path=path) for k, (_, path) in enumerate(versions, start=1)
        ]
        missing = [(key, path) for key, path in versions if not path.is_file()]
        if missing:
            jobs.append((recipe, item.path, missing))
    _write(jobs, workers, f"augmented copies (augment={settings.name})", recipe.folder)
    return copies


def corrupted_items(
    items: list[Item],
    condition: str,
    seed: int,
    sample_rate: int,
    cache_dir: str | Path,
    noise_dir: str | Path | None = None,
    rir_dir: str | Path | None = None,
    workers: int = 1,
) -> list[Item]:
    """The items as heard under `condition` (see `CONDITION_FORMS`): the same ids, their audio corrupted the
    same way for the same (condition, seed, id) and written to the cache once. `clean`: the items themselves.

    snrN adds noise at exactly N dB over the whole utterance: pink noise, or a recording from `noise_dir`. An
    utterance gets the same noise at every N (only its level differs), so a robustness curve is not bent by
    one level drawing luckier noise than another. reverb puts each utterance in one of 8 simulated rooms
    (RT60 0.4–0.8 s; or a response from `rir_dir`) at its own level; codecN is an MP3 round trip at N kbit/s;
    telephone a 300–3400 Hz, 8 kHz, 8-bit μ-law channel."""
    changes = condition_changes(condition)
    if changes is None:
        return list(items)
    values = {**NO_AUGMENTATION, **changes, "name": condition, "seed": seed}
    values.update(
        noise_dir=None if noise_dir is None else str(noise_dir), rir_dir=None if rir_dir is None else str(rir_dir)
    )
    recipe = _recipe(AugmentSettings(**values), sample_rate, Path(cache_dir), "conditions")
    corrupted, jobs = [], []
    for item in items:
        if item.unusable is not None:  # no audio to corrupt: the audio check reports it
            corrupted.append(item)
            continue
        path = recipe.file(item, 0)
        corrupted.append(replace(item, path=path))
        if not path.is_file():
            jobs.append((recipe, item.path, [(_seed_key(seed, item.id, 0), path)]))
    _write(jobs, workers, f"corrupted versions ({condition})", recipe.folder)
    return corrupted


def condition_changes(condition) -> dict | None:
    """The augmentation settings that make `condition` (over NO_AUGMENTATION); None for clean. A ValueError
    names a value that is no condition and the forms there are."""
    if condition == "clean":
        return None
    text = condition if isinstance(condition, str) else ""
    if snr := re.fullmatch(r"snr(-?\d+)", text):
        return {"noise_p": 1.0, "snr_db": [float(snr[1])] * 2}
    if text == "reverb":
        return {"reverb_p": 1.0}
    if text == "telephone":
        return {"telephone_p": 1.0}
    if codec := re.fullmatch(r"codec(\d*)", text):
        kbps = int(codec[1] or CONDITION_CODEC_KBPS)
        if kbps in MP3_BITRATES:
            return {"codec_p": 1.0, "codec_kbps": [kbps, kbps]}
        raise ValueError(
            f"evaluate.conditions: {condition!r} is not a condition; MP3 bitrates are "
            f"{', '.join(map(str, MP3_BITRATES))} kbit/s, e.g. codec{CONDITION_CODEC_KBPS}"
        )
    raise ValueError(f"evaluate.conditions: {condition!r} is not a condition; use {CONDITION_FORMS}")


def condition_problems(conditions) -> list[str]:
    """What in evaluate.conditions is not a list of conditions: one line per problem, with the value and the fix."""
    if isinstance(conditions, str) or not isinstance(conditions, Sequence):
        return [f"evaluate.conditions={conditions!r}: must be a list of conditions, e.g. [clean, snr20, snr10, snr0]"]
    problems = []
    for condition in conditions:
        try:
            condition_changes(condition)
        except ValueError as err:
            problems.append(str(err))
    repeated = sorted(str(condition) for condition, count in Counter(map(str, conditions)).items() if count > 1)
    if repeated:
        problems.append(f"evaluate.conditions: {', '.join(repeated)} named twice; each condition is scored once")
    return problems


def simulated_rooms(count: int, rt60_s: list[float], seed: int, sample_rate: int, cache_dir: str | Path) -> list[Path]:
    """`count` shoebox rooms' impulse responses from a talker to a microphone, as WAV files in the cache:
    simulated once (image sources, pyroomacoustics), with random sizes (ROOM_SIZE_M), wall absorption for a
    reverberation time drawn from `rt60_s`, and positions. Room i depends on (seed, i, rt60_s) alone. The
    direct path's delay is cut, so that reverberated speech is not shifted; each response peaks at 1."""
    import pyroomacoustics as pra

    key = {
        "count": count,
        "rt60_s": list(rt60_s),
        "seed": seed,
        "sample_rate": sample_rate,
        "version": ROOMS_VERSION,
        "library": f"pyroomacoustics {pra.__version__}",
    }
    folder = Path(cache_dir) / "augment" / f"rooms-{_digest(key)}"
    files = [folder / f"room{index:03d}.wav" for index in range(count)]
    missing = [index for index, path in enumerate(files) if not path.is_file()]
    if missing:
        log.info("simulating %d rooms' impulse responses in %s", len(missing), folder)
        folder.mkdir(parents=True, exist_ok=True)
        for index in missing:
            write_atomically(files[index], _wav_bytes(_room_response(index, rt60_s, seed, sample_rate), sample_rate))
    return files


def telephone_channel(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`wave` through a narrowband telephone line: 300–3400 Hz at 8 kHz, coded as 8-bit μ-law (G.711) and
    decoded, back at `sample_rate` and its own length."""
    narrow = mono_at_rate(wave, sample_rate, TELEPHONE_RATE).astype(np.float64)
    spectrum = np.fft.rfft(narrow)
    frequencies = np.fft.rfftfreq(len(narrow), 1 / TELEPHONE_RATE)
    low, high = TELEPHONE_BAND_HZ
    spectrum[(frequencies < low) | (frequencies > high)] = 0
    narrow = np.clip(np.fft.irfft(spectrum, n=len(narrow)), -1.0, 1.0)
    compressed = np.sign(narrow) * np.log1p(MU_LAW * np.abs(narrow)) / np.log1p(MU_LAW)
    codes = np.round((compressed + 1) / 2 * MU_LAW)  # 256 levels
    decoded = codes / MU_LAW * 2 - 1
    expanded = np.sign(decoded) * np.expm1(np.abs(decoded) * np.log1p(MU_LAW)) / MU_LAW
    return _fit(mono_at_rate(expanded, TELEPHONE_RATE, sample_rate), len(wave))


@dataclass(frozen=True)
class _Recipe:
    """What a version's audio depends on besides its source, id and k: the settings with their folders'
    files found, and the sample rate. `folder` is where its versions go."""

    settings: AugmentSettings
    sample_rate: int
    noise_files: tuple[str, ...]
    impulse_responses: tuple[str, ...]
    folder: Path

    def file(self, item: Item, k: int) -> Path:
        """Where version k of `item` goes: a name that changes with the source file, the id, k and the recipe."""
        stat = Path(item.path).stat()
        source = {"path": str(Path(item.path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        digest = _digest({"recipe": self.folder.name, "source": source, "id": item.id, "k": k})
        return self.folder / digest[:2] / f"{digest}.wav"


def _recipe(settings: AugmentSettings, sample_rate: int, cache_dir: Path, kind: str) -> _Recipe:
    """The recipe of `settings` at `sample_rate`: the folders' files listed, simulated rooms made if needed."""
    _check_bitrates(settings)
    group = "augment" if kind == "augment" else "evaluate"  # where the folders were given, for errors
    noise_files = ()
    if settings.noise_p > 0 and settings.noise_dir:
        noise_files = _audio_files(settings.noise_dir, f"{group}.noise_dir")
    impulse_responses: tuple[str, ...] = ()
    rooms = None
    if settings.reverb_p > 0:
        if settings.rir_dir:
            impulse_responses = _audio_files(settings.rir_dir, f"{group}.rir_dir")
        else:
            rooms = simulated_rooms(settings.rooms, settings.rt60_s, settings.seed, sample_rate, cache_dir)
            impulse_responses = tuple(map(str, rooms))
    used = {k: v for k, v in asdict(settings).items() if k != "copies"}
    libraries = ["audiomentations", *(["fast-mp3-augment"] if settings.codec_p > 0 else [])]
    key = {
        "version": AUGMENT_VERSION,
        "settings": used,
        "sample_rate": sample_rate,
        "libraries": [f"{name} {importlib.metadata.version(name)}" for name in libraries],
        # Recordings are known by name, size and time; simulated rooms by their folder, which names their making.
        "noise_files": _fingerprint(noise_files),
        "impulse_responses": rooms[0].parent.name if rooms else _fingerprint(impulse_responses),
    }
    name = re.sub(r"[^\w.+-]", "_", settings.name)
    folder = cache_dir / kind / f"{name}-{_digest(key)}"
    if not (folder / "recipe.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "recipe.json", json.dumps(key, indent=1))  # what made these files, for people
    return _Recipe(settings, sample_rate, noise_files, impulse_responses, folder)


def _check_bitrates(settings: AugmentSettings) -> None:
    if settings.codec_p > 0 and importlib.util.find_spec("fast_mp3_augment") is None:
        raise ValueError(
            f"augment.codec_p={settings.codec_p} needs the MP3 coder fast-mp3-augment: pip install fast-mp3-augment"
        )
    low, high = settings.codec_kbps
    if settings.codec_p > 0 and not any(low <= bitrate <= high for bitrate in MP3_BITRATES):
        raise ValueError(
            f"augment.codec_kbps={settings.codec_kbps}: holds no MP3 bitrate; "
            f"MP3 has {', '.join(map(str, MP3_BITRATES))} kbit/s"
        )


def _audio_files(folder: str, key: str) -> tuple[str, ...]:
    """The audio files in `folder` and below, in an order that does not depend on the file system."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{key}={folder!r}: not a folder; give a folder of audio files or null")
    files = sorted(str(path) for path in root.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    if not files:
        raise ValueError(f"{key}={folder!r}: holds no audio files ({', '.join(AUDIO_SUFFIXES)}) at any depth")
    return tuple(files)


def _fingerprint(files: tuple[str, ...]) -> list:
    return [(path, (stat := Path(path).stat()).st_size, stat.st_mtime_ns) for path in files]


def _write(jobs: list, workers: int, what: str, folder: Path) -> None:
    """Write each job's missing versions: one source decoded once for all of its versions."""
    if not jobs:
        return
    count = sum(len(versions) for _, _, versions in jobs)
    workers = max(1, min(workers, len(jobs)))
    log.info("writing %d %s of %d utterances in %d process(es) to %s", count, what, len(jobs), workers, folder)
    if workers > 1:
        # Spawned, not forked: the parent may already run torch's thread pools, which fork can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_versions, jobs, chunksize=4))
    else:
        for job in jobs:
            _write_versions(job)


def _write_versions(job: tuple[_Recipe, Path, list[tuple[bytes, Path]]]) -> None:
    recipe, source, versions = job
    wave = load_audio(source, recipe.sample_rate)
    chain = _chain(recipe)
    for seed_key, path in versions:
        with _seeded(seed_key):
            version = wave
            for transform in chain:
                version = np.asarray(transform(version, recipe.sample_rate), dtype=np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, _wav_bytes(_fit(version, len(wave)), recipe.sample_rate))


Transform = Callable[[np.ndarray, int], np.ndarray]
_chains: dict[Path, list[Transform]] = {}  # per recipe folder, in each process: transforms keep files loaded


def _chain(recipe: _Recipe) -> list[Transform]:
    """The transforms of `recipe`'s settings in the order they apply; those never drawn (p 0) left out."""
    if recipe.folder in _chains:
        return _chains[recipe.folder]
    import audiomentations as am

    settings, chain = recipe.settings, []
    if settings.reverb_p > 0:
        responses = am.ApplyImpulseResponse(list(recipe.impulse_responses), p=settings.reverb_p)
        chain.append(_LevelKept(responses))
    if settings.noise_p > 0:
        (low, high), p = settings.snr_db, settings.noise_p
        if recipe.noise_files:
            chain.append(am.AddBackgroundNoise(list(recipe.noise_files), min_snr_db=low, max_snr_db=high, p=p))
        else:
            slope_low, slope_high = settings.noise_slope_db
            chain.append(
                am.AddColorNoise(min_snr_db=low, max_snr_db=high, min_f_decay=slope_low, max_f_decay=slope_high, p=p)
            )
    if settings.gain_p > 0:
        chain.append(am.Gain(min_gain_db=settings.gain_db[0], max_gain_db=settings.gain_db[1], p=settings.gain_p))
    if settings.band_p > 0:
        highest = HIGHEST_CUTOFF_OF_NYQUIST * recipe.sample_rate / 2
        (high_pass_low, high_pass_high), (low_pass_low, low_pass_high) = settings.band_low_hz, settings.band_high_hz
        filters = dict(min_rolloff=12, max_rolloff=24, zero_phase=True, p=1.0)  # zero phase: nothing is delayed
        band = [
            am.HighPassFilter(min_cutoff_freq=high_pass_low, max_cutoff_freq=high_pass_high, **filters),
            am.LowPassFilter(
                min_cutoff_freq=min(low_pass_low, highest), max_cutoff_freq=min(low_pass_high, highest), **filters
            ),
        ]
        chain.append(am.Compose(band, p=settings.band_p))
    if settings.codec_p > 0:
        low, high = settings.codec_kbps
        chain.append(_PeakKept(am.Mp3Compression(low, high, backend="fast-mp3-augment", p=settings.codec_p)))
    if settings.telephone_p > 0:
        chain.append(_Drawn(telephone_channel, settings.telephone_p))
    _chains[recipe.folder] = chain
    return chain


class _LevelKept:
    """A transform whose output keeps its input's RMS level: a room changes the sound, not the talker's
    loudness, which is an arousal cue (ApplyImpulseResponse itself scales to a peak of 0.5)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        changed = self.transform(samples, sample_rate)
        if not self.transform.parameters["should_apply"]:
            return changed
        return changed * (_rms(samples) / max(_rms(changed), 1e-12))


class _PeakKept:
    """A coder that clips what exceeds full scale: louder audio is coded at full scale and scaled back. Audio
    shorter than the coder takes is passed on as it is."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if len(samples) < MIN_CODEC_SECONDS * sample_rate:
            return samples
        peak = max(1.0, float(np.abs(samples).max()))
        return self.transform(samples / peak, sample_rate) * peak


class _Drawn:
    """`transform` applied with probability `p`, drawn from the seeded `random` as audiomentations draws."""

    def __init__(self, transform: Transform, p: float):
        self.transform, self.p = transform, p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.transform(samples, sample_rate) if random.random() < self.p else samples


def _room_response(index: int, rt60_s: list[float], seed: int, sample_rate: int) -> np.ndarray:
    import pyroomacoustics as pra

    rng = np.random.default_rng(int.from_bytes(_seed_key("room", seed, index, *rt60_s)[:8], "big"))
    low, high = np.array(ROOM_SIZE_M).T
    for _ in range(ROOM_ATTEMPTS):
        size = rng.uniform(low, high)
        try:
            absorption, max_order = pra.inverse_sabine(rng.uniform(*rt60_s), size)
        except ValueError:  # too large a room for so short a time: even walls that absorb all would echo longer
            continue
        talker, microphone = (_position(size, rng) for _ in range(2))
        distance = float(np.linalg.norm(talker - microphone))
        if distance >= MIN_TALKER_DISTANCE_M:
            break
    else:
        raise ValueError(f"augment.rt60_s={rt60_s}: too short for rooms of {ROOM_SIZE_M} m; raise its low end")
    room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(talker)
    room.add_microphone(microphone)
    room.compute_rir()
    response = np.asarray(room.rir[0][0], dtype=np.float64)[int(distance / pra.constants.get("c") * sample_rate) :]
    return (response / np.abs(response).max()).astype(np.float32)


def _position(size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x, y = (rng.uniform(WALL_DISTANCE_M, side - WALL_DISTANCE_M) for side in size[:2])
    return np.array([x, y, rng.uniform(*TALKER_HEIGHT_M)])


@contextmanager
def _seeded(key: bytes) -> Iterator[None]:
    """Python's and NumPy's global generators seeded from `key` inside; the caller's states are back after."""
    saved = random.getstate(), np.random.get_state()
    random.seed(int.from_bytes(key[:16], "big"))
    np.random.seed(int.from_bytes(key[16:20], "big"))
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _seed_key(*parts) -> bytes:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).digest()


def _digest(value) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=8).hexdigest()


def _fit(wave: np.ndarray, length: int) -> np.ndarray:
    """`wave` cut or zero-padded to `length` samples, as float32."""
    wave = np.asarray(wave, dtype=np.float32)[:length]
    return np.pad(wave, (0, length - len(wave))) if len(wave) < length else wave


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if len(wave) else 0.0


def _wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """Mono 32-bit float WAV: exact, not clipped above full scale, and the same bytes for the same samples
    (libsndfile would add a PEAK chunk holding the time of writing)."""
    data = np.asarray(wave, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_IEEE_FLOAT, 1, sample_rate, 4 * sample_rate, 4, 32, 0)
    chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", len(wave))), (b"data", data)]
    body = b"".join(name + struct.pack("<I", len(content)) + content for name, content in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
