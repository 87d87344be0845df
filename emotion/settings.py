"""Typed settings: what a job reads from each config group, one frozen dataclass per group.

A job checks Hydra's config against these types (`emotion.checks`, which also says what a bad value should
be) and hands `JobSettings.of(cfg)` down (emotion.job); code below names the group it reads. A field's
type says what the key may hold, `Annotated` with a `Rule` where a type alone is too loose:

    d_hidden: PositiveInt            # model.d_hidden=0 → "must be a positive whole number"
    precision: Literal["auto", "bf16", "fp16", "fp32"]

Key names and order follow conf/; a group's file there holds the defaults and their documentation.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Annotated, Any, ClassVar, Literal, Union

from omegaconf import OmegaConf

from emotion import composition

composition.register()  # data=multi's parts resolve wherever a config is read


@dataclass(frozen=True)
class Rule:
    """A condition on a value that already has its field's type, and how to say it in an error."""

    holds: Callable[[Any], bool]
    wanted: str  # completes "must be …"


PositiveInt = Annotated[int, Rule(lambda v: v > 0, "a positive whole number")]
NonNegativeInt = Annotated[int, Rule(lambda v: v >= 0, "a whole number, 0 or more")]
PositiveFloat = Annotated[float, Rule(lambda v: v > 0, "a number above 0")]
NonNegativeFloat = Annotated[float, Rule(lambda v: v >= 0, "a number, 0 or more")]
Fraction = Annotated[float, Rule(lambda v: 0 <= v < 1, "in [0.0, 1.0)")]
FractionOrOne = Annotated[float, Rule(lambda v: 0 <= v <= 1, "in [0.0, 1.0]")]
Auto = Literal["auto"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
MambaImpl = Literal["auto", "kernel", "torch"]
ResumeMode = Literal["auto", "never"]
AcousticSet = Literal["egemaps", "contours", "both"]
ValidationProtocol = Literal["next_session", "speaker_holdout"]
# Whose statistics standardise the acoustic features (emotion.features.normalisation).
Normalisation = Literal["training", "corpus", "speaker"]
Selectable = Literal["val_ccc_mean", "val_ccc_v", "val_ccc_a", "val_ccc_d"]  # emotion.selection


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    """A config group's settings: `of` builds them from the group's node (a DictConfig or a dict)."""

    config_group: ClassVar[str]  # as its keys are written: data.fold

    @classmethod
    def of(cls, node) -> typing.Self:
        """The settings in `node`, or one SettingsError naming every value that does not fit."""
        values = _plain(node)
        found = cls.problems(values)
        if found:
            raise SettingsError("\n".join(found))
        return cls(**{field.name: values[field.name] for field in fields(cls) if field.name in values})

    @classmethod
    def problems(cls, values: dict) -> list[str]:
        """What in `values` (the group's plain values) does not fit: one line per key, with the value and
        what it must be."""
        found = []
        for name, kind in typing.get_type_hints(cls, include_extras=True).items():
            if typing.get_origin(kind) is ClassVar:
                continue
            if name not in values:
                if _required(cls, name):
                    found.append(f"{cls.config_group}.{name}: missing; conf/{cls.config_group}/ must set it")
            elif not fits(values[name], kind):
                found.append(f"{cls.config_group}.{name}={values[name]!r}: must be {describe(kind)}")
        return found


@dataclass(frozen=True)
class DataSettings(Settings):
    config_group = "data"

    name: str
    fold: int | None
    validation: ValidationProtocol
    val_fraction: Fraction
    split_seed: int
    exclude_fold: int | None
    batch_size: PositiveInt
    batching: Literal["bucket", "random"]
    sample_rate: PositiveInt
    max_seconds: PositiveFloat
    eval_chunk_seconds: PositiveFloat
    min_seconds: NonNegativeFloat
    on_bad_audio: Literal["error", "skip"]
    num_workers: Auto | NonNegativeInt
    normalise: Normalisation
    acoustic_workers: PositiveInt | None
    # Only some corpora have these (conf/data/<corpus>.yaml).
    root: str | None = None
    label_range: list[float] | None = None
    seed: int | None = None  # demo: the voices' generator
    studio: Literal["a", "b"] | None = None  # demo: where the voices are recorded and how they are rated
    utterances_per_voice: PositiveInt | None = None  # demo
    manifest: str | None = None  # csv
    corpus_name: str | None = None  # csv
    n_folds: PositiveInt | None = None  # csv
    test_set: str | None = None  # msp_podcast
    # data=multi: the corpora trained on together, each one's complete data group, how often each is drawn,
    # and whose validation selects.
    corpora: Annotated[list, Rule(bool, "a list of data options or CSV manifests, e.g. [demo, demo_b]")] | None = None
    parts: list[dict] | None = None
    corpus_weights: Literal["natural", "balanced"] | list[NonNegativeFloat] | None = None
    val_corpus: str | None = None
    # Corpora whose test split the trained model is also scored on (cross-corpus), and their data groups.
    test_corpora: list | None = None
    test_normalise: Auto | Normalisation = "auto"
    test_parts: list[dict] | None = None

    def part_settings(self) -> tuple[DataSettings, ...]:
        """The settings of each corpus of data=multi; () for one corpus."""
        return tuple(DataSettings.of(part) for part in self.parts or ())

    def test_part_settings(self) -> tuple[DataSettings, ...]:
        """The settings of each corpus of data.test_corpora."""
        return tuple(DataSettings.of(part) for part in self.test_parts or ())


@dataclass(frozen=True)
class ModelSettings(Settings):
    """The neural model (model.kind=mamba_ema): conf/model/standard.yaml documents each key."""

    config_group = "model"

    profile: str
    kind: Literal["mamba_ema", "baseline"]  # model_class picks the settings of the kind
    speech_encoder_layers: Annotated[
        list[NonNegativeInt], Rule(bool, "a list of hidden-state indices, e.g. [6,12,18,24]")
    ]
    acoustic: AcousticSet
    functionals: bool
    d_prosody_out: PositiveInt
    d_functionals_out: PositiveInt
    d_hidden: PositiveInt
    d_state: PositiveInt
    mamba_n_layers: PositiveInt
    mamba_d_state: PositiveInt
    mamba_d_conv: PositiveInt
    mamba_expand: PositiveInt
    mamba_impl: MambaImpl
    ema_alpha_init: Fraction
    ema_learn_alpha: bool
    dropout: Fraction
    time_mask_ratio: Fraction
    time_mask_width: PositiveInt
    feature_mask_ratio: Fraction
    init_from: str | None
    grad_checkpointing: bool


PositiveCandidates = Annotated[list[PositiveFloat], Rule(bool, "a list of numbers above 0, e.g. [0.1, 1, 10]")]


@dataclass(frozen=True)
class BaselineSettings(Settings):
    """eGeMAPS functionals and a scikit-learn regressor (model=baseline)."""

    config_group = "model"

    profile: str
    kind: Literal["baseline"]
    regressor: Literal["svr", "ridge"]
    svr_kernel: Literal["linear", "rbf"]
    svr_c: PositiveCandidates
    svr_epsilon: NonNegativeFloat
    ridge_alpha: PositiveCandidates


@dataclass(frozen=True)
class EncoderSettings(Settings):
    config_group = "encoder"

    name: str
    source: str | None
    random_init: dict[str, Any] | None  # WavLMConfig keywords
    freeze: bool
    feature_cache: bool
    feature_cache_max_gb: PositiveFloat
    freeze_feature_encoder: bool
    normalize_waveform: bool
    mask_time_prob: FractionOrOne


@dataclass(frozen=True)
class OptimSettings(Settings):
    config_group = "optim"

    name: str
    lr: PositiveFloat
    encoder_lr: NonNegativeFloat
    weight_decay: NonNegativeFloat
    betas: list[float]
    eps: PositiveFloat
    warmup_ratio: Fraction
    min_lr_ratio: FractionOrOne
    grad_clip: PositiveFloat


@dataclass(frozen=True)
class TrainerSettings(Settings):
    config_group = "trainer"

    max_epochs: PositiveInt
    patience: PositiveInt
    accumulation_steps: PositiveInt
    precision: Precision
    device: str
    seed: int
    cpu_threads: Auto | PositiveInt
    progress_bar: bool
    resume: ResumeMode
    checkpoint_every_steps: NonNegativeInt
    preflight: Auto | bool
    max_bad_steps: PositiveInt


@dataclass(frozen=True)
class LoggerSettings(Settings):
    config_group = "logger"

    backend: Literal["wandb", "none"]
    project: str | None = None
    entity: str | None = None
    mode: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class InferenceSettings(Settings):
    """How evaluate.py and predict.py run a trained model: their groups share these keys."""

    batch_size: PositiveInt
    workers: NonNegativeInt
    acoustic_workers: PositiveInt | None
    device: str
    precision: Precision
    progress_bar: bool
    normalise: Auto | Normalisation  # whose statistics standardise the acoustic features (conf/evaluate.yaml)


@dataclass(frozen=True)
class EvaluateSettings(InferenceSettings):
    """evaluate.py's own group: conf/evaluate.yaml documents each key."""

    config_group = "evaluate"

    split: Literal["train", "val", "test", "all"]
    conditions: Annotated[list[str], Rule(bool, "a list of conditions, e.g. [clean, snr20, snr10, snr0, reverb]")]
    condition_seed: int  # the corruptions' noise, rooms and draws
    noise_dir: str | None  # recordings the snrN conditions add; None: generated pink noise
    rir_dir: str | None  # room impulse responses the reverb condition uses; None: simulated rooms


@dataclass(frozen=True)
class PredictSettings(InferenceSettings):
    """predict.py's own group: conf/predict.yaml documents each key."""

    config_group = "predict"

    label_scale: str | None  # a corpus the model trained on, or unit: the scale predictions are given on
    segment: Literal["file", "vad"]  # what a prediction is of: each whole file, or each speech segment of it
    min_segment_seconds: PositiveFloat
    max_segment_seconds: PositiveFloat
    merge_gap_seconds: NonNegativeFloat
    vad_threshold: Annotated[float, Rule(lambda v: 0 < v < 1, "a speech probability in (0, 1), e.g. 0.5")]
    window_seconds: PositiveFloat | None
    window_hop_seconds: PositiveFloat | None
    embeddings: bool
    plot: bool
    resume: bool
    save_every: PositiveInt


@dataclass(frozen=True)
class ExportSettings(Settings):
    """export.py's own group: conf/export.yaml documents each key."""

    config_group = "export"

    overwrite: bool  # replace a folder that is not empty
    tolerance: PositiveFloat  # the largest torch-vs-onnxruntime difference accepted, on the rating scale


@dataclass(frozen=True)
class ReportSettings(Settings):
    """The comparison table's: conf/report/default.yaml documents each key."""

    config_group = "report"

    select: Selectable  # the validation score that selects everywhere
    reference: str | None  # overrides naming the row others are compared with; None: the marked row
    bootstrap: NonNegativeInt  # resamples of the paired speaker bootstrap; 0: no interval
    seed: int  # of the bootstrap's resampling


def _range_rule(lowest: float, highest: float, wanted: str) -> Rule:
    """A [low, high] pair inside [lowest, highest]: what a copy draws a value from, uniformly."""
    return Rule(lambda v: len(v) == 2 and lowest <= v[0] <= v[1] <= highest, wanted)


DecibelRange = Annotated[list[float], _range_rule(-120, 120, "[low, high] in dB with low ≤ high, e.g. [5, 20]")]
SecondsRange = Annotated[list[float], _range_rule(0.05, 2.0, "[low, high] in seconds in [0.05, 2], e.g. [0.2, 0.8]")]
HertzRange = Annotated[list[float], _range_rule(1, 48_000, "[low, high] in Hz with 0 < low ≤ high, e.g. [100, 400]")]
BitrateRange = Annotated[list[int], _range_rule(8, 320, "[low, high] in kbit/s within [8, 320], e.g. [16, 64]")]


@dataclass(frozen=True)
class AugmentSettings(Settings):
    """Augmented copies of the training audio: conf/augment_defaults.yaml documents each key."""

    config_group = "augment"

    name: str
    copies: NonNegativeInt  # per training utterance; 0: no augmentation
    seed: int  # copy k of an utterance depends on it, the utterance's id and k alone
    noise_p: FractionOrOne
    noise_dir: str | None  # None: generated coloured noise
    snr_db: DecibelRange
    noise_slope_db: DecibelRange  # generated noise's spectral slope per octave
    reverb_p: FractionOrOne
    rir_dir: str | None  # None: simulated rooms
    rooms: PositiveInt
    rt60_s: SecondsRange
    gain_p: FractionOrOne
    gain_db: DecibelRange
    band_p: FractionOrOne
    band_low_hz: HertzRange
    band_high_hz: HertzRange
    codec_p: FractionOrOne
    codec_kbps: BitrateRange
    telephone_p: FractionOrOne


@dataclass(frozen=True)
class JobSettings:
    """Everything one training job reads, by group."""

    data: DataSettings
    model: ModelSettings | BaselineSettings
    encoder: EncoderSettings
    optim: OptimSettings
    trainer: TrainerSettings
    logger: LoggerSettings
    report: ReportSettings  # its select keeps a job's best epoch
    augment: AugmentSettings  # copies of the training audio (emotion.data.augment)
    cache_dir: str  # paths.cache_dir: generated corpora, acoustic features, encoder states

    @classmethod
    def of(cls, cfg) -> JobSettings:
        groups = {group: kind.of(cfg[group]) for group, kind in GROUPS.items()}
        return cls(**groups, model=model_settings(cfg.model), cache_dir=str(cfg.paths.cache_dir))


# What each group of a training job's config is checked against and built as.
GROUPS: dict[str, type[Settings]] = {
    "data": DataSettings,
    "encoder": EncoderSettings,
    "optim": OptimSettings,
    "trainer": TrainerSettings,
    "logger": LoggerSettings,
    "report": ReportSettings,
    "augment": AugmentSettings,
}


def model_settings(node) -> ModelSettings | BaselineSettings:
    return model_class(node.get("kind")).of(node)


def model_class(kind: str | None) -> type[ModelSettings | BaselineSettings]:
    """model.kind's settings: the baseline reads none of the neural model's keys."""
    return BaselineSettings if kind == "baseline" else ModelSettings


def fits(value, kind) -> bool:
    """Whether `value` (plain data, as YAML gives it) is of the type `kind`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        return fits(value, args[0]) and all(rule.holds(value) for rule in kind.__metadata__ if isinstance(rule, Rule))
    if origin in (Union, types.UnionType):
        return any(fits(value, option) for option in args)
    if origin is Literal:
        # 1 is not True: a switch takes true or false
        return any(value == option and isinstance(value, bool) == isinstance(option, bool) for option in args)
    if origin is list:
        return isinstance(value, list) and all(fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def describe(kind) -> str:
    """What a value of type `kind` is, in words: "auto or a positive whole number"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        rules = [rule for rule in kind.__metadata__ if isinstance(rule, Rule)]
        return rules[-1].wanted if rules else describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(describe(option) for option in args)
    if origin is Literal:
        if all(isinstance(option, str) for option in args) and len(args) == 1:
            return args[0]
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _required(cls: type[Settings], name: str) -> bool:
    field = next(f for f in fields(cls) if f.name == name)
    return field.default is MISSING and field.default_factory is MISSING


def _plain(node) -> dict:
    """A config node as plain values, interpolations resolved, a mandatory value not given (`???`) as None."""
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {key: None if value == "???" else value for key, value in values.items()}
