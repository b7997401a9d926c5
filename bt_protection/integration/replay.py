"""Recording and replaying the market state a protected strategy's orchestrator follows: the
regime code and the volatility ratio of each bar (the tune's timing permutation test,
bt_protection.tune.timing).

A `RegimeReplay` reaches the strategy as its `regime_replay` param (a job's
`RunSpec.regime_replay`): with no `states` the strategy's regime runs as always and each bar's
state is recorded with the bar's date; with `states` the orchestrator is given those instead,
one per bar in order (the last one after them), whatever the regime computes. A profile that
follows no regime has no market state: nothing is recorded or replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

State = tuple[int, float | None]  # a bar's regime code and volatility ratio
RecordedBar = tuple[str, int, float | None]  # the bar's ISO datetime, code and ratio


class Market(Protocol):
    """What the orchestrator is told each bar (`ClockRegime` and the two below)."""

    @property
    def vol_ratio(self) -> float | None: ...

    def update(self) -> int: ...


@dataclass(frozen=True)
class RegimeReplay:
    """`states` None: record each bar's state; else the states to give, one per bar."""

    states: tuple[State, ...] | None = None

    def market(self, real: Market, clock: Callable[[], datetime]) -> Market:
        """The market the orchestrator follows instead of `real`; `clock`: the bar's date."""
        return RecordingMarket(real, clock) if self.states is None else ReplayedMarket(self.states)


class RecordingMarket:
    """`real`, recording the date and state of each bar it gives in `recorded`."""

    def __init__(self, real: Market, clock: Callable[[], datetime]) -> None:
        self._real, self._clock = real, clock
        self.recorded: list[RecordedBar] = []

    @property
    def vol_ratio(self) -> float | None:
        return self._real.vol_ratio

    def update(self) -> int:
        code = self._real.update()
        self.recorded.append((self._clock().isoformat(), code, self._real.vol_ratio))
        return code


class ReplayedMarket:
    """The given states in order, one per bar (the last one after them)."""

    def __init__(self, states: Sequence[State]) -> None:
        self._states = states
        self._next = 0
        self.vol_ratio: float | None = None

    def update(self) -> int:
        code, self.vol_ratio = self._states[min(self._next, len(self._states) - 1)]
        self._next += 1
        return code
