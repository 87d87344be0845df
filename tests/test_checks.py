"""Config values are checked before anything heavy runs; every problem names its key, its value and a fix."""

from __future__ import annotations

import json

import pytest
import torch

from emotion.checks import ConfigError, check_config
from emotion.job import EXIT_CONFIG_ERROR
from tests.conftest import SMALL_DEMO, compose_config, run_train
from tests.trees import csv_tree


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.d_hidden=0", "model.d_hidden=0: must be a positive whole number"),
        ("model.d_state=-4", "model.d_state=-4: must be a positive whole number"),
        ("model.mamba_n_layers=1.5", "model.mamba_n_layers=1.5: must be a positive whole number"),
        ("data.batch_size=0", "data.batch_size=0: must be a positive whole number"),
        ("trainer.accumulation_steps=0", "trainer.accumulation_steps=0: must be a positive whole number"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: must be a positive whole number"),
        ("data.num_workers=-1", "data.num_workers=-1: must be auto or a whole number, 0 or more"),
        ("trainer.cpu_threads=0", "trainer.cpu_threads=0: must be auto or a positive whole number"),
        ("optim.lr=0", "optim.lr=0: must be a number above 0"),
        ("data.max_seconds=-3", "data.max_seconds=-3: must be a number above 0"),
        ("model.dropout=1.0", "model.dropout=1.0: must be in [0.0, 1.0)"),
        ("model.ema_alpha_init=1.2", "model.ema_alpha_init=1.2: must be in [0.0, 1.0)"),
        ("trainer.precision=fp8", "trainer.precision='fp8': must be one of auto, bf16, fp16, fp32"),
        ("trainer.resume=sometimes", "trainer.resume='sometimes': must be one of auto, never"),
        ("model.mamba_impl=triton", "model.mamba_impl='triton': must be one of auto, kernel, torch"),
        ("logger.backend=tensorboard", "logger.backend='tensorboard': must be one of wandb, none"),
        ("data.batching=buckets", "data.batching='buckets': must be one of bucket, random"),
        ("data.on_bad_audio=ignore", "data.on_bad_audio='ignore': must be one of error, skip"),
        ("data.validation=random", "data.validation='random': must be one of next_session, speaker_holdout"),
        ("report.bootstrap=-5", "report.bootstrap=-5: must be a whole number, 0 or more"),
        ("report.seed=abc", "report.seed='abc': must be a whole number"),
        ("data.fold=6", "data.fold=6: the demo corpus has folds 1–5"),
        (
            "model.speech_encoder_layers=[6,25]",
            "model.speech_encoder_layers=[6, 25]: encoder=tiny has hidden states 0–24",
        ),
        ("model.speech_encoder_layers=[]", "model.speech_encoder_layers=[]: must be a list of hidden-state indices"),
        ("trainer.device=tpu", "trainer.device='tpu': must be auto, cpu, cuda or cuda:<index>"),
        ("model.acoustic=mfcc", "model.acoustic='mfcc': must be one of egemaps, contours, both"),
        ("model.functionals=yes", "model.functionals='yes': must be true or false"),
        ("model.time_mask_ratio=1", "model.time_mask_ratio=1: must be in [0.0, 1.0)"),
        ("model.feature_mask_ratio=-0.1", "model.feature_mask_ratio=-0.1: must be in [0.0, 1.0)"),
        ("model.time_mask_width=0", "model.time_mask_width=0: must be a positive whole number"),
        ("data.normalise=global", "data.normalise='global': must be one of training, corpus, speaker"),
        ("model.init_from=/no/such/job", "model.init_from='/no/such/job': no such checkpoint"),
        ("report.select=test_ccc_v", "report.select='test_ccc_v': must be one of val_ccc_mean, val_ccc_v"),
    ],
)
def test_each_check_names_the_key_the_value_and_what_is_valid(override, expected):
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", override]))
    assert expected in str(error.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.regressor=forest", "model.regressor='forest': must be one of svr, ridge"),
        ("model.svr_kernel=poly", "model.svr_kernel='poly': must be one of linear, rbf"),
        ("model.svr_c=[1,0]", "model.svr_c=[1, 0]: must be a list of numbers above 0"),
        ("model.svr_epsilon=-1", "model.svr_epsilon=-1: must be a number, 0 or more"),
    ],
)
def test_the_baselines_own_keys_are_checked_and_the_neural_models_are_not_asked_of_it(override, expected):
    check_config(compose_config(["experiment=demo", "model=baseline"]))  # no d_hidden, no layers: fine
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", "model=baseline", override]))
    assert expected in str(error.value) and str(error.value).startswith("1 config problem(s)")


def test_the_acoustic_choices_checked_are_the_models_own():
    from typing import get_args

    from emotion.features.acoustic import FRAME_SETS
    from emotion.settings import AcousticSet

    assert tuple(FRAME_SETS) == get_args(AcousticSet)


def test_all_problems_come_in_one_message():
    cfg = compose_config(["experiment=demo", "model.d_hidden=0", "optim.lr=-1", "data.fold=9", "trainer.precision=x"])
    with pytest.raises(ConfigError, match=r"^4 config problem\(s\); nothing was run") as error:
        check_config(cfg)
    assert all(key in str(error.value) for key in ("model.d_hidden", "optim.lr", "data.fold", "trainer.precision"))


def test_the_shipped_configurations_pass():
    for overrides in (
        [],
        ["experiment=demo"],
        ["model=max", "experiment=demo"],
        ["model=conservative"],
        ["model=baseline"],
    ):
        check_config(compose_config(overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA says")
def test_cuda_requested_without_cuda_and_the_kernel_without_mamba_ssm_are_caught():
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", "trainer.device=cuda", "model.mamba_impl=kernel"]))
    assert "trainer.device='cuda': CUDA is not available here" in str(error.value)
    assert "model.mamba_impl='kernel': needs mamba-ssm and a CUDA device" in str(error.value)


def test_a_real_corpus_without_its_root_is_caught_with_the_environment_variable(monkeypatch):
    monkeypatch.delenv("MSP_PODCAST_ROOT", raising=False)
    with pytest.raises(ConfigError, match=r"data.root is not set for data=msp_podcast.*MSP_PODCAST_ROOT.*Labels"):
        check_config(compose_config(["data=msp_podcast"]))


def test_a_job_with_a_bad_config_stops_before_any_work_and_records_why(cache_dir, tmp_path):
    out = tmp_path / "job"
    result = run_train(
        ["experiment=demo", "model.d_hidden=0", "logger=wandb", *SMALL_DEMO, f"hydra.run.dir={out}"],
        cache_dir,
        check=False,
    )
    assert result.returncode != 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "model.d_hidden=0: must be a positive whole number" in metrics["error"]
    assert not (out / "checkpoints").exists() and not (out / "wandb").exists()


def test_a_key_added_with_a_plus_that_no_group_has_is_refused_with_the_nearest_key():
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", "+model.d_hiden=128", "+trainer.max_epoch=3"]))
    assert "model.d_hiden: not a key of this project's configuration (did you mean model.d_hidden?)" in str(error.value)
    assert "trainer.max_epoch: not a key of this project's configuration (did you mean trainer.max_epochs?)" in str(
        error.value
    )
    check_config(compose_config(["experiment=demo", "+notes=a free-form note", "+encoder.random_init.vocab_size=9"]))


def test_a_csv_manifest_whose_fold_column_gets_no_data_fold_is_caught_up_front(tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "fold"])
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["experiment=demo", "data=csv", f"data.manifest={manifest}", "data.fold=null"]))
    assert f"data.fold=None: data.manifest='{manifest}' has folds 1–3 (its fold column); pick the test fold" in str(
        error.value
    )


def test_config_problems_are_printed_alone_at_once_without_loading_torch(cache_dir, tmp_path):
    unimportable = tmp_path / "no_torch" / "torch"
    unimportable.mkdir(parents=True)
    (unimportable / "__init__.py").write_text("raise ImportError('torch was imported before the config was checked')")
    out = tmp_path / "job"
    result = run_train(
        ["experiment=demo", "+model.d_hiden=128", f"hydra.run.dir={out}"],
        cache_dir,
        check=False,
        env={"PYTHONPATH": str(unimportable.parent)},
    )
    assert result.returncode == EXIT_CONFIG_ERROR
    assert result.stderr.startswith("1 config problem(s); nothing was run:\n  model.d_hiden: not a key")
    assert "Traceback" not in result.stderr and "torch was imported" not in result.stdout + result.stderr
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"


def test_selecting_on_a_dimension_the_corpus_has_no_labels_of_is_caught_up_front(tmp_path):
    manifest = csv_tree(tmp_path / "corpus", ["path", "speaker", "arousal", "valence", "fold"])
    job = ["experiment=demo", "data=csv", f"data.manifest={manifest}", "data.fold=1"]
    check_config(compose_config([*job, "report.select=val_ccc_v"]))
    with pytest.raises(ConfigError) as error:
        check_config(compose_config([*job, "report.select=val_ccc_d"]))
    assert "report.select=val_ccc_d: the corpus has no dominance labels (it has arousal, valence)" in str(error.value)
