"""How fast predict.py predicts new recordings: files per second and the real-time factor, on CPU.

Trains the demo model (tiny frozen encoder, one epoch on a small demo corpus), generates 200 demo-length
recordings (the demo corpus with 20 utterances per voice), then runs predict.py on their folder twice as a
user would, whole processes timed: first with the acoustic features still to compute, then with them cached.

    python bench/predict.py [--utterances-per-voice 20]

Prints `<run>_files_per_second: <x>` and `<run>_real_time_factor: <x>` (seconds of computing per second of
audio; below 1 is faster than real time) for the runs `first` and `cached`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.data.demo import ensure_demo_corpus  # noqa: E402

DEMO = ["experiment=demo", "logger=none", "local=none", "trainer.progress_bar=false"]


def run(script: str, args: list[str], env: dict) -> float:
    """Seconds the entry point takes, start to end."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / script), *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances-per-voice", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "EMOTION_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
        job = tmp / "job"
        train = [*DEMO, "data.utterances_per_voice=4", "trainer.max_epochs=1", f"hydra.run.dir={job}"]
        print(f"training the demo model: {run('train.py', train, env):.0f} s")
        recordings = ensure_demo_corpus(tmp / "recordings", seed=1, utterances_per_voice=args.utterances_per_voice)
        files = sorted((recordings.parent / "wav").glob("*.wav"))
        audio_seconds = sum(sf.info(path).duration for path in files)
        print(f"input: {len(files)} files, {audio_seconds / 60:.1f} min of audio, {os.cpu_count()} CPU cores")
        for name in ("first", "cached"):
            output = tmp / f"{name}.csv"
            command = [f"ckpt={job}", f"input={recordings.parent / 'wav'}", f"output={output}", "predict.device=cpu"]
            seconds = run("predict.py", [*command, "predict.progress_bar=false"], env)
            print(f"{name}_seconds: {seconds:.1f}")
            print(f"{name}_files_per_second: {len(files) / seconds:.1f}")
            print(f"{name}_real_time_factor: {seconds / audio_seconds:.3f}")


if __name__ == "__main__":
    main()
