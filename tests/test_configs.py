"""Every config file composes, and the profiles carry the seed's values."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from omegaconf import OmegaConf

from emotion import settings as typed
from tests.conftest import CONF, compose_config, lock_held_elsewhere

GROUPS = ["model", "encoder", "optim", "data", "augment", "trainer", "logger", "experiment", "sweep"]
# Every file in a group's folder is an option `--help` offers, so each must compose into a runnable config.
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_file_composes_and_resolves(group, option, cache_dir):
    cfg = OmegaConf.to_container(compose_config([f"{group}={option}"]), resolve=True)
    assert set(cfg) >= {"data", "model", "encoder", "optim", "trainer", "logger", "paths"}
    assert cfg["paths"]["cache_dir"] == str(cache_dir)  # interpolations resolve
    assert cfg["data"]["name"] and cfg["data"]["batch_size"] > 0  # every data option is a whole corpus


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_file_gives_settings_of_the_types_the_code_reads(group, option, cache_dir):
    cfg = compose_config([f"{group}={option}"])
    settings = typed.JobSettings.of(cfg)
    assert settings.model.profile and settings.trainer.max_epochs > 0 and settings.cache_dir == str(cache_dir)
    # Every key of a typed group is a field: a key without one would be dropped on the way to the code.
    for name, kind in {**typed.GROUPS, "model": typed.model_class(cfg.model.kind)}.items():
        assert set(cfg[name]) <= {field.name for field in fields(kind)}, name


def test_each_group_has_the_options_the_design_names():
    names = {group: {path.stem for path in (CONF / group).glob("*.yaml")} for group in GROUPS}
    assert {"standard", "max", "conservative", "aggressive", "baseline"} <= names["model"]
    assert {"wavlm_large", "wavlm_base_plus", "tiny"} <= names["encoder"]
    assert {"adamw"} <= names["optim"]
    assert {"demo"} <= names["data"]
    assert {"wandb", "none"} <= names["logger"]
    assert {"demo"} <= names["experiment"]


SEED_PROFILES = {
    # profile: (batch, accumulation, d_prosody_out, d_hidden)
    "conservative": (4, 2, 64, 256),
    "standard": (8, 1, 64, 256),
    "aggressive": (8, 1, 64, 256),
    "max": (12, 1, 128, 384),
}


@pytest.mark.parametrize("profile", SEED_PROFILES)
def test_profiles_carry_the_seed_values(profile):
    cfg = compose_config([f"model={profile}"])
    batch, accumulation, d_prosody_out, d_hidden = SEED_PROFILES[profile]
    assert cfg.model.profile == profile
    assert cfg.data.batch_size == batch
    assert cfg.trainer.accumulation_steps == accumulation
    assert cfg.model.d_prosody_out == d_prosody_out
    assert cfg.model.d_hidden == d_hidden
    assert cfg.model.d_state == 64
    assert cfg.model.mamba_n_layers == 2
    assert cfg.model.mamba_d_state == 16
    assert list(cfg.model.speech_encoder_layers) == [6, 12, 18, 24]


def test_the_profiles_feed_egemaps_and_its_functionals_and_the_baseline_has_only_its_own_keys():
    for profile in SEED_PROFILES:
        model = compose_config([f"model={profile}"]).model
        assert (model.kind, model.acoustic, model.functionals) == ("mamba_ema", "egemaps", True)
    baseline = compose_config(["model=baseline"]).model
    assert (baseline.kind, baseline.profile, baseline.regressor, baseline.svr_kernel) == (
        "baseline",
        "baseline",
        "svr",
        "linear",
    )
    assert "d_hidden" not in baseline and "speech_encoder_layers" not in baseline


def test_command_line_wins_over_the_profile():
    cfg = compose_config(["model=max", "data.batch_size=3", "trainer.accumulation_steps=4"])
    assert (cfg.data.batch_size, cfg.trainer.accumulation_steps, cfg.model.d_hidden) == (3, 4, 384)


def test_demo_experiment_swaps_in_the_demo_corpus_and_tiny_encoder_and_keeps_the_profile():
    cfg = compose_config(["experiment=demo", "model=max", "data.fold=2"])
    assert (cfg.data.name, cfg.encoder.name, cfg.model.profile, cfg.data.fold) == ("demo", "tiny", "max", 2)
    assert cfg.data.batch_size == 12


def test_defaults_are_wavlm_large_fine_tuned_with_offline_wandb():
    cfg = compose_config()
    assert cfg.encoder.source == "microsoft/wavlm-large"
    assert cfg.encoder.freeze is False
    assert cfg.logger.mode == "offline"
    assert cfg.optim.lr == 1e-4 and cfg.optim.encoder_lr == 1e-5


def test_tiny_encoder_is_as_deep_as_wavlm_large():
    cfg = compose_config(["encoder=tiny"])
    assert cfg.encoder.source is None
    assert cfg.encoder.random_init.num_hidden_layers == 24


@pytest.mark.parametrize(
    ("sweep", "params"),
    [
        ("folds", {"data.fold": "range(1,6)"}),
        ("mamba", {"model.mamba_n_layers": "2,3", "data.fold": "range(1,6)"}),
        (
            "capacity",
            {
                "data.batch_size": "8,12",
                "model.d_hidden": "256,384",
                "model.d_state": "64,128",
                "model.speech_encoder_layers": "[6,12,18,24],[3,6,9,12,15,18,21,24]",
                "data.fold": "range(1,6)",
            },
        ),
    ],
)
@pytest.mark.slow
def test_named_sweeps_set_their_parameters_and_their_folder(sweep, params):
    cfg = compose_config([f"sweep={sweep}"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == params
    assert cfg.name == sweep and cfg.hydra.sweep.dir == f"multirun/{sweep}"


def test_job_folders_are_named_by_their_overrides_and_cut_with_a_hash_when_too_long():
    from emotion.sweeps.folders import MAX_NAME_BYTES, register_resolver

    register_resolver()
    cfg = compose_config(["data.fold=2"], return_hydra_config=True)
    short = "data.fold=2,model.d_hidden=384"
    long = ",".join(
        f"model.speech_encoder_layers=[{','.join(['1'] * 40)}],encoder.random_init.x{i}=é" for i in range(9)
    )

    def folder(override_dirname):
        cfg.hydra.job.override_dirname = override_dirname
        return cfg.hydra.sweep.subdir

    assert folder(short) == short
    # A value's `/` would nest folders (and hide the job from the table): it is written as %2F.
    assert folder("data.fold=1,data.manifest=/data/x/m.csv") == "data.fold=1,data.manifest=%2Fdata%2Fx%2Fm.csv"
    cut = folder(long)
    assert len(cut.encode()) <= MAX_NAME_BYTES and long.startswith(cut.rsplit("-", 1)[0])
    assert folder(long) == cut and folder(long + "0") != cut  # deterministic, and different overrides differ


def test_a_single_run_continues_the_newest_unfinished_run_of_its_configuration_not_held_by_another(tmp_path):
    from emotion.sweeps.folders import JOB_LOCK, _unfinished_run

    outputs = tmp_path / "outputs"

    def past_run(when: str, status: str | None, overrides=()):
        folder = outputs / when
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.pt").touch()
        (folder / ".hydra").mkdir()
        OmegaConf.save(compose_config(["experiment=demo", *overrides]), folder / ".hydra" / "config.yaml")
        if status is not None:
            (folder / "metrics.json").write_text(json.dumps({"status": status}))
        return folder

    older = past_run("2026-01-01/10-00-00", "interrupted")
    newer = past_run("2026-01-02/10-00-00", None)  # killed before it wrote metrics.json
    past_run("2026-01-03/10-00-00", "completed")
    past_run("2026-01-04/10-00-00", "interrupted", ["data.fold=2"])  # another configuration
    past_run("2026-01-05/10-00-00", "interrupted", ["trainer.resume=never"])  # the same: resume changes no result
    this_run = compose_config(["experiment=demo", "logger=none"], return_hydra_config=True)  # nor does the logger

    assert _unfinished_run(outputs, this_run) == str(outputs / "2026-01-05/10-00-00")
    (outputs / "2026-01-05/10-00-00" / "checkpoints" / "last.pt").unlink()  # nothing to go on from
    assert _unfinished_run(outputs, this_run) == str(newer)
    with lock_held_elsewhere(newer / JOB_LOCK):  # still running in another process
        assert _unfinished_run(outputs, this_run) == str(older)
    never = compose_config(["experiment=demo", "trainer.resume=never"], return_hydra_config=True)
    assert _unfinished_run(outputs, never) is None  # always a new folder
