"""Shared fixtures: composed configs, a demo corpus cache shared by every test, train.py as a subprocess."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# A small demo corpus (4 utterances per voice, 40 in all) keeps end-to-end runs to seconds.
SMALL_DEMO = ["data.utterances_per_voice=4"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session, so each demo corpus variant is generated once."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["EMOTION_CACHE"] = str(path)
    return path


@pytest.fixture(autouse=True)
def thread_environment():
    """Each test leaves the thread variables as it found them: training in-process applies its CPU budget to
    the environment, and a later test's launcher would hand that to its jobs."""
    from emotion.cpu import SHARE_VARIABLE, THREAD_VARIABLES

    saved = {variable: os.environ.get(variable) for variable in (*THREAD_VARIABLES, SHARE_VARIABLE)}
    yield
    for variable, value in saved.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value


# Tests ignore the developer's own conf/local/default.yaml.
WITHOUT_LOCAL = "local=none"


def compose_config(overrides: list[str] = (), config_dir: Path = CONF, return_hydra_config=False) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("train", overrides=[WITHOUT_LOCAL, *overrides], return_hydra_config=return_hydra_config)


def settings_of(overrides: list[str] = ()):
    """A training job's typed settings (emotion.settings.JobSettings) from train.py's config and `overrides`."""
    from emotion.settings import JobSettings

    return JobSettings.of(compose_config(overrides))


def data_settings(overrides: list[str] = ()):
    """The `data` group's typed settings (emotion.settings.DataSettings) from train.py's config and `overrides`."""
    from emotion.settings import DataSettings

    return DataSettings.of(compose_config(overrides).data)


def untrained_model(cfg: DictConfig, dimensions: tuple[str, ...]):
    """The model `cfg`'s settings describe, as a job builds it before training."""
    from emotion.settings import JobSettings
    from emotion.training.recipe import new_model

    settings = JobSettings.of(cfg)
    return new_model(settings.model, settings.encoder, dimensions)


def csv_job(manifest: Path, out: Path, *extra: str) -> list[str]:
    """train.py arguments for one quick epoch on a CSV manifest's fold 1, written to `out`."""
    return [
        "experiment=demo",
        "data=csv",
        f"data.manifest={manifest}",
        "data.fold=1",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.run.dir={out}",
        *extra,
    ]


def run_train(
    args: list[str], cache: Path, check: bool = True, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run train.py as a user would, from `cwd` (where outputs/ and multirun/ go unless `args` say otherwise),
    with `env` added to the environment."""
    return run_script("train.py", [*args, WITHOUT_LOCAL, "trainer.progress_bar=false"], cache, check, cwd, env)


# A few epochs of the small demo, so that predictions vary (one epoch leaves some clipped to the scale's edge).
SHORT = ["experiment=demo", *SMALL_DEMO, "trainer.max_epochs=3", "logger=none", "optim.lr=2e-3"]
TRAINED_DIMENSIONS = ("arousal", "valence", "dominance")


@dataclass(frozen=True)
class Trained:
    sweep: Path  # one configuration's two folds: a configuration folder
    jobs: dict[int, Path]  # fold → job folder

    def test_files(self, fold: int) -> dict[str, Path]:
        """The fold's test items, by id."""
        from emotion.data.corpora import load_corpus

        corpus = load_corpus(data_settings([*SHORT, f"data.fold={fold}"]))
        return {item.id: item.path for item in corpus.splits.test}

    def job_predictions(self, fold: int) -> dict[str, np.ndarray]:
        rows = read_csv(self.jobs[fold] / "predictions.csv")
        return {row["id"]: np.array([float(row[f"{dim}_pred"]) for dim in TRAINED_DIMENSIONS]) for row in rows}


@pytest.fixture(scope="session")
def trained(cache_dir, tmp_path_factory) -> Trained:
    """Two folds of one short demo configuration, trained once for every test that uses a trained model."""
    sweep = tmp_path_factory.mktemp("trained") / "sweep"
    run_train(["-m", *SHORT, "data.fold=1,2", f"hydra.sweep.dir={sweep}"], cache_dir)
    jobs = {json.loads((folder / "metrics.json").read_text())["fold"]: folder for folder in sweep.glob("*/")}
    return Trained(sweep, jobs)


def run_script(
    script: str, args: list[str], cache: Path, check: bool = True, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run one of the entry points (train.py, predict.py, evaluate.py) with `args`, offline."""
    env = {**os.environ, "EMOTION_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})}
    env.pop("WANDB_SERVICE", None)  # a W&B service this process started is not the child's to use
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wait_for_checkpoint(folders, process, condition, timeout=300):
    """Poll `folders`' (a glob pattern) last.pt until `condition(progress)` holds; returns that folder and
    its progress."""
    from emotion.training.checkpoints import load_checkpoint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for last in map(Path, glob.glob(f"{folders}/checkpoints/last.pt")):
            try:
                state = load_checkpoint(last)
            except (OSError, RuntimeError, EOFError):  # being replaced
                continue
            if condition(state["progress"]):
                return last.parent.parent, state["progress"]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint met the condition; the process exited with {process.poll()}")


@pytest.fixture
def start_train():
    """Starts train.py as a background process writing to the file `output`; `own_group`: in a process group
    of its own, as a terminal starts it. What is still running when the test ends, failed or not, is killed
    (with its group)."""
    started = []

    def start(args, cache_dir, output, cwd=ROOT, own_group=False):
        env = {**os.environ, "EMOTION_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
        with open(output, "w") as out:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "train.py"), *args, WITHOUT_LOCAL, "trainer.progress_bar=false"],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=own_group,
            )
        started.append((process, own_group))
        return process

    yield start
    for process, own_group in started:
        with contextlib.suppress(ProcessLookupError):
            if own_group:
                os.killpg(process.pid, signal.SIGKILL)  # its data loader workers too
            else:
                process.kill()
        process.wait()


HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
getattr(fcntl, sys.argv[2])(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def lock_held_elsewhere(lock_file: Path, call: str = "lockf"):
    """`lock_file` locked by another process (with fcntl's `call`: lockf or flock) while inside."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, lock_file, call], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def recorded_elsewhere(folder: Path, cache: Path) -> Path:
    """The small demo corpus as another studio would have recorded it: 9 dB quieter through a coloured (first-order
    low-pass) channel, same voices, labels and folds; a CSV manifest in `folder`, whose name names the corpus."""
    import numpy as np
    import soundfile as sf
    from scipy.signal import lfilter

    from emotion.data.demo import ensure_demo_corpus
    from tests.trees import write_manifest

    manifest = ensure_demo_corpus(str(cache / "demo-seed0-n4"), seed=0, utterances_per_voice=4)
    rows = read_csv(manifest)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    for row in rows:
        wave, rate = sf.read(manifest.parent / row["path"], dtype="float32")
        coloured = lfilter([0.3], [1.0, -0.7], wave) * 10 ** (-9 / 20)
        sf.write(folder / row["path"], coloured.astype(np.float32), rate, subtype="FLOAT")
    return write_manifest(folder, rows)


def predict_config(ckpt: Path, input_: Path, output: Path, *overrides: str):
    """predict.py's configuration, for run_predict in this process."""
    from emotion.cli import quote_paths

    overrides = [f"ckpt={ckpt}", f"input={input_}", f"output={output}", *overrides, "predict.progress_bar=false"]
    quote_paths(overrides)  # as predict.py does: job folders' names hold `=` and `,`
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("predict", overrides)


def evaluate_in_process(overrides: list[str], out: Path) -> dict:
    """evaluate.py's metrics.json record, without the seconds a process start costs."""
    from emotion.cli import quote_paths
    from emotion.evaluation import run_evaluate

    overrides = [*overrides, "local=none", "evaluate.progress_bar=false", "evaluate.workers=0"]
    quote_paths(overrides)  # as evaluate.py does: job folders' names hold `=` and `,`
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", [*overrides, "evaluate.acoustic_workers=1"])
    out.mkdir(parents=True)
    return run_evaluate(cfg, out)
