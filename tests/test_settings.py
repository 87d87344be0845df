"""Typed settings: a group's values are checked against its dataclass, and each problem says what it must be."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import pytest

from emotion.selection import SELECTABLE
from emotion.settings import (
    Auto,
    BaselineSettings,
    DataSettings,
    ModelSettings,
    PositiveInt,
    Rule,
    Selectable,
    SettingsError,
    TrainerSettings,
    describe,
    fits,
    model_settings,
)
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (3, PositiveInt, True),
        (0, PositiveInt, False),
        (True, int, False),  # YAML's true is not the number 1
        (2, float, True),  # a whole number is a number
        (float("nan"), float, False),
        ("auto", Auto | PositiveInt, True),
        (4, Auto | PositiveInt, True),
        ("four", Auto | PositiveInt, False),
        (None, int | None, True),
        (1, Literal[True, False], False),
        ([6, 12], list[int], True),
        ([6, "12"], list[int], False),
        ([], Annotated[list[int], Rule(bool, "a list")], False),
    ],
)
def test_a_value_fits_its_type_as_yaml_writes_it(value, kind, expected):
    assert fits(value, kind) is expected


def test_a_type_says_in_words_what_a_value_must_be():
    assert describe(Auto | PositiveInt) == "auto or a positive whole number"
    assert describe(Literal["auto", "bf16", "fp16", "fp32"]) == "one of auto, bf16, fp16, fp32"
    assert describe(list[float] | None) == "a list of numbers or null"
    assert describe(bool) == "true or false"


def test_settings_of_a_group_name_every_value_that_does_not_fit_at_once():
    values = {**vars(TrainerSettings.of(compose_config().trainer)), "max_epochs": 0, "precision": "fp8"}
    with pytest.raises(SettingsError) as error:
        TrainerSettings.of(values)
    assert str(error.value).splitlines() == [
        "trainer.max_epochs=0: must be a positive whole number",
        "trainer.precision='fp8': must be one of auto, bf16, fp16, fp32",
    ]


def test_a_missing_key_is_named_and_a_corpus_key_other_corpora_lack_is_optional():
    data = DataSettings.of(compose_config(["data=demo"]).data)
    assert data.manifest is None and data.utterances_per_voice == 48  # csv's key; the demo's own
    values = {key: value for key, value in vars(data).items() if key != "batch_size"}
    with pytest.raises(SettingsError, match=r"^data.batch_size: missing"):
        DataSettings.of(values)


def test_the_model_kind_picks_its_settings_and_settings_are_frozen():
    assert isinstance(model_settings(compose_config(["model=baseline"]).model), BaselineSettings)
    model = model_settings(compose_config().model)
    assert isinstance(model, ModelSettings) and model.d_hidden == 256
    with pytest.raises(AttributeError):
        model.d_hidden = 384


def test_the_selectable_scores_are_the_selections_own():
    assert get_args(Selectable) == tuple(SELECTABLE)
