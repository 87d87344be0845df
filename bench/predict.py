"""How fast predict.py predicts new recordings, and in how much memory, on CPU.

Trains the demo model (tiny frozen encoder, one epoch on a small demo corpus), generates 200 demo-length
recordings (the demo corpus with 20 utterances per voice), then runs predict.py on their folder twice as a
user would, whole processes timed: first with the acoustic features still to compute, then with them cached.

Then long recordings through speech detection (predict.segment=vad): for each of --long-minutes, one
recording of that length made of demo utterances between pauses of 0.3–4 s, with a minute of music-like
chords (no speech) every ten minutes, predicted from scratch.

Then the exported model (export.py) against its checkpoint, on the same batches in this process (the model's
time alone, best of three): the demo model on the 200 recordings, in batches of 8 and one at a time; and a
model with the WavLM-Large architecture (random weights, the real sizes: what the real model costs) on four
10 s recordings, one batch and one at a time. Skip the Large model with --no-large.

    python bench/predict.py [--utterances-per-voice 20] [--long-minutes 10 60] [--no-large]

Prints `<run>_files_per_second: <x>` and `<run>_real_time_factor: <x>` (seconds of computing per second of
audio; below 1 is faster than real time) for the runs `first` and `cached`; for each long recording
`vad_<n>min_real_time_factor`, `vad_<n>min_peak_rss_mb` (the most resident memory predict.py's processes
held together, sampled every 0.1 s) and `vad_<n>min_segments`; for each comparison `<model>_<batching>_torch_s`,
`<model>_<batching>_onnx_s` and `<model>_<batching>_onnx_speedup`.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.data.demo import ensure_demo_corpus  # noqa: E402

DEMO = ["experiment=demo", "logger=none", "local=none", "trainer.progress_bar=false"]
# WavLM-Large's sizes, randomly initialised: a real Large checkpoint cannot be downloaded here, and its speed
# depends on its sizes alone.
LARGE = [
    "encoder.random_init.hidden_size=1024",
    "encoder.random_init.intermediate_size=4096",
    "encoder.random_init.num_attention_heads=16",
    "encoder.random_init.conv_dim=[512,512,512,512,512,512,512]",
    "encoder.random_init.num_conv_pos_embeddings=128",
    "encoder.random_init.num_conv_pos_embedding_groups=16",
]


def run(script: str, args: list[str], env: dict) -> float:
    """Seconds the entry point takes, start to end."""
    return run_measured(script, args, env)[0]


def run_measured(script: str, args: list[str], env: dict) -> tuple[float, float]:
    """Seconds the entry point takes, and the most memory (MB) its processes held together."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        time.sleep(0.1)
    output = process.stdout.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{script} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, peak


def compare_onnx(name: str, job: Path, files: list[Path], tmp: Path, env: dict, batch_sizes: tuple[int, ...]) -> None:
    """The job's model exported, then both predicting the same datasets in this process, best of three."""
    from emotion.exported import load_predictors
    from emotion.prediction.inputs import readable_inputs
    from emotion.trained import load_model

    exported = tmp / f"export_{name}"
    print(f"{name}_export_s: {run('export.py', [f'ckpt={job}', f'output={exported}'], env):.1f}")
    checkpoint, graph = load_model(job, device="cpu", precision="fp32"), load_predictors(exported)[0]
    folder = files[0].parent
    items, seconds, _ = readable_inputs(folder, checkpoint.min_seconds)
    acoustic = checkpoint.acoustic_cache(env["EMOTION_CACHE"]).ensure([item.audio for item in items], workers=2)
    dataset = checkpoint.dataset(items, seconds, [acoustic[item.audio] for item in items])
    for batch_size in batch_sizes:
        timings = {}
        for kind, model in (("torch", checkpoint), ("onnx", graph)):
            model.member_outputs(dataset.with_segments(dataset.segments[:batch_size]), batch_size)  # warm up
            timings[kind] = min(timed(model.member_outputs, dataset, batch_size) for _ in range(3))
        label = f"{name}_batch{batch_size}"
        print(f"{label}_torch_s: {timings['torch']:.2f}")
        print(f"{label}_onnx_s: {timings['onnx']:.2f}")
        print(f"{label}_onnx_speedup: {timings['torch'] / timings['onnx']:.2f}")


def timed(work, *args) -> float:
    started = time.perf_counter()
    work(*args)
    return time.perf_counter() - started


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError):
                continue
    tree, grown = {root}, True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    total = 0
    for pid in tree:
        try:
            total += int((Path(f"/proc/{pid}/statm")).read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 1e6


def long_recording(path: Path, minutes: float, utterances: list[Path], seed: int = 0) -> None:
    """Demo utterances between pauses, with a minute of chords every ten minutes, written a piece at a time."""
    rng = np.random.default_rng(seed)
    rate = sf.info(utterances[0]).samplerate
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        written = 0
        while written < minutes * 60 * rate:
            if written // (600 * rate) != (written + 30 * rate) // (600 * rate):  # a ten-minute mark ahead
                piece = chords(60.0, rate, rng)
            else:
                piece = sf.read(utterances[rng.integers(len(utterances))], dtype="float32")[0]
            pause = np.zeros(int(rng.uniform(0.3, 4.0) * rate), np.float32)
            out.write(np.concatenate([piece, pause]))
            written += len(piece) + len(pause)


def chords(seconds: float, rate: int, rng) -> np.ndarray:
    """Sustained triads of harmonic tones, a new one every two seconds: music, not speech."""
    t = np.arange(int(2.0 * rate)) / rate
    pieces = []
    for _ in range(int(seconds / 2)):
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        tones = [root * ratio * harmonic for ratio in (1.0, 1.26, 1.5) for harmonic in (1, 2, 3)]
        pieces.append(sum(np.sin(2 * np.pi * f * t) / (1 + i % 3) for i, f in enumerate(tones)) * 0.05)
    return np.concatenate(pieces).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances-per-voice", type=int, default=20)
    parser.add_argument("--long-minutes", type=float, nargs="*", default=[10, 60])
    parser.add_argument("--no-large", dest="large", action="store_false")
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
        compare_onnx("demo", job, files, tmp, env, batch_sizes=(8, 1))
        if args.large:
            large = tmp / "large"
            train = [*DEMO, *LARGE, "data.utterances_per_voice=2", "trainer.max_epochs=1", f"hydra.run.dir={large}"]
            print(f"training a WavLM-Large-sized model, frozen: {run('train.py', train, env):.0f} s")
            recordings = []
            for seed in range(4):
                recordings.append(tmp / "large_input" / f"ten_seconds_{seed}.wav")
                recordings[-1].parent.mkdir(exist_ok=True)
                long_recording(recordings[-1], 10 / 60, files, seed=seed)
            compare_onnx("large", large, recordings, tmp, env, batch_sizes=(4, 1))
        for minutes in args.long_minutes:
            long_file = tmp / f"long_{minutes:g}min.wav"
            long_recording(long_file, minutes, files)
            output = tmp / f"long_{minutes:g}min.csv"
            command = [f"ckpt={job}", f"input={long_file}", f"output={output}", "predict.segment=vad"]
            seconds, peak_mb = run_measured(
                "predict.py", [*command, "predict.device=cpu", "predict.progress_bar=false"], env
            )
            with open(output.with_name(output.stem + ".segments.csv")) as f:
                segments = sum(1 for _ in csv.DictReader(f))
            label = f"vad_{minutes:g}min"
            print(f"{label}_seconds: {seconds:.1f}")
            print(f"{label}_real_time_factor: {seconds / sf.info(long_file).duration:.4f}")
            print(f"{label}_peak_rss_mb: {peak_mb:.0f}")
            print(f"{label}_segments: {segments}")


if __name__ == "__main__":
    main()
