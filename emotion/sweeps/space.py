"""A search space from config: each key of `search.space` and the values a trial may give it.

Written in Hydra's own sweep grammar, so that a search dimension reads like the grid it replaces:

    search:
      space:
        optim.lr: tag(log, interval(1e-5, 1e-3))   # log-uniform
        model.dropout: interval(0.0, 0.3)          # uniform
        model.mamba_n_layers: int(interval(1, 4))  # integers 1..4
        model.d_hidden: choice(256, 384)
        model.speech_encoder_layers: choice([6,12,18,24],[3,6,9,12,15,18,21,24])

Keys may also nest (`optim: {lr: ...}`). A trial's values become its jobs' overrides (`optim.lr=0.0003142`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException

EXAMPLES = "choice(256, 384), interval(0.0, 0.3), tag(log, interval(1e-5, 1e-3)), int(interval(1, 4)), range(1, 5)"


FLOAT_DIGITS = 4


class SpaceError(ValueError):
    pass


@dataclass(frozen=True)
class Dimension:
    """One key of the space. Choices that are not plain numbers or strings (layer lists) are kept as the
    text of their override, which is what Optuna stores and what the job is given."""

    key: str
    kind: str  # "choice" | "float" | "int"
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step)
        return FloatDistribution(self.low, self.high, log=self.log)

    def override(self, value: Any) -> str:
        """The job override for a trial's `value`. A float drawn from an interval keeps 4 significant
        digits: what the job trains with and what names its folder (`optim.lr=0.0003142`)."""
        text = f"{value:.{FLOAT_DIGITS}g}" if self.kind == "float" else _override_text(value)
        return f"{self.key}={text}"

    @property
    def first(self) -> Any:
        """A value of the space, to check that the key exists before any trial runs."""
        return self.choices[0] if self.kind == "choice" else self.low


def parse_space(space: dict) -> list[Dimension]:
    """`search.space` (nested or dotted keys) as dimensions, in the order written."""
    if not space:
        raise SpaceError(f"search.space is empty: give it at least one key to search, e.g. {{optim.lr: {EXAMPLES}}}")
    return [_dimension(key, text) for key, text in _flatten(space)]


def _flatten(node: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        items += _flatten(value, f"{dotted}.") if isinstance(value, dict) else [(dotted, value)]
    return items


def _dimension(key: str, text: Any) -> Dimension:
    where = f"search.space.{key}={text!r}"
    if not isinstance(text, str):
        raise SpaceError(f"{where}: not a range of values; write one of {EXAMPLES}")
    try:
        sweep = OverridesParser.create().parse_overrides([f"{key}={text}"])[0].value()
    except HydraException as err:
        raise SpaceError(f"{where}: {err}; write one of {EXAMPLES}") from None
    tags = set(getattr(sweep, "tags", ()))
    if tags - {"log"}:
        raise SpaceError(f"{where}: the only tag a dimension takes is log, as in tag(log, interval(1e-5, 1e-3))")
    if isinstance(sweep, ChoiceSweep):
        plain = (int, float, str, bool)
        choices = tuple(value if isinstance(value, plain) else _override_text(value) for value in sweep.list)
        return Dimension(key, "choice", choices=choices)
    if isinstance(sweep, RangeSweep) and all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        values = range(sweep.start, sweep.stop, sweep.step)
        if not values:
            raise SpaceError(f"{where}: the range holds no value")
        return Dimension(key, "int", low=values[0], high=values[-1], step=sweep.step, log="log" in tags)
    if isinstance(sweep, IntervalSweep):
        is_int = isinstance(sweep.start, int) and isinstance(sweep.end, int)
        low, high = sweep.start, sweep.end
        if not low < high or ("log" in tags and low <= 0):
            raise SpaceError(f"{where}: needs low < high{' and low > 0 on a log scale' if 'log' in tags else ''}")
        return Dimension(key, "int" if is_int else "float", low=low, high=high, log="log" in tags)
    raise SpaceError(f"{where}: not a range of values; write one of {EXAMPLES}")


def _override_text(value: Any) -> str:
    """A value as the command line writes it: `[6,12,18,24]`, `0.00031`, `true`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value)
