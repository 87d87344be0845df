"""Padding and loader throughput, bucketed vs random batches, and the acoustic feature cache's second run.

Builds a corpus of synthetic speech with IEMOCAP-like durations (log-normal, mean about 4.5 s, tail to
30 s), then runs one training epoch of the real data loader (crops at data.max_seconds, the default model's
acoustic features from their cache) with length-bucketed and with random batches, and times the acoustic
feature cache cold and warm.

    python bench/loader.py [--utterances 400] [--batch-size 8] [--workers 2]

The last lines are `padding_bucketed: <x>`, `padding_random: <x>` and `acoustic_cache_second_over_first: <x>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.data.corpus import Item, LabelScale  # noqa: E402
from emotion.data.demo import SAMPLE_RATE, draw_labels, expression_of, make_voices, synthesise  # noqa: E402
from emotion.data.sampler import LengthBucketSampler  # noqa: E402
from emotion.features.acoustic import EGEMAPS, FUNCTIONALS  # noqa: E402
from emotion.features.acoustic_cache import AcousticCache  # noqa: E402
from emotion.features.dataset import UtteranceDataset, collate  # noqa: E402
from emotion.models.grid import FrameGrid  # noqa: E402

GRID = FrameGrid(window=400, hop=320)  # WavLM's
MAX_SECONDS = 12.0


def iemocap_like_durations(count: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(4.5) - 0.18, 0.6, count), 0.6, 30.0)


def write_corpus(folder: Path, durations: np.ndarray) -> list[Item]:
    voices = make_voices(0)
    items = []
    for index, seconds in enumerate(durations):
        rng = np.random.default_rng(index)
        labels = draw_labels(rng)
        path = folder / f"{index:05d}.wav"
        sf.write(path, synthesise(voices[index % 10], expression_of(labels, rng), rng, seconds), SAMPLE_RATE)
        items.append(Item(id=path.stem, path=path, speaker=str(index % 10), labels=tuple(labels.values()), fold=1))
    return items


def one_epoch(dataset: UtteranceDataset, pool_batches: int, batch_size: int, workers: int) -> tuple[float, float]:
    """Seconds for one epoch through the DataLoader, and the share of padding in its batches."""
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=True, pool_batches=pool_batches)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    started = time.perf_counter()
    speech = padded = 0
    for batch in loader:
        speech += int(batch.speech_lengths.sum())
        padded += batch.speech.numel()
    return time.perf_counter() - started, 1.0 - speech / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        durations = iemocap_like_durations(args.utterances, np.random.default_rng(0))
        print(
            f"corpus: {len(durations)} utterances, mean {durations.mean():.2f} s, "
            f"median {np.median(durations):.2f} s, max {durations.max():.1f} s, {durations.sum() / 60:.1f} min",
            flush=True,
        )
        items = write_corpus(tmp / "audio", durations)
        paths = [item.path for item in items]

        def acoustic_cache() -> AcousticCache:  # the default model's sets: eGeMAPS descriptors and functionals
            return AcousticCache(tmp / "cache", SAMPLE_RATE, GRID, [EGEMAPS], FUNCTIONALS)

        started = time.perf_counter()
        acoustic_cache().ensure(paths, workers=args.workers)
        first = time.perf_counter() - started
        started = time.perf_counter()
        entries = acoustic_cache().ensure(paths, workers=args.workers)
        second = time.perf_counter() - started
        print(f"acoustic_cache_first_s: {first:.2f}\nacoustic_cache_second_s: {second:.3f}", flush=True)

        dataset = UtteranceDataset(
            items,
            list(durations),
            [entries[p] for p in paths],
            LabelScale(1, 5),
            GRID,
            SAMPLE_RATE,
            chunk_seconds=60.0,
            crop_seconds=MAX_SECONDS,
        )
        padding = {}
        for name, pool_batches in (("bucketed", 32), ("random", 1)):
            seconds, padding[name] = one_epoch(dataset, pool_batches, args.batch_size, args.workers)
            print(
                f"{name}: {len(items) / seconds:.1f} utterances/s, {sum(dataset.lengths) / SAMPLE_RATE / seconds:.0f} "
                f"s of audio/s, padding {padding[name]:.3f}",
                flush=True,
            )
        print(f"padding_bucketed: {padding['bucketed']:.3f}")
        print(f"padding_random: {padding['random']:.3f}")
        print(f"acoustic_cache_second_over_first: {second / first:.4f}")


if __name__ == "__main__":
    main()
