"""`regime.factors`: what the regime weighs, and the cross-feed factors computed bar by bar.

`trend`, `volatility` and `drawdown` are the rules of the watched market (`classify`); the
others read every feed of the run: `breadth`, `correlation` and `credit`. Each extra factor that
is stressed at a bar moves that bar's raw label one step toward crisis (docs/regime.md). Every
factor uses only the current and past closes. Nothing here imports backtrader.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bt_protection.protections.base import ConfigError


class FactorName(StrEnum):
    TREND = "trend"
    VOLATILITY = "volatility"
    DRAWDOWN = "drawdown"
    BREADTH = "breadth"
    CORRELATION = "correlation"
    CREDIT = "credit"


BASE_FACTORS = (FactorName.TREND, FactorName.VOLATILITY, FactorName.DRAWDOWN)

# the parameters each factor takes, with their defaults (`risky`/`safe` have none)
_PARAMS: Mapping[FactorName, Mapping[str, Any]] = {
    FactorName.TREND: {},
    FactorName.VOLATILITY: {},
    FactorName.DRAWDOWN: {},
    FactorName.BREADTH: {"period": 200, "below": 0.5},
    FactorName.CORRELATION: {"window": 60, "margin": 0.1},
    FactorName.CREDIT: {"risky": None, "safe": None, "period": 50},
}


@dataclass(frozen=True)
class Factor:
    """One item of `regime.factors`: a name and its parameters (unused ones stay None)."""

    name: FactorName
    period: int | None = None
    below: float | None = None
    window: int | None = None
    margin: float | None = None
    risky: str | None = None
    safe: str | None = None

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any]) -> Factor:
        """The factor `name` with `params` over its defaults; `ConfigError` naming the key."""
        if name not in _PARAMS:
            valid = ", ".join(_PARAMS)
            raise ConfigError("", f"unknown regime factor {name!r}; valid factors: {valid}.")
        factor = FactorName(name)
        defaults = _PARAMS[factor]
        for key in params:
            if key not in defaults:
                valid = ", ".join(defaults) or "none"
                raise ConfigError(
                    str(key), f"factor {name} has no parameter {key!r}; its parameters: {valid}."
                )
        values = {**defaults, **params}
        for key in ("period", "window"):
            if key in values:
                _whole(values[key], key, name)
        for key in ("below", "margin"):
            if key in values:
                _fraction(values[key], key, name)
        for key in ("risky", "safe"):
            if key in defaults and (not isinstance(values[key], str) or not values[key]):
                raise ConfigError(
                    key, f"factor credit needs {key}: the name of a feed of the run, e.g. JNK."
                )
        if factor is FactorName.CREDIT and values["risky"] == values["safe"]:
            raise ConfigError("safe", f"factor credit needs two feeds, not {values['safe']} twice.")
        return cls(factor, **values)

    def to_plain(self) -> str | dict[str, dict[str, Any]]:
        """The form a profile writes: the name, or the name mapped to its parameters."""
        params = {key: getattr(self, key) for key in _PARAMS[self.name]}
        return {self.name.value: params} if params else self.name.value


def _whole(value: Any, key: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 3:
        raise ConfigError(key, f"{name} {key} must be a whole number of at least 3, not {value!r}.")


def _fraction(value: Any, key: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(key, f"{name} {key} must be a number between 0 and 1, not {value!r}.")


DEFAULT_FACTORS = tuple(Factor(name) for name in BASE_FACTORS)


def check_factors(factors: Sequence[Factor]) -> None:
    """Refuse an empty list and a factor named twice (`ConfigError` on key `factors`)."""
    if not factors:
        raise ConfigError("factors", "factors is empty; name at least one, e.g. [trend].")
    names = [f.name.value for f in factors]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            "factors", f"factors lists {', '.join(twice)} more than once; list each once."
        )


def _valid(close: float) -> bool:
    return close > 0.0 and not math.isinf(close)


class _Mean:
    """A moving average of the last `period` values added."""

    __slots__ = ("_sum", "_values", "period")

    def __init__(self, period: int) -> None:
        self.period = period
        self._values: deque[float] = deque()
        self._sum = 0.0

    def add(self, value: float) -> float | None:
        """Add `value`; the mean of the last `period` values, None until there are that many."""
        self._values.append(value)
        self._sum += value
        if len(self._values) > self.period:
            self._sum -= self._values.popleft()
        return self._sum / self.period if len(self._values) == self.period else None


class Breadth:
    """The share of the feeds whose last close is above their `period`-bar moving average
    (among those with `period` closes); stressed below `below`."""

    def __init__(self, factor: Factor, n: int) -> None:
        assert factor.period is not None and factor.below is not None
        self._below = factor.below
        self._means = [_Mean(factor.period) for _ in range(n)]
        self._above: list[bool | None] = [None] * n

    def update(self, closes: Sequence[float]) -> float | None:
        for k, close in enumerate(closes):
            if _valid(close):
                mean = self._means[k].add(close)
                self._above[k] = None if mean is None else close > mean
        known = [a for a in self._above if a is not None]
        return sum(known) / len(known) if known else None

    def stressed(self, value: float) -> bool:
        return value < self._below


class Correlation:
    """The mean pairwise correlation of the feeds' log returns over the last `window` bars
    (each pair over the bars where both moved); stressed when it exceeds its expanding mean
    (every value so far, this one included) by more than `margin`."""

    def __init__(self, factor: Factor, n: int) -> None:
        assert factor.window is not None and factor.margin is not None
        self._window, self._margin = factor.window, factor.margin
        self._last = [math.nan] * n
        self._rows: deque[list[float]] = deque()
        self._pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self._sums = [[0.0] * 6 for _ in self._pairs]  # count, x, y, xx, yy, xy
        self._total = 0.0
        self._count = 0
        self.level: float | None = None

    def _add(self, row: list[float], sign: float) -> None:
        for (i, j), s in zip(self._pairs, self._sums, strict=True):
            x, y = row[i], row[j]
            if x == x and y == y:  # both moved (not NaN)
                s[0] += sign
                s[1] += sign * x
                s[2] += sign * y
                s[3] += sign * x * x
                s[4] += sign * y * y
                s[5] += sign * x * y

    def update(self, closes: Sequence[float]) -> float | None:
        row = [math.nan] * len(closes)
        for k, close in enumerate(closes):
            if _valid(close):
                if self._last[k] > 0.0:
                    row[k] = math.log(close / self._last[k])
                self._last[k] = close
        if all(r != r for r in row):  # nothing moved: the value stands
            return self._value()
        self._rows.append(row)
        self._add(row, 1.0)
        if len(self._rows) > self._window:
            self._add(self._rows.popleft(), -1.0)
        value = self._value()
        if value is not None:
            self._total += value
            self._count += 1
            self.level = self._total / self._count
        return value

    def _value(self) -> float | None:
        if len(self._rows) < self._window:
            return None
        found = []
        for n, x, y, xx, yy, xy in self._sums:
            if n >= 3:
                vx, vy = xx - x * x / n, yy - y * y / n
                if vx > 0.0 and vy > 0.0:
                    found.append((xy - x * y / n) / math.sqrt(vx * vy))
        return math.fsum(found) / len(found) if found else None

    def stressed(self, value: float) -> bool:
        return self.level is not None and value > self.level + self._margin


class Credit:
    """The ratio of the `risky` feed's close to the `safe` one's over its `period`-bar moving
    average, minus 1; stressed below 0 (risky assets lag safe ones)."""

    def __init__(self, factor: Factor, risky: int, safe: int) -> None:
        assert factor.period is not None
        self._risky, self._safe = risky, safe
        self._last = [math.nan, math.nan]
        self._mean = _Mean(factor.period)
        self._value: float | None = None

    def update(self, closes: Sequence[float]) -> float | None:
        pair = (closes[self._risky], closes[self._safe])
        if not any(_valid(c) for c in pair):
            return self._value
        for k, close in enumerate(pair):
            if _valid(close):
                self._last[k] = close
        risky, safe = self._last
        if risky > 0.0 and safe > 0.0:
            mean = self._mean.add(risky / safe)
            self._value = None if mean is None else risky / safe / mean - 1.0
        return self._value

    def stressed(self, value: float) -> bool:
        return value < 0.0


CrossFactor = Breadth | Correlation | Credit


class FactorState:
    """The cross-feed factors of a regime over the run's feeds (`names`, in order).

    `update(closes)` takes one close per feed per strategy bar (NaN: no new bar) and returns
    how many factors are stressed; `values` holds each factor's latest value (None while it
    warms up). A `credit` feed not in `names` raises `ValueError` naming it.
    """

    def __init__(self, factors: Sequence[Factor], names: Sequence[str]) -> None:
        n = len(names)
        self._factors: list[tuple[FactorName, CrossFactor]] = []
        for factor in factors:
            if factor.name is FactorName.BREADTH:
                self._factors.append((factor.name, Breadth(factor, n)))
            elif factor.name is FactorName.CORRELATION:
                if n < 2:
                    raise ValueError(
                        f"the regime factor correlation needs at least 2 feeds; the run has {n}."
                    )
                self._factors.append((factor.name, Correlation(factor, n)))
            elif factor.name is FactorName.CREDIT:
                for feed in (factor.risky, factor.safe):
                    if feed not in names:
                        raise ValueError(
                            f"the regime factor credit reads feed {feed}, which is not in the "
                            f"run (feeds: {', '.join(names)}); add it or change regime.factors."
                        )
                indexes = (
                    list(names).index(str(factor.risky)),
                    list(names).index(str(factor.safe)),
                )
                self._factors.append((factor.name, Credit(factor, *indexes)))
        self.values: dict[str, float | None] = {name.value: None for name, _ in self._factors}

    def __bool__(self) -> bool:
        return bool(self._factors)

    def update(self, closes: Sequence[float]) -> int:
        stressed = 0
        for name, factor in self._factors:
            value = factor.update(closes)
            self.values[name.value] = value
            if value is not None and factor.stressed(value):
                stressed += 1
        return stressed
