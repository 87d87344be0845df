"""What augmentation costs, per option (conf/augment/): per hour of audio, the CPU seconds of writing the
copies on first use, of reading them back, and of their eGeMAPS descriptors (openSMILE), and their disk.

Builds a corpus of synthetic speech with IEMOCAP-like durations, then for each option writes its copies into a
cache of its own (cold, but with the simulated rooms there already: they cost once per cache and are timed
apart), calls again (everything cached), reads every copy with load_audio and computes eGeMAPS's 25 low-level
descriptors from each, as the acoustic cache would on first use. `none` has no copies: its reading and
features are the original audio's, the baseline of the others.

    python bench/augment.py [--seconds 180] [--copies 2] [--workers 1]    # about a minute on 2 CPU cores

Every figure is per hour of the audio it handles (copies counted): writing 2 copies of 1 h of speech costs
twice the `write cold` figure. CPU seconds are this process's and its workers'.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loader import iemocap_like_durations, write_corpus  # noqa: E402
from emotion.data.audio import load_audio  # noqa: E402
from emotion.data.augment import augmented_items, simulated_rooms  # noqa: E402
from emotion.data.demo import SAMPLE_RATE  # noqa: E402
from emotion.features.acoustic import egemaps_frames  # noqa: E402
from emotion.models.grid import FrameGrid  # noqa: E402
from emotion.settings import AugmentSettings  # noqa: E402

GRID = FrameGrid(window=400, hop=320)  # WavLM's
OPTIONS = ("none", "noise", "reverb", "codec", "full")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished workers."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(work) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of `work()`."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = work()
    return cpu_seconds() - cpu, time.perf_counter() - wall, result


def augment_settings(option: str, copies: int) -> AugmentSettings:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["local=none", f"augment={option}"])
    settings = AugmentSettings.of(cfg.augment)
    return settings if option == "none" else AugmentSettings.of({**vars(settings), "copies": copies})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="of synthetic speech to augment")
    parser.add_argument("--copies", type=int, default=2, help="per utterance, for every option but none")
    parser.add_argument("--workers", type=int, default=1, help="processes writing copies")
    args = parser.parse_args()

    durations = iemocap_like_durations(int(args.seconds), np.random.default_rng(0))
    durations = durations[: int(np.searchsorted(np.cumsum(durations), args.seconds)) + 1]
    hours = durations.sum() / 3600
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({len(os.sched_getaffinity(0))} usable), Python {platform.python_version()}"
    )
    print(f"corpus: {len(durations)} utterances, {hours * 60:.1f} min of synthetic speech at {SAMPLE_RATE} Hz")
    egemaps_frames(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, GRID)  # openSMILE set up before timing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        items = write_corpus(tmp / "audio", durations)
        full = augment_settings("full", args.copies)
        rooms_cpu, rooms_wall, _ = timed(
            lambda: simulated_rooms(full.rooms, full.rt60_s, full.seed, SAMPLE_RATE, tmp / "rooms")
        )
        print(f"simulated rooms: {full.rooms} rooms (RT60 {full.rt60_s} s) in {rooms_wall:.1f} s, once per cache")
        header = ("option", "copies", "write cold", "write cached", "read", "eGeMAPS LLDs", "disk MB", "wall cold")
        rows = []
        for option in OPTIONS:
            settings = augment_settings(option, args.copies)
            cache = tmp / f"cache-{option}"
            shutil.copytree(tmp / "rooms", cache)  # the rooms are a cost once per cache, reported apart
            write_cpu, write_wall, copies = timed(
                lambda s=settings, c=cache: augmented_items(items, s, SAMPLE_RATE, c, workers=args.workers)
            )
            cached_cpu, _, _ = timed(
                lambda s=settings, c=cache: augmented_items(items, s, SAMPLE_RATE, c, workers=args.workers)
            )
            handled = copies or items  # none: the originals
            handled_hours = hours * (settings.copies or 1)
            read_cpu, _, waves = timed(lambda h=handled: [load_audio(item.path, SAMPLE_RATE) for item in h])
            feature_cpu, _, _ = timed(lambda w=waves: [egemaps_frames(wave, SAMPLE_RATE, GRID) for wave in w])
            disk = sum(copy.path.stat().st_size for copy in copies) / 1e6
            rows.append(
                (
                    option,
                    str(settings.copies),
                    f"{write_cpu / handled_hours:.0f}" if copies else "-",
                    f"{cached_cpu / handled_hours:.2f}" if copies else "-",
                    f"{read_cpu / handled_hours:.1f}",
                    f"{feature_cpu / handled_hours:.0f}",
                    f"{disk / handled_hours:.0f}" if copies else "-",
                    f"{write_wall:.1f} s" if copies else "-",
                )
            )
            print(f"  {option}: done", flush=True)
    print()
    print(f"CPU seconds per hour of audio handled (copies counted); {args.workers} writing process(es).")
    print("write cold: the first run's, rooms already simulated; disk: MB per audio hour of copies.")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"simulated rooms alone: {rooms_cpu:.1f} CPU s ({full.rooms} rooms), once per cache and augment.seed")


if __name__ == "__main__":
    main()
