"""What acoustic features cost: extraction seconds per hour of audio, first run and cached run.

Builds a corpus of synthetic speech with IEMOCAP-like durations, then fills the acoustic feature cache
with each choice (eGeMAPS descriptors and functionals, as the profiles have them; each alone; the prosody
contours the model had before) in `--workers` processes, cold and then warm, each in a cache of its own.

    python bench/features.py [--utterances 200] [--workers <CPU cores>]

Lines `<sets>_first_s_per_audio_hour: <x>` and `<sets>_cached_s_per_audio_hour: <x>` per choice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loader import iemocap_like_durations, write_corpus  # noqa: E402
from emotion.data.content import content_hashes  # noqa: E402
from emotion.data.demo import SAMPLE_RATE  # noqa: E402
from emotion.features.acoustic import CONTOURS, EGEMAPS, FUNCTIONALS  # noqa: E402
from emotion.features.acoustic_cache import AcousticCache  # noqa: E402
from emotion.models.grid import FrameGrid  # noqa: E402

GRID = FrameGrid(window=400, hop=320)  # WavLM's
CHOICES = {
    "egemaps_and_functionals": ([EGEMAPS], FUNCTIONALS),  # the profiles' default
    "egemaps": ([EGEMAPS], None),
    "functionals": ([], FUNCTIONALS),
    "contours": ([CONTOURS], None),  # what the model had before eGeMAPS
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        durations = iemocap_like_durations(args.utterances, np.random.default_rng(0))
        hours = durations.sum() / 3600
        print(f"corpus: {len(durations)} utterances, {hours * 60:.1f} min of audio; {args.workers} processes")
        paths = [item.path for item in write_corpus(tmp / "audio", durations)]
        for name in CHOICES:  # files hashed (and read) before timing, so that no choice pays for it alone
            content_hashes(paths, tmp / name)
        for name, (frame_sets, functionals) in CHOICES.items():
            seconds = []
            for _ in ("first", "cached"):
                cache = AcousticCache(tmp / name, SAMPLE_RATE, GRID if frame_sets else None, frame_sets, functionals)
                started = time.perf_counter()
                cache.ensure(paths, workers=args.workers)
                seconds.append(time.perf_counter() - started)
            print(f"{name}_first_s_per_audio_hour: {seconds[0] / hours:.1f}")
            print(f"{name}_cached_s_per_audio_hour: {seconds[1] / hours:.2f}", flush=True)


if __name__ == "__main__":
    main()
