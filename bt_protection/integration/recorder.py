"""Analyzers that record a run for its folder: every order attempted, the equity curve, trades.

`OrderRecorder` keeps one row per order the strategy attempted through `ProtectionMixin`
(denied ones included), keyed by `order.info.protection_attempt` and updated by every
notification, so a row holds the order's final state. `EquityRecorder` appends the broker's
value and cash once a bar; `TradeRecorder` keeps the closed trades. Columns: docs/runs.md.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pandas as pd

from bt_protection.integration.feeds import asset_name

ORDER_COLUMNS = (
    "attempt",
    "ref",
    "created",
    "executed",
    "asset",
    "requested",
    "approved",
    "size",
    "filled",
    "price",
    "commission",
    "status",
    "protection",
    "reason",
    "blocking_systems",
    "overridden_systems",
)
EQUITY_COLUMNS = ("value", "cash")
TRADE_COLUMNS = ("asset", "opened", "closed", "size", "pnl", "pnlcomm", "commission", "bars")


def _day(num: float) -> str:
    return str(bt.num2date(num).date().isoformat())


def protection_label(decision: Any) -> str:
    """`exempt`, `risk_exit`, `approved`, `partial` or `denied`: how the protection let an
    order through (a risk exit approved in part, as a reversal's close alone, is `risk_exit`)."""
    if decision.exempt:
        return "exempt"
    if decision.risk_exit:
        return "risk_exit"
    if decision.partial:
        return "partial"
    return "approved" if decision.approved else "denied"


def order_row(order: Any) -> dict[str, Any]:
    """One orders.csv row from an order (or a notified clone of it)."""
    decision = order.info.protection
    executed = order.executed
    return {
        "attempt": order.info.protection_attempt,
        "ref": order.ref,
        "created": _day(order.created.dt),
        "executed": _day(executed.dt) if executed.size else "",
        "asset": asset_name(order.data),
        "requested": decision.target_size - decision.current_size,
        "approved": decision.approved_size if decision.approved else 0.0,
        "size": order.created.size,
        "filled": executed.size,
        "price": executed.price if executed.size else float("nan"),
        "commission": executed.comm,
        "status": order.getstatusname(),
        "protection": protection_label(decision),
        "reason": decision.reason,
        "blocking_systems": ";".join(decision.blocking_systems),
        "overridden_systems": ";".join(decision.overridden_systems),
    }


class OrderRecorder(bt.Analyzer):
    """One row per order attempted through the mixin, in attempt order (see `ORDER_COLUMNS`)."""

    def create_analysis(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}

    def notify_order(self, order: Any) -> None:
        if "protection_attempt" in order.info:
            self.rows[order.info.protection_attempt] = order_row(order)

    def stop(self) -> None:
        # Orders made on the last bar were never delivered: their notifications still wait
        # in the broker's queue (BackBroker.notifs), which is read here without consuming it.
        for order in getattr(self.strategy.broker, "notifs", ()):
            if order.owner is self.strategy:
                self.notify_order(order)

    def get_analysis(self) -> list[dict[str, Any]]:
        return [self.rows[attempt] for attempt in sorted(self.rows)]

    def to_frame(self) -> pd.DataFrame:
        return orders_frame(self.get_analysis())


def orders_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """orders.csv rows as a DataFrame; `ref` counts from 1 at the run's first order
    (backtrader's own refs count per process, so they would differ between two identical
    runs)."""
    frame = pd.DataFrame(rows, columns=list(ORDER_COLUMNS))
    if len(frame):
        frame["ref"] -= frame["ref"].min() - 1
    return frame


class EquityRecorder(bt.Analyzer):
    """The broker's value and cash at each bar's close (one append per bar)."""

    def create_analysis(self) -> None:
        self.dates: list[float] = []
        self.values: list[float] = []
        self.cash: list[float] = []

    def notify_cashvalue(self, cash: float, value: float) -> None:
        self.dates.append(self.strategy.datetime[0])
        self.values.append(value)
        self.cash.append(cash)

    def get_analysis(self) -> dict[str, list[float]]:
        return {"dates": self.dates, "value": self.values, "cash": self.cash}

    def to_frame(self) -> pd.DataFrame:
        index = pd.DatetimeIndex([bt.num2date(d).date() for d in self.dates], name="date")
        return pd.DataFrame({"value": self.values, "cash": self.cash}, index=index)


class TradeRecorder(bt.Analyzer):
    """Closed trades: asset, open and close dates, opening size, pnl, pnlcomm, commission, bars."""

    def create_analysis(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._opening: dict[int, float] = {}

    def notify_trade(self, trade: Any) -> None:
        if trade.justopened:
            self._opening[trade.ref] = trade.size
        if trade.isclosed:
            self.rows.append(
                {
                    "asset": asset_name(trade.data),
                    "opened": _day(trade.dtopen),
                    "closed": _day(trade.dtclose),
                    "size": self._opening.pop(trade.ref, float("nan")),
                    "pnl": trade.pnl,
                    "pnlcomm": trade.pnlcomm,
                    "commission": trade.commission,
                    "bars": trade.barlen,
                }
            )

    def get_analysis(self) -> list[dict[str, Any]]:
        return self.rows

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(TRADE_COLUMNS))
