"""The two cases of issue 16, before and after `exit_safety` (figures in README "Exit safety").

1. A stop-and-reverse strategy that reverses with one `order_target_size(±964)` (NFLX,
   2014-2016) under a strict profile: hold 10 bars including decreases, re-entry after 10
   bars, 2 round trips per 60 days.
2. A short of 90% of the portfolio in NVDA (2016-2018) covered when the close is 8% above its
   price, with `close()` or with half-covers, under a 120-bar `min_hold` that protects closes
   and decreases.

Each runs without protection, under the strict profile, and under the strict profile with an
`exit_safety` block. The strategies are those of the test zoo (tests/zoo/strategies.py). Run
from the project root:

    python examples/exit_safety/cases.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import backtrader as bt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from zoo import strategies as zoo  # noqa: E402

from bt_protection.data import load_universe  # noqa: E402
from bt_protection.integration.feeds import add_feeds  # noqa: E402

STRICT = {
    "holding_period": {"min_hold": "10 bars", "protect": ["close", "decrease", "reverse"]},
    "whipsaw_protection": {"max_cycles": 2, "window": "60 days", "min_reentry": "10 bars"},
}
HOLD_120 = {
    "holding_period": {"min_hold": "120 bars", "protect": ["close", "decrease", "reverse"]},
}
CASES: list[
    tuple[str, type, list[str], str, str, dict[str, Any], dict[str, Any], dict[str, Any]]
] = [
    (
        "stop-and-reverse, order_target_size(±964)",
        zoo.TargetReversals,
        ["NFLX"],
        "2014-01-01",
        "2016-12-31",
        {"size": 964},
        STRICT,
        {"max_position_loss": 0.10},
    ),
    (
        "losing short, close()",
        zoo.LosingShort,
        ["NVDA"],
        "2016-01-01",
        "2018-12-31",
        {},
        HOLD_120,
        {"max_position_loss": 0.15},
    ),
    (
        "losing short, half-covers",
        zoo.LosingShort,
        ["NVDA"],
        "2016-01-01",
        "2018-12-31",
        {"half": True},
        HOLD_120,
        {"max_position_loss": 0.15},
    ),
]


class Values(bt.Analyzer):
    """The broker's value each bar and the orders' final statuses."""

    def create_analysis(self) -> None:
        self.values: list[float] = []
        self.statuses: dict[int, str] = {}

    def notify_cashvalue(self, cash: float, value: float) -> None:
        self.values.append(value)

    def notify_order(self, order: Any) -> None:
        self.statuses[order.ref] = order.getstatusname()

    def get_analysis(self) -> dict[str, Any]:
        return {"values": self.values, "statuses": self.statuses}


def run(
    strategy: type, tickers: list[str], start: str, end: str, params: dict[str, Any], profile: Any
) -> dict[str, Any]:
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, load_universe("sample", tickers, start, end))
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(strategy, protection=profile, **params)
    cerebro.addanalyzer(Values, _name="values")
    result = cerebro.run()[0]
    values = result.analyzers.values
    metrics = result.protection.get_performance_metrics()
    decisions = metrics["decisions_processed"]
    return {
        "final": values.values[-1],
        "lowest": min(values.values),
        "denied": metrics["denied"],
        "risk exits": metrics["risk_exits"],
        "closes for reversals": metrics["partial"],
        "margin refusals": sum(s == "Margin" for s in values.statuses.values()),
        "decisions": decisions,
        "open at the end": result.getposition(result.datas[0]).size,
    }


def _money(value: float) -> str:
    return f"-${-value:,.0f}" if value < 0 else f"${value:,.0f}"


def main() -> None:
    columns = (
        "final",
        "lowest",
        "denied",
        "risk exits",
        "closes for reversals",
        "margin refusals",
        "open at the end",
    )
    print("| case | profile | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for name, strategy, tickers, start, end, params, strict, safety in CASES:
        blocks = {key: {"enabled": True, **block} for key, block in strict.items()}
        profiles = {
            "off": {"name": "off", "protections": {}},
            "strict": {"name": "strict", "protections": blocks},
            "strict + exit_safety": {"name": "safe", "protections": blocks, "exit_safety": safety},
        }
        for label, profile in profiles.items():
            row = run(strategy, tickers, start, end, params, profile)
            cells = [
                _money(row[c]) if c in ("final", "lowest") else f"{row[c]:g}" for c in columns
            ]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
