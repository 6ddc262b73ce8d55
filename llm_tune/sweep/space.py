"""The search space of a sweep: `--vary key=[a,b,c]` (values to try) or `--vary key=loguniform(lo,hi)` (a range,
sampled by Optuna), and the grid of every combination of the value lists."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import yaml

from llm_tune.errors import UserError

RANGES = ("uniform", "loguniform", "int")
_RANGE = re.compile(r"^(?P<kind>[a-z]+)\((?P<low>[^,]+),(?P<high>[^,]+)\)$")


@dataclass(frozen=True)
class Dimension:
    """One varied key: a list of values, or a range (kind, low, high)."""

    key: str
    values: tuple[Any, ...] = ()
    kind: str | None = None
    low: float = 0.0
    high: float = 0.0

    @property
    def is_range(self) -> bool:
        return self.kind is not None

    def endpoints(self) -> tuple[Any, ...]:
        """The values that validate the dimension before any trial runs."""
        if not self.is_range:
            return self.values
        return (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)

    def suggest(self, trial: Any) -> Any:
        """Optuna's pick for this dimension in `trial`."""
        if not self.is_range:
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")


def parse_vary(spec: str) -> Dimension:
    key, sep, text = spec.partition("=")
    where = f"--vary {spec!r}"
    if not sep or not key or not text:
        raise UserError(f"{where}: expected key.path=[a,b] or key.path=loguniform(low,high)")
    match = _RANGE.match(text.replace(" ", ""))
    if match:
        return _range(key, match, where)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        values = None
    if not isinstance(values, list) or not values:
        raise UserError(
            f"{where}: {text!r} is neither a list of values ([a,b,c]) nor a range ({', '.join(f'{r}(low,high)' for r in RANGES)})"
        )
    values = [_number(v) for v in values]
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"{where}: a value is listed twice")
    return Dimension(key, tuple(values))


def _number(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as text; a sweep's values are shown and ranked as what they mean."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _range(key: str, match: re.Match[str], where: str) -> Dimension:
    kind = match["kind"]
    if kind not in RANGES:
        raise UserError(f"{where}: unknown range {kind!r}; use one of {', '.join(RANGES)}")
    try:
        low, high = float(match["low"]), float(match["high"])
    except ValueError:
        raise UserError(f"{where}: the bounds must be numbers") from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise UserError(f"{where}: need low < high{' and low > 0' if kind == 'loguniform' else ''}")
    return Dimension(key, kind=kind, low=low, high=high)


def parse_space(varies: list[str]) -> list[Dimension]:
    if not varies:
        raise UserError("sweep: give at least one --vary key.path=[a,b]")
    space = [parse_vary(v) for v in varies]
    keys = [d.key for d in space]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"sweep: --vary {twice[0]} is given twice")
    return space


def grid(space: list[Dimension]) -> list[dict[str, Any]]:
    """Every combination of the listed values, the first --vary changing slowest."""
    ranged = [d.key for d in space if d.is_range]
    if ranged:
        raise UserError(f"--vary {ranged[0]}: a range is sampled, not gridded; add --search random --trials N")
    return [dict(zip((d.key for d in space), combo)) for combo in itertools.product(*(d.values for d in space))]


def as_overrides(values: dict[str, Any]) -> list[str]:
    """key=value overrides (values written as YAML, so lists and nulls survive)."""
    return [
        f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in values.items()
    ]
