"""The search (sweep=search): its space, its pruning arithmetic, and real demo searches, killed and resumed,
on the basic launcher and on a two-slot GPU pool."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna
import pytest
from omegaconf import DictConfig, OmegaConf

from emotion.settings import DataSettings
from emotion.signals import GracefulStop
from emotion.sweeps.folders import register_resolver, study_storage
from emotion.sweeps.pruning import PruneWatch, best_so_far, fold_means, request_prune
from emotion.sweeps.search import JobPlan, Search, StudyRun, _fixed_overrides, _result_overrides
from emotion.sweeps.space import SpaceError, parse_space
from emotion.sweeps.studies import SearchError, SearchSettings, StudyPlan, open_study, plan_studies
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
    cfg = OmegaConf.create(
        {"search": {"n_trials": 6, "folds": [1, 2], "space": {}, **setting}, "report": {"select": "val_ccc_mean"}}
    )
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


@pytest.mark.slow
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

    settings = SearchSettings(n_trials=2, folds=(1, 2, 3), test_folds=(), startup_trials=1, prune_from_epoch=1)
    study = optuna.create_study(direction="maximize", pruner=settings.make_pruner())
    study.enqueue_trial({"optim.lr": 3e-3})
    study.enqueue_trial({"optim.lr": 1e-7})
    space = parse_space({"optim.lr": "choice(1e-7, 3e-3)"})
    plan = JobPlan(["sweep=search", "experiment=demo", "logger=none"], compose)
    studies = [StudyRun(StudyPlan("standin", settings.folds), study, first_index=0)]
    Search(studies, settings, space, plan, job, parallel=1, stop=GracefulStop()).run()

    good, hopeless = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value == pytest.approx(0.3)
    assert hopeless.state == optuna.trial.TrialState.PRUNED and hopeless.user_attrs["pruned_at_epoch"] == 1
    assert launched == [0, 1, 2, 3]  # the hopeless trial's folds 2 and 3 (jobs 4 and 5) never started
    (pruned,) = tmp_path.glob("*optim.lr=1e-07*/metrics.json")
    assert json.loads(pruned.read_text())["status"] == "pruned"


def test_each_study_leaves_its_test_fold_out_and_trains_on_the_folds_after_it():
    (default,) = plan_studies(SearchSettings(), [1, 2, 3, 4, 5], "s")
    assert (default.name, default.test_fold, default.folds) == ("s-fold1", 1, (2, 3))
    nested = plan_studies(SearchSettings(test_folds=(1, 2, 3, 4, 5)), [1, 2, 3, 4, 5], "s")
    assert [(study.test_fold, study.folds) for study in nested] == [
        (1, (2, 3)),
        (2, (3, 4)),
        (3, (4, 5)),
        (4, (5, 1)),
        (5, (1, 2)),
    ]
    (plain,) = plan_studies(SearchSettings(test_folds=(), folds=(1, 2)), [1, 2, 3, 4, 5], "s")
    assert (plain.name, plain.test_fold, plain.folds) == ("s", None, (1, 2))
    (fixed,) = plan_studies(SearchSettings(), [], "s")
    assert (fixed.test_fold, fixed.folds) == (None, (None,))
    with pytest.raises(SearchError, match=r"search.folds=\[1, 2\] holds test fold 1"):
        plan_studies(SearchSettings(folds=(1, 2)), [1, 2, 3, 4, 5], "s")
    with pytest.raises(SearchError, match="fold 7 is not one of the corpus's folds"):
        plan_studies(SearchSettings(test_folds=(7,)), [1, 2, 3, 4, 5], "s")


def test_only_overrides_that_change_results_sign_a_study():
    config = OmegaConf.create({"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["logger"]}}}}})
    fixed = ["experiment=demo", "logger=none", "hydra/launcher=gpu_pool", "hydra.launcher.devices=[0,1]", "+x=1"]
    assert _result_overrides(fixed, config) == ["experiment=demo", "+x=1"]


def test_a_resumed_study_refuses_another_space_overrides_folds_or_encoder(tmp_path):
    signature = {"space": [{"key": "optim.lr"}], "fixed overrides": ["x=1"], "folds": ["2"], "encoder": {"n": 1}}
    plan = StudyPlan("s-fold1", (2,), 1)
    open_study(tmp_path, plan, SearchSettings(), signature)
    open_study(tmp_path, plan, SearchSettings(), signature)  # the same search again: continued
    for key, other in (("space", [{"key": "optim.wd"}]), ("folds", ["3"]), ("encoder", {"n": 2})):
        with pytest.raises(SearchError, match=f"study 's-fold1' ran with another {key}"):
            open_study(tmp_path, plan, SearchSettings(), {**signature, key: other})


def _standin(compose, scores: Callable[[DictConfig, list[str]], float], epochs: int = 1, seconds: float = 0.0):
    """A stand-in job: writes the history.csv and metrics.json a real one would, its validation score
    `scores(job config, overrides)` at every epoch, taking `seconds` per epoch; stops when pruned or stopped."""
    stop = GracefulStop()

    def job(overrides: list[str], index: int) -> None:
        cfg = compose(overrides)
        folder = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        folder.mkdir(parents=True, exist_ok=True)
        value, rows, watch = scores(cfg, overrides), [], PruneWatch(folder, every_seconds=0)
        for epoch in range(1, epochs + 1):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not job.stop.requested:
                time.sleep(0.01)
            if job.stop.requested:
                write_json(folder / "metrics.json", {"status": "interrupted"})
                return
            rows.append({"epoch": epoch, "val_ccc_mean": value})
            write_history(folder / "history.csv", rows)
            if watch.check():
                write_json(folder / "metrics.json", {"status": "pruned"})
                return
        write_json(folder / "metrics.json", {"status": "completed", "val_best": {"ccc_mean": value}})

    job.stop = stop
    return job


def test_a_search_killed_right_after_a_prune_resumes_without_the_folds_that_never_began(tmp_path, monkeypatch):
    compose = partial(_compose, tmp_path)
    monkeypatch.setattr("emotion.sweeps.search.POLL_SECONDS", 0.02)
    settings = SearchSettings(n_trials=1, folds=(1, 2), test_folds=(), startup_trials=0)
    plan = JobPlan(["sweep=search", "experiment=demo", "logger=none"], compose)
    space = parse_space({"optim.lr": "choice(1e-7, 3e-3)"})
    study = open_study(tmp_path, StudyPlan("killed", settings.folds), settings, {})
    # The state a kill right after the prune leaves: the trial pruned at epoch 1 while its first fold ran,
    # before the study was told; its second fold never began (no folder).
    trial = study.ask({dim.key: dim.distribution() for dim in space})
    config = [dim.override(trial.params["optim.lr"]) for dim in space]
    trial.set_user_attr("config", config)
    trial.report(0.1, 1)
    trial.set_user_attr("pruned_at_epoch", 1)
    first, second = plan.trial_jobs(StudyPlan("killed", settings.folds), 0, 0, config)
    first.folder.mkdir(parents=True)
    write_history(first.folder / "history.csv", [{"epoch": 1, "val_ccc_mean": 0.1}])
    launched = []
    job = _standin(compose, lambda cfg, overrides: launched.append(overrides) or 0.1, epochs=3)

    Search(
        [StudyRun(StudyPlan("killed", settings.folds), study, 0)], settings, space, plan, job, 1, GracefulStop()
    ).run()

    (resumed,) = study.trials
    assert resumed.state == optuna.trial.TrialState.PRUNED
    assert [overrides[-2] for overrides in launched] == ["data.fold=1"]  # the begun fold, to stop; not fold 2
    assert json.loads((first.folder / "metrics.json").read_text())["status"] == "pruned"
    assert not second.folder.exists()


def test_an_error_in_the_search_loop_stops_the_running_jobs_at_once(tmp_path, monkeypatch):
    compose = partial(_compose, tmp_path)
    monkeypatch.setattr("emotion.sweeps.search.POLL_SECONDS", 0.02)
    settings = SearchSettings(n_trials=2, folds=(1,), test_folds=(), pruner="none")
    plan = JobPlan(["sweep=search", "experiment=demo", "logger=none"], compose)
    space = parse_space({"optim.lr": "choice(1e-7, 3e-3)"})
    study = open_study(tmp_path, StudyPlan("broken", settings.folds), settings, {})
    job = _standin(compose, lambda cfg, overrides: 0.5, epochs=1, seconds=60)  # a long job
    search = Search([StudyRun(StudyPlan("broken", (1,)), study, 0)], settings, space, plan, job, 1, job.stop)
    looks = iter(range(1000))

    def broken_watch():
        if next(looks) == 10:  # the job has started by now
            raise RuntimeError("the study's storage went away")

    monkeypatch.setattr(search, "_watch_epochs", broken_watch)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="storage went away"):
        search.run()
    assert time.monotonic() - started < 20  # not the job's 60 s
    (folder,) = [path.parent for path in tmp_path.glob("*/metrics.json")]
    assert json.loads((folder / "metrics.json").read_text())["status"] == "interrupted"  # saved, resumable


def _corpus_copy(cache_dir: Path, folder: Path, session_1_labels: float | None = None) -> Path:
    """The small demo corpus copied to `folder` as a CSV corpus; with `session_1_labels`, every label of
    session 1's speakers set to it, and their audio swapped for other sessions' recordings."""
    from emotion.data.demo import ensure_demo_corpus

    shutil.copytree(ensure_demo_corpus(cache_dir / "search-property", 0, 4).parent, folder)
    manifest = folder / "manifest.csv"
    rows = read_csv(manifest)
    others = [row["path"] for row in rows if row["fold"] != "1"]
    if session_1_labels is not None:
        for i, row in enumerate(row for row in rows if row["fold"] == "1"):
            row.update({dim: str(session_1_labels) for dim in ("arousal", "valence", "dominance")}, path=others[i])
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _validation_from_the_data(cfg: DictConfig, overrides: list[str]) -> float:
    """What a real job's validation score depends on: its training and validation items, labels and audio.
    One learning rate suits corpora rated high, the other corpora rated low."""
    from emotion.data.corpora import load_corpus

    splits = load_corpus(DataSettings.of(cfg.data)).splits
    rated = statistics.fmean(label for item in [*splits.train, *splits.val] for label in item.labels) - 3
    audio = sum(os.path.getsize(item.path) for item in splits.train) * 1e-12
    return 0.5 + (rated if "optim.lr=0.003" in overrides else -rated) + audio


def _chosen(tmp_path, manifest: Path, settings: SearchSettings) -> list[str]:
    """The configuration a search with stand-in jobs chooses for its first study, both candidates tried."""
    sweep = tmp_path / manifest.parent.name
    sweep.mkdir(parents=True)
    compose = partial(_compose, sweep)
    plan = JobPlan(["sweep=search", "experiment=demo", "data=csv", f"data.manifest={manifest}", "logger=none"], compose)
    space = parse_space({"optim.lr": "choice(1e-7, 3e-3)"})
    study_plan = plan_studies(settings, [1, 2, 3, 4, 5], "property")[0]
    study = open_study(sweep, study_plan, settings, {})
    study.enqueue_trial({"optim.lr": 3e-3})
    study.enqueue_trial({"optim.lr": 1e-7})
    job = _standin(compose, _validation_from_the_data)
    Search([StudyRun(study_plan, study, 0)], settings, space, plan, job, 1, GracefulStop()).run()
    return study.best_trial.user_attrs["config"]


@pytest.mark.slow
def test_changing_every_label_and_recording_of_a_test_folds_speakers_leaves_its_studys_choice_alone(
    cache_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("emotion.sweeps.search.POLL_SECONDS", 0.01)
    high, low = (_corpus_copy(cache_dir, tmp_path / name, labels) for name, labels in (("high", 5.0), ("low", 1.0)))
    blind = SearchSettings(n_trials=2, pruner="none")  # the default: a study blind to fold 1, on folds 2 and 3
    assert _chosen(tmp_path / "blind", high, blind) == _chosen(tmp_path / "blind", low, blind)
    # A study whose jobs trained on fold 1's speakers (folds 2 and 3 train on sessions 4, 5, 1 and 5, 1, 2)
    # chooses by them: the same change flips its choice.
    seeing = SearchSettings(n_trials=2, pruner="none", test_folds=(), folds=(2, 3))
    assert _chosen(tmp_path / "seeing", high, seeing) != _chosen(tmp_path / "seeing", low, seeing)


def test_the_summary_of_a_search_reads_search_json_and_never_opens_the_study_database(tmp_path):
    """Jobs write the summary after they end, on SLURM from other machines: SQLite on a shared file system
    is not theirs to open. A summary written beside an unreadable search.db, without importing Optuna."""
    from emotion.sweeps.search_report import SearchRecord, StudyRecord, TrialLine, write_search
    from tests.test_report import write_job

    sweep = tmp_path / "searched"
    write_job(sweep, ["data.fold=2", "data.exclude_fold=1", "optim.lr=0.001"], "completed", 0.5)  # a trial's
    outer = write_job(sweep, ["data.fold=1", "optim.lr=0.001"], "completed", 0.6)
    trial = TrialLine(0, "complete", 0.6, 3, {"optim.lr": "0.001"})
    study = StudyRecord("s-fold1", ["2"], "1", [trial], outer.name)
    write_search(sweep, SearchRecord("s", "val_ccc_mean", 1, ["experiment=demo"], ["1", "2", "3"], [study]))
    (sweep / "search.db").write_bytes(b"not a database")
    script = (
        "import sys; from pathlib import Path; from emotion.report import write_summary; "
        f"write_summary(Path({str(sweep)!r})); assert 'optuna' not in sys.modules, 'optuna was imported'"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    summary = (sweep / "summary.md").read_text()
    assert "**Study `s-fold1`**: 1 of 1 trials (1 complete)" in summary
    assert "its choice saw folds 2, 3 and never fold 1's speakers" in summary
    assert "Trained on fold 1, which none of the study's jobs saw: test CCC-V 0.600" in summary
    rows = read_csv(sweep / "summary.csv")
    assert {row["data.exclude_fold"]: row["trials"] for row in rows} == {"1": "0", "": ""}


def _compose(sweep_dir: Path, overrides: list[str]):
    register_resolver()  # the job folder's name
    return compose_config([*overrides, f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)


# The acceptance search, with the default folds: blind to fold 1, 6 trials on folds 2 and 3 × 3 epochs, where
# one learning rate is hopeless; then the best trains on fold 1.
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


def _pruning(sweep: Path) -> Path | None:
    """A job its search has just asked to stop (pruned)."""
    return next((marker.parent for marker in sweep.glob("*/.prune")), None)


def _load(sweep: Path, study: str = "{name}-fold1") -> optuna.Study:
    return optuna.load_study(study_name=study.format(name=sweep.name), storage=study_storage(sweep))


@pytest.mark.slow
def test_a_search_killed_right_after_a_prune_and_run_again_ends_its_trials_and_tests_its_choice_on_an_unseen_fold(
    cache_dir, tmp_path
):
    sweep = tmp_path / "multirun" / "acceptance"
    process = _start(SEARCH, cache_dir, tmp_path, tmp_path / "first.out")
    try:
        deadline = time.monotonic() + 400
        while not (pruning := _pruning(sweep)):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "first.out").read_text()[-3000:]
            time.sleep(0.02)
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
    # Nothing trained twice from scratch: finished jobs were not run again, the pruned one went on from its
    # checkpoint only to stop.
    assert {folder: (folder / "metrics.json").stat().st_mtime_ns for folder in finished} == finished
    assert json.loads((pruning / "metrics.json").read_text())["status"] == "pruned"
    if pruning not in finished:
        assert "resuming from" in (pruning / "train.log").read_text()
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
        else:  # pruned: its begun jobs ended pruned (or had completed), history kept; the others never began
            assert "pruned" in {m["status"] for m in metrics}
            assert all((folder / "history.csv").is_file() for folder in jobs_of[trial.number])
        curve = trial.intermediate_values  # each epoch's value: the fold-mean of best validation so far
        assert list(curve) == list(range(1, len(curve) + 1))
        assert all(-1 <= value <= 1 for value in curve.values())

    # No job of the study saw fold 1; the study's choice was then trained and tested on it.
    for folder in (folder for jobs in jobs_of.values() for folder in jobs):
        assert "data.exclude_fold=1" in folder.name and "data.fold=1," not in folder.name
    best = study.best_trial
    (chosen,) = [path.parent for path in sweep.glob("data.fold=1,*/metrics.json")]
    assert json.loads((chosen / "metrics.json").read_text())["status"] == "completed"
    assert all(item in chosen.name for item in best.user_attrs["config"])
    test = json.loads((chosen / "metrics.json").read_text())["test"]

    summary = (sweep / "summary.md").read_text()
    assert "**Study `acceptance-fold1`**: 6 of 6 trials" in summary and "pruned at epoch" in summary
    assert "its choice saw folds 2, 3, 4, 5 and never fold 1's speakers" in summary
    assert f"★ Best trial by validation: {best.number}," in summary
    assert f"Trained on fold 1, which none of the study's jobs saw: test CCC-V {test['ccc_v']:.3f}" in summary
    assert "| nested | 1 |" in summary  # the headline: fold 1's choice, made without fold 1
    command = next(line.strip() for line in summary.splitlines() if line.strip().startswith("python train.py -m"))
    assert command.endswith("data.fold=1,2,3,4,5") and "sweep=search" not in command
    assert "not clean on folds 2, 3, 4, 5, which its choice saw" in summary
    assert all(item in command for item in best.user_attrs["config"])
    rows = read_csv(sweep / "summary.csv")
    assert sorted(int(n) for row in rows for n in row["trials"].split()) == list(range(6))
    assert (sweep / "search.png").stat().st_size > 0


def _jobs_by_trial(sweep: Path) -> dict[int, list[Path]]:
    """The trials' jobs, by trial (not the job that trains a study's choice on its test fold)."""
    from emotion.sweeps.search_report import read_search

    jobs: dict[int, list[Path]] = {}
    choices = read_search(sweep).outer_jobs
    for overrides in sweep.glob("*/.hydra/overrides.yaml"):
        if overrides.parent.parent.name in choices:
            continue
        trial = next(line for line in overrides.read_text().splitlines() if "search.trial=" in line)
        jobs.setdefault(int(trial.rsplit("=", 1)[1]), []).append(overrides.parent.parent)
    return jobs


@pytest.mark.slow
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
            "search.test_folds=[]",  # one study, no choice to train afterwards
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
    study = _load(sweep, "pool")
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
