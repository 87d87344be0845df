"""Hidden states of a frozen encoder, computed once per utterance and read back by every later epoch and by
every job of a sweep that shares them.

An entry is one float16 array (frames, hidden) per hidden state of one piece of audio (a whole file, or one
chunk of a long one), read memory-mapped:

    <cache_dir>/features/<encoder>/<aa>/<audio>[@<start>+<length>].L<layer>.npy

<encoder> hashes the encoder's weights and configuration and the precision it runs in (bf16 or fp16
autocast rounds its states differently from fp32), so a retrained or different encoder, or one run in another
precision, never reads states it would not have computed; <audio> hashes the file's bytes
(emotion.data.content). With one file per layer, a job reads whatever layers earlier jobs computed, for any
layer set: a cache built for more layers serves fewer.
Entries are written to a temporary name and renamed, and one job at a time builds (a lock file): the others
wait, then find what it wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emotion.cpu import worker_init
from emotion.data.audio import load_audio
from emotion.data.content import content_hashes
from emotion.data.sampler import capped_batches
from emotion.files import locked, write_atomically
from emotion.models.encoder import STATES_DTYPE, SpeechEncoder
from emotion.signals import GracefulStop

log = logging.getLogger(__name__)

# Bump when what an entry holds changes: every entry is then recomputed.
CACHE_FORMAT = 1
BYTES_PER_VALUE = STATES_DTYPE.itemsize
# Configuration keys that change nothing in a frozen encoder's output (it runs in eval mode).
RUN_ONLY_KEYS = ("transformers_version", "_name_or_path", "dropout", "mask_", "layerdrop")


class FeatureCacheError(RuntimeError):
    pass


@dataclass(frozen=True)
class Piece:
    """Audio the encoder sees at once: a whole file (`length` None) or a chunk of a long one, in samples."""

    path: Path
    start: int = 0
    length: int | None = None


@dataclass(frozen=True)
class FeatureStore:
    """Finds and reads the entries of one encoder and layer set. Picklable: data loader workers read too."""

    dir: Path
    layers: tuple[int, ...]
    digests: dict[Path, str]  # audio file → content hash

    def entry(self, piece: Piece, layer: int) -> Path:
        digest = self.digests[piece.path]
        name = digest if piece.length is None else f"{digest}@{piece.start}+{piece.length}"
        return self.dir / digest[:2] / f"{name}.L{layer:02d}.npy"

    def open(self, piece: Piece) -> list[np.ndarray]:
        """The piece's entries, memory-mapped, one (frames, hidden) array per layer."""
        return [np.load(self.entry(piece, layer), mmap_mode="r") for layer in self.layers]

    def read(self, piece: Piece) -> np.ndarray:
        """All states of `piece`: (frames, layers, hidden), float16."""
        return np.stack(self.open(piece), axis=1)

    def missing_layers(self, piece: Piece) -> list[int]:
        return [layer for layer in self.layers if not self.entry(piece, layer).is_file()]


def ensure_features(
    encoder: SpeechEncoder,
    pieces: dict[Piece, int],
    cache_dir: str | Path,
    sample_rate: int,
    *,
    device: torch.device,
    autocast,
    batch_size: int,
    workers: int,
    max_gb: float,
    max_batch_samples: int | None = None,
    show_bar: bool = False,
    stop: GracefulStop | None = None,
) -> FeatureStore:
    """The store of `encoder`'s states for `pieces` (each with its length in samples), computing what is missing
    in batches of at most `batch_size` pieces and `max_batch_samples` samples of audio (padding included).

    `encoder` is the frozen SpeechEncoder; its `layers` are the hidden states stored, computed under `autocast`
    (whose precision is part of the store's key). The expected size is
    logged before anything is computed; more than `max_gb` in this encoder's cache, or more than the disk
    has free, stops with an error before any work. A requested `stop` ends the build between batches (what
    is written stays) by raising Interrupted.
    """
    store = FeatureStore(
        Path(cache_dir) / "features" / encoder_fingerprint(encoder, sample_rate, autocast_dtype(autocast, device)),
        tuple(encoder.layers),
        content_hashes(sorted({piece.path for piece in pieces}), Path(cache_dir)),
    )
    store.dir.mkdir(parents=True, exist_ok=True)
    # One builder at a time per encoder: the others would compute the same entries.
    waiting = partial(log.info, "waiting for another job building %s", store.dir)
    with locked(store.dir / ".build.lock", waiting, stop):
        missing = {piece: layers for piece in pieces if (layers := store.missing_layers(piece))}
        if not missing:
            log.info("encoder states of all %d pieces of audio are cached in %s", len(pieces), store.dir)
            return store
        _check_size(store, missing, pieces, encoder, max_gb)
        started = time.perf_counter()
        todo = list(missing)
        # Longest first, as evaluation batches are cut: the preflight checked the largest.
        lengths = [pieces[piece] for piece in todo]
        batches = [[todo[i] for i in batch] for batch in capped_batches(lengths, batch_size, max_batch_samples)]
        _compute(store, missing, batches, encoder, sample_rate, device, autocast, workers, show_bar, stop)
        log.info("feature cache: %d pieces computed in %.0f s", len(missing), time.perf_counter() - started)
    return store


def autocast_dtype(autocast, device: torch.device) -> str:
    """The dtype `device` computes in inside the `autocast` context: float32 where it enables no autocast.
    Read from the context itself, so that the cache's key is whatever precision the states are computed in."""
    with autocast:
        return str(torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32)


def encoder_fingerprint(encoder: SpeechEncoder, sample_rate: int, dtype: str) -> str:
    """A hash of everything that decides the encoder's hidden states: weights, configuration, input handling,
    and the `dtype` it computes in."""
    config = {
        key: value
        for key, value in encoder.wavlm.config.to_dict().items()
        if not any(part in key for part in RUN_ONLY_KEYS)
    }
    settings = {
        "format": CACHE_FORMAT,
        "sample_rate": sample_rate,
        "normalize_waveform": encoder.normalize_waveform,
        "dtype": dtype,
        "config": config,
    }
    digest = hashlib.blake2b(json.dumps(settings, sort_keys=True, default=str).encode(), digest_size=12)
    for name, tensor in encoder.wavlm.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _check_size(
    store: FeatureStore,
    missing: dict[Piece, list[int]],
    samples: dict[Piece, int],
    encoder: SpeechEncoder,
    max_gb: float,
) -> None:
    frames = encoder.frame_lengths(torch.tensor([samples[piece] for piece in missing])).tolist()
    new_bytes = sum(
        n * len(layers) * encoder.hidden_size * BYTES_PER_VALUE
        for layers, n in zip(missing.values(), frames, strict=True)
    )
    present_bytes = sum(entry.stat().st_size for entry in store.dir.rglob("*.npy"))
    new_gb, total_gb = new_bytes / 1e9, (present_bytes + new_bytes) / 1e9
    log.info(
        "feature cache: computing %d pieces × layers %s, %s in float16, into %s (%s there already)",
        len(missing),
        list(store.layers),
        _size(new_bytes),
        store.dir,
        _size(present_bytes),
    )
    if total_gb > max_gb:
        raise FeatureCacheError(
            f"encoder.feature_cache_max_gb={max_gb}: the feature cache in {store.dir} would grow to {total_gb:.1f} "
            f"GB ({new_gb:.1f} GB new for layers {list(store.layers)}). Raise encoder.feature_cache_max_gb, "
            "choose fewer model.speech_encoder_layers, point paths.cache_dir at a larger disk, or run without "
            "the cache (encoder.feature_cache=false)."
        )
    free_gb = shutil.disk_usage(store.dir).free / 1e9
    if new_gb > free_gb:
        raise FeatureCacheError(
            f"the feature cache needs {new_gb:.1f} GB in {store.dir}, but the disk has {free_gb:.1f} GB free: "
            "free some space, point paths.cache_dir at a larger disk, or set encoder.feature_cache=false."
        )


def _compute(store, missing, batches, encoder, sample_rate, device, autocast, workers, show_bar, stop) -> None:
    loader = DataLoader(
        _PieceAudio(sample_rate),
        batch_sampler=batches,
        collate_fn=_pad,
        num_workers=workers,
        # Its own generator: drawing worker seeds from the global one would make a job that builds the
        # cache train differently from one that finds it built.
        generator=torch.Generator(),
        worker_init_fn=worker_init,
    )
    encoder.eval()
    for batch, waves, lengths in tqdm(loader, desc="feature cache", disable=not show_bar, leave=False):
        if stop is not None:
            stop.check("the encoder states computed so far are cached")
        with torch.no_grad(), autocast:
            states = encoder.hidden_states(waves.to(device), lengths.to(device))  # (B, frames, layers, hidden)
        states = states.to(STATES_DTYPE).cpu().numpy()
        for row, (piece, n_frames) in enumerate(zip(batch, encoder.frame_lengths(lengths).tolist(), strict=True)):
            for k, layer in enumerate(store.layers):
                if layer in missing[piece]:
                    entry = store.entry(piece, layer)
                    entry.parent.mkdir(parents=True, exist_ok=True)
                    write_atomically(entry, _npy_bytes(states[row, :n_frames, k]))


class _PieceAudio(Dataset):
    """Decodes pieces of audio; indexed by the pieces themselves."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __getitem__(self, piece: Piece) -> tuple[Piece, np.ndarray]:
        wave = load_audio(piece.path, self.sample_rate)
        stop = None if piece.length is None else piece.start + piece.length
        return piece, wave[piece.start : stop]


def _pad(examples: list[tuple[Piece, np.ndarray]]) -> tuple[list[Piece], torch.Tensor, torch.Tensor]:
    lengths = [len(wave) for _, wave in examples]
    waves = torch.zeros(len(examples), max(lengths))
    for row, (_, wave) in enumerate(examples):
        waves[row, : len(wave)] = torch.from_numpy(wave)
    return [piece for piece, _ in examples], waves, torch.tensor(lengths)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()
