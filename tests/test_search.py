"""The search (sweep=search): its space, its pruning arithmetic, and real demo searches, killed and resumed,
on the basic launcher and on a two-slot GPU pool."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from emotion.signals import GracefulStop
from emotion.sweeps.folders import register_resolver, study_storage
from emotion.sweeps.pruning import PruneWatch, best_so_far, fold_means, request_prune
from emotion.sweeps.search import JobPlan, Search, SearchError, SearchSettings, _fixed_overrides
from emotion.sweeps.space import SpaceError, parse_space
from emotion.training.outputs import write_history, write_json
from tests.conftest import ROOT, SMALL_DEMO, WITHOUT_LOCAL, compose_config, read_csv, run_train
from tests.wandb_records import run_summary


def test_the_space_reads_hydra_sweep_grammar_and_gives_jobs_their_overrides():
    space = parse_space(
        {
            "optim.lr": "tag(log, interval(1e-5, 1e-3))",
            "model": {"dropout": "interval(0.0, 0.3)", "speech_encoder_layers": "choice([6,12,18,24],[3,6,9])"},
            "model.mamba_n_layers": "int(interval(1, 4))",
            "model.d_state": "range(32, 129, 32)",
        }
    )
    by_key = {dim.key: dim for dim in space}
    assert list(by_key) == [
        "optim.lr",
        "model.dropout",
        "model.speech_encoder_layers",
        "model.mamba_n_layers",
        "model.d_state",
    ]
    lr = by_key["optim.lr"].distribution()
    assert (type(lr).__name__, lr.low, lr.high, lr.log) == ("FloatDistribution", 1e-5, 1e-3, True)
    assert by_key["optim.lr"].override(0.000314159) == "optim.lr=0.0003142"  # 4 significant digits
    assert by_key["model.speech_encoder_layers"].distribution().choices == ("[6,12,18,24]", "[3,6,9]")
    assert by_key["model.speech_encoder_layers"].override("[3,6,9]") == "model.speech_encoder_layers=[3,6,9]"
    layers = by_key["model.mamba_n_layers"].distribution()
    assert (type(layers).__name__, layers.low, layers.high) == ("IntDistribution", 1, 4)
    d_state = by_key["model.d_state"].distribution()
    assert (d_state.low, d_state.high, d_state.step) == (32, 128, 32)


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ({"optim.lr": 0.001}, "search.space.optim.lr=0.001"),
        ({"optim.lr": "interval(1e-3, 1e-5)"}, "low < high"),
        ({"optim.lr": "tag(log, interval(0, 1))"}, "low > 0"),
        ({"optim.lr": "choice(1,"}, "search.space.optim.lr"),
        ({}, "search.space is empty"),
    ],
)
def test_a_bad_space_is_one_error_naming_the_key_and_the_grammar(space, named):
    with pytest.raises(SpaceError, match="search.space") as error:
        parse_space(space)
    assert named in str(error.value)


def test_the_trial_value_at_an_epoch_waits_for_every_fold_and_ended_folds_keep_their_last():
    assert fold_means([[0.1, 0.2], []], [False, False]) == []  # a fold has not finished an epoch yet
    assert fold_means([[0.1, 0.2, 0.3], [0.3]], [False, False]) == pytest.approx([0.2])
    # the second fold stopped early after 2 epochs: its best stays in the mean
    assert fold_means([[0.1, 0.2, 0.3], [0.3, 0.5]], [False, True]) == pytest.approx([0.2, 0.35, 0.4])
    assert fold_means([[0.1], [0.3, 0.5]], [True, True]) == pytest.approx([0.2, 0.3])


def test_the_pruner_reads_a_history_whose_corpus_lacks_a_dimension(tmp_path):
    rows = [{"epoch": e, "val_ccc_mean": m, "val_ccc_d": ""} for e, m in ((1, 0.2), (2, 0.5), (3, 0.4))]
    write_history(tmp_path / "history.csv", rows)
    assert best_so_far(tmp_path / "history.csv", "val_ccc_mean") == [0.2, 0.5, 0.5]
    assert best_so_far(tmp_path / "history.csv", "val_ccc_d") == [-1.0, -1.0, -1.0]  # no score: the worst


def test_a_job_sees_its_trial_pruned_through_its_folder(tmp_path):
    watch = PruneWatch(tmp_path, every_seconds=60)
    assert not watch.check()  # nothing yet
    request_prune(tmp_path, "trial 3 pruned at epoch 2")
    assert not watch.check()  # not looked again within every_seconds
    assert watch.check(force=True) and watch.requested and watch.why == "trial 3 pruned at epoch 2"


def test_the_command_line_may_not_sweep_or_pick_folds_beside_a_search():
    assert _fixed_overrides(["experiment=demo", "search.n_trials=3", "+search.x=1", "optim.lr=1e-3"]) == [
        "experiment=demo",
        "optim.lr=1e-3",
    ]
    with pytest.raises(SearchError, match=r"model.d_hidden: choice\(...\) in search.space"):
        _fixed_overrides(["model.d_hidden=256,384"])
    with pytest.raises(SearchError, match=r"search.folds"):
        _fixed_overrides(["data.fold=3"])


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"n_trial": 5}, "search.n_trial: not a search setting"),
        ({"pruner": "hyperband"}, "search.pruner='hyperband': one of median, halving, none"),
        ({"folds": []}, "search.folds is empty"),
        ({"parallel": 0}, "search.parallel=0"),
    ],
)
def test_a_bad_search_setting_is_one_error_naming_it(setting, named):
    cfg = OmegaConf.create({"search": {"n_trials": 6, "folds": [1, 2], "space": {}, **setting}})
    with pytest.raises(SearchError) as error:
        SearchSettings.of(cfg)
    assert named in str(error.value)


def test_a_space_key_no_job_has_stops_the_search_before_any_trial(cache_dir, tmp_path):
    result = run_train(
        [
            "-m",
            "sweep=search",
            "experiment=demo",
            "logger=none",
            "~search.space",
            "+search.space={optim.lrr: 'interval(1e-4, 1e-3)'}",
        ],
        cache_dir,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "optim.lrr" in result.stderr
    assert not (tmp_path / "multirun" / "search" / "search.db").exists()


def test_a_pruned_trials_running_jobs_stop_and_its_waiting_jobs_never_start(tmp_path, monkeypatch):
    """The scheduler with stand-in jobs that write what real ones do (history.csv, metrics.json) and stop
    on the prune marker: one slot, three folds; a hopeless trial is pruned on its first fold."""
    compose = partial(_compose, tmp_path)
    monkeypatch.setattr("emotion.sweeps.search.POLL_SECONDS", 0.05)
    launched = []

    def job(overrides: list[str], index: int) -> None:
        launched.append(index)
        folder = Path(compose(overrides).hydra.sweep.dir) / str(compose(overrides).hydra.sweep.subdir)
        folder.mkdir(parents=True)
        good = "optim.lr=0.003" in overrides
        watch, rows = PruneWatch(folder, every_seconds=0), []
        for epoch in (1, 2, 3):
            rows.append({"epoch": epoch, "val_ccc_mean": 0.1 * epoch if good else 0.0})
            write_history(folder / "history.csv", rows)
            time.sleep(0.3)  # the search looks every 0.05 s here
            if watch.check():
                write_json(folder / "metrics.json", {"status": "pruned", "error": watch.why})
                return
        write_json(folder / "metrics.json", {"status": "completed", "val_best": {"ccc_mean": rows[-1]["val_ccc_mean"]}})

    settings = SearchSettings(n_trials=2, folds=(1, 2, 3), startup_trials=1, prune_from_epoch=1)
    study = optuna.create_study(direction="maximize", pruner=settings.make_pruner())
    study.enqueue_trial({"optim.lr": 3e-3})
    study.enqueue_trial({"optim.lr": 1e-7})
    space = parse_space({"optim.lr": "choice(1e-7, 3e-3)"})
    plan = JobPlan(["sweep=search", "experiment=demo", "logger=none"], settings.folds, compose)
    Search(study, settings, space, plan, job, parallel=1, stop=GracefulStop()).run()

    good, hopeless = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value == pytest.approx(0.3)
    assert hopeless.state == optuna.trial.TrialState.PRUNED and hopeless.user_attrs["pruned_at_epoch"] == 1
    assert launched == [0, 1, 2, 3]  # the hopeless trial's folds 2 and 3 (jobs 4 and 5) never started
    (pruned,) = tmp_path.glob("*optim.lr=1e-07*/metrics.json")
    assert json.loads(pruned.read_text())["status"] == "pruned"


def _compose(sweep_dir: Path, overrides: list[str]):
    register_resolver()  # the job folder's name
    return compose_config([*overrides, f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)


# The acceptance search: 6 trials of 2 folds × 3 epochs, where one learning rate is hopeless.
SEARCH = [
    "-m",
    "sweep=search",
    "name=acceptance",
    "experiment=demo",
    *SMALL_DEMO,
    "trainer.max_epochs=3",
    "data.num_workers=0",  # each epoch's loader workers would cost more than they save on 40 utterances
    "logger=none",
    "search.n_trials=6",
    "search.startup_trials=1",
    "search.folds=[1,2]",
    "~search.space",
    "+search.space={optim.lr: 'choice(1e-7, 3e-3)', model.dropout: 'interval(0.0, 0.2)'}",
    "report.bootstrap=50",
]


def _start(command: list[str], cache_dir: Path, cwd: Path, output: Path) -> subprocess.Popen:
    env = {**os.environ, "EMOTION_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    env.pop("WANDB_SERVICE", None)
    with open(output, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *command, WITHOUT_LOCAL, "trainer.progress_bar=false"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the kill takes its jobs too
        )


def _statuses(sweep: Path) -> dict[Path, str]:
    return {path.parent: json.loads(path.read_text())["status"] for path in sweep.glob("*/metrics.json")}


def _mid_training(sweep: Path) -> Path | None:
    """A job with an epoch behind it and no result yet."""
    for history in sweep.glob("*/history.csv"):
        if not (history.parent / "metrics.json").exists() and len(history.read_text().splitlines()) >= 2:
            return history.parent
    return None


def _load(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=study_storage(sweep))


@pytest.mark.slow
def test_a_search_killed_in_the_middle_and_run_again_ends_with_its_trials_pruned_and_valued_by_validation(
    cache_dir, tmp_path
):
    sweep = tmp_path / "multirun" / "acceptance"
    process = _start(SEARCH, cache_dir, tmp_path, tmp_path / "first.out")
    try:
        deadline = time.monotonic() + 400
        while not (len(_statuses(sweep)) >= 2 and (interrupted := _mid_training(sweep))):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "first.out").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = {trial.number: trial for trial in _load(sweep).trials}
    assert any(trial.state == optuna.trial.TrialState.RUNNING for trial in before.values())
    finished = {folder: (folder / "metrics.json").stat().st_mtime_ns for folder in _statuses(sweep)}

    run_train(SEARCH, cache_dir, cwd=tmp_path)

    study = _load(sweep)
    assert [trial.number for trial in study.trials] == list(range(6))  # the total, not 6 more
    states = [trial.state for trial in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.FAIL not in states
    assert optuna.trial.TrialState.PRUNED in states
    for number, trial in before.items():  # finished trials stay as they were
        if trial.state.is_finished():
            assert (study.trials[number].state, study.trials[number].value) == (trial.state, trial.value)
    # Nothing trained twice from scratch: finished jobs were not run again, the killed one went on.
    assert {folder: (folder / "metrics.json").stat().st_mtime_ns for folder in finished} == finished
    assert "resuming from" in (interrupted / "train.log").read_text()
    for history in sweep.glob("*/history.csv"):
        epochs = [row["epoch"] for row in read_csv(history)]
        assert epochs == [str(epoch) for epoch in range(1, len(epochs) + 1)]

    # A complete trial's value is the mean of its jobs' best validation scores; test scores never reach it.
    jobs_of = _jobs_by_trial(sweep)
    for trial in study.trials:
        metrics = [json.loads((folder / "metrics.json").read_text()) for folder in jobs_of[trial.number]]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(statistics.fmean(m["val_best"]["ccc_mean"] for m in metrics))
            assert trial.value != pytest.approx(statistics.fmean(m["test"]["ccc_mean"] for m in metrics))
        else:  # pruned: its jobs ended pruned (or had completed), history and metrics kept
            assert "pruned" in {m["status"] for m in metrics}
            assert all((folder / "history.csv").is_file() for folder in jobs_of[trial.number])
        curve = trial.intermediate_values  # each epoch's value: the fold-mean of best validation so far
        assert list(curve) == list(range(1, len(curve) + 1))
        assert all(-1 <= value <= 1 for value in curve.values())

    summary = (sweep / "summary.md").read_text()
    assert "Search `acceptance`: 6 of 6 trials" in summary and "pruned at epoch" in summary
    best = study.best_trial
    assert f"★ Best trial by validation: {best.number}," in summary
    command = next(line.strip() for line in summary.splitlines() if line.strip().startswith("python train.py -m"))
    assert command.endswith("data.fold=1,2,3,4,5") and "sweep=search" not in command
    assert all(item in command for item in best.user_attrs["config"])
    rows = read_csv(sweep / "summary.csv")
    assert sorted(int(n) for row in rows for n in row["trials"].split()) == list(range(6))
    assert rows[0]["selected"] == "True" and str(best.number) in rows[0]["trials"].split()
    assert (sweep / "search.png").stat().st_size > 0


def _jobs_by_trial(sweep: Path) -> dict[int, list[Path]]:
    jobs: dict[int, list[Path]] = {}
    for overrides in sweep.glob("*/.hydra/overrides.yaml"):
        trial = next(line for line in overrides.read_text().splitlines() if "search.trial=" in line)
        jobs.setdefault(int(trial.rsplit("=", 1)[1]), []).append(overrides.parent.parent)
    return jobs


def test_on_a_two_slot_gpu_pool_a_job_starts_when_a_slot_frees_and_runs_carry_their_trial(cache_dir, tmp_path):
    # Seed 5 draws 6 epochs for trial 0 and 1 for trials 1 and 2: trial 2 must start while trial 0 still runs.
    result = run_train(
        [
            "-m",
            "sweep=search",
            "name=pool",
            "hydra/launcher=gpu_pool",
            "hydra.launcher.devices=[0,1]",
            "experiment=demo",
            *SMALL_DEMO,
            "search.n_trials=3",
            "search.seed=5",
            "search.folds=[1]",
            "search.pruner=none",
            "~search.space",
            "+search.space={trainer.max_epochs: 'choice(1, 6)', model.dropout: 'interval(0.0, 0.3)'}",
            "report.bootstrap=50",
        ],
        cache_dir,
        cwd=tmp_path,
    )
    sweep = tmp_path / "multirun" / "pool"
    jobs = _jobs_by_trial(sweep)
    records = {n: json.loads((folder / "job.json").read_text()) for n, (folder,) in jobs.items()}
    assert sorted(records) == [0, 1, 2]
    events = sorted([(r["started"], 1) for r in records.values()] + [(r["ended"], -1) for r in records.values()])
    running = [sum(change for _, change in events[: i + 1]) for i in range(len(events))]
    assert max(running) == 2  # never more than the two slots
    quick, third = records[1], records[2]
    assert json.loads((jobs[0][0] / "metrics.json").read_text())["epochs"] == 6
    assert quick["ended"] < third["started"]  # on the slot trial 1 freed
    # ... while trial 0 still ran: the search started job 2 (trial 2) before job 0 ended, not after a batch
    log = result.stderr + result.stdout
    assert log.index("\t#2 on device") < log.index("\t#0 ended on device")
    assert {r["cuda_visible_devices"] for r in records.values()} == {"0", "1"}
    for number, (folder,) in jobs.items():
        (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
        run = run_summary(run_file)
        assert f"trial {number}" in run["tags"] and run["name"].startswith(f"trial {number}: ")
        assert run["config"]["search"]["trial"] == number
    study = _load(sweep)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
