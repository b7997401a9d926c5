"""Priority 7: a trading budget over a trailing window.

Turnover is the value traded (units times fill price, both sides) within the trailing `window`
over the average portfolio value reported within it (`on_portfolio`, at least the latest one).
Beyond `max_turnover`, or with `max_trades` fills already in the window, orders are denied; with
`partial: true` an order is clipped to the value left in the budget, priced at the request's
`metadata["price"]` (the mixin gives the bar's close), else at the asset's last fill. Safety exits
are exempt like everywhere; their fills count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import ConfigError, Protection, ProtectionConfig, register


@dataclass(frozen=True)
class TurnoverBudgetConfig(ProtectionConfig):
    window: Duration = Duration.parse("20 bars")
    max_turnover: float | None = None
    max_trades: int | None = None
    partial: bool = False

    def validate(self) -> None:
        if self.enabled and self.max_turnover is None and self.max_trades is None:
            raise ConfigError(
                "max_turnover",
                "give max_turnover (traded value over average portfolio value, e.g. 1.0) "
                "and/or max_trades (fills within the window, e.g. 10).",
            )
        if self.max_turnover is not None and self.max_turnover <= 0:
            raise ConfigError(
                "max_turnover", f"max_turnover must be above 0, not {self.max_turnover:g}."
            )


@register
class TurnoverBudget(Protection):
    key = "turnover_budget"
    status_key = "turnover_budget"
    priority = 7
    config_class = TurnoverBudgetConfig
    config: TurnoverBudgetConfig

    per_asset = frozenset({"_prices"})

    def setup(self) -> None:
        self.guards = frozenset(Action)
        self._fills: deque[tuple[ClockPoint, float]] = deque()  # (when, 1) per fill
        self._traded: deque[tuple[ClockPoint, float]] = deque()  # (when, value traded)
        self._values: deque[tuple[ClockPoint, float]] = deque()  # (when, portfolio value)
        self._prices: dict[str, float] = {}

    def _inside(self, events: deque[tuple[ClockPoint, float]], now: ClockPoint) -> list[float]:
        window = self.config.window
        return [amount for when, amount in events if not window.elapsed(when, now)]

    def _used(self, now: ClockPoint) -> tuple[int, float, float]:
        """Fills in the window, value traded in it, and the average portfolio value."""
        values = self._inside(self._values, now) or [v for _, v in list(self._values)[-1:]]
        average = sum(values) / len(values) if values else 0.0
        return len(self._inside(self._fills, now)), sum(self._inside(self._traded, now)), average

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        config, window = self.config, self.config.window
        trades, traded, average = self._used(now)
        if config.max_trades is not None and trades >= config.max_trades:
            return self.deny(
                f"{trades} fills within {window} (max {config.max_trades}); no more trades "
                "until the oldest leaves the window.",
                trades=trades,
            )
        if config.max_turnover is None or average <= 0:
            return self.allow(f"{trades} fills within {window}.", trades=trades)
        budget = config.max_turnover * average - traded
        used = traded / average
        price = (request.metadata or {}).get("price") or self._prices.get(request.asset, 0.0)
        wanted = abs(request.target_size - request.current_size) * price
        if wanted <= budget:
            return self.allow(
                f"turnover {used:.2f} of {config.max_turnover:g} within {window}; this order "
                f"adds {wanted / average:.2f}.",
                turnover=used,
            )
        room = max(0.0, budget) / price if price else 0.0
        direction = 1.0 if request.target_size > request.current_size else -1.0
        return self.limit(
            request,
            request.current_size + direction * room,
            f"turnover {used:.2f} of {config.max_turnover:g} within {window}; this order "
            f"would add {wanted / average:.2f}.",
            turnover=used,
        )

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        self._fills.append((now, 1.0))
        self._drop(self._fills, now)

    def on_trade(self, asset: str, now: ClockPoint, size: float, price: float) -> None:
        self._prices[asset] = price
        self._traded.append((now, size * price))
        self._drop(self._traded, now)

    def on_portfolio(self, now: ClockPoint, value: float) -> None:
        self._values.append((now, value))
        self._drop(self._values, now)

    def _drop(self, events: deque[tuple[ClockPoint, float]], now: ClockPoint) -> None:
        while len(events) > 1 and self.widest("window").elapsed(events[0][0], now):
            events.popleft()

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        trades, traded, average = self._used(now)
        return {
            "enabled": True,
            "trades_in_window": trades,
            "turnover_in_window": traded / average if average else 0.0,
        }
