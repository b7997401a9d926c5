"""Performance figures of a run from its equity curve and orders (pure pandas, no backtrader).

Daily bars, 252 of them to a year; returns are simple bar-to-bar returns of the portfolio
value, the risk-free rate is 0. The formulas are written out in docs/runs.md.
"""

from __future__ import annotations

import math

import pandas as pd

TRADING_DAYS = 252


def performance(
    equity: pd.DataFrame, orders: pd.DataFrame, trades: pd.DataFrame
) -> dict[str, float | int | None]:
    """total_return, cagr, volatility, sharpe, max_drawdown, turnover, trades, commissions.

    `equity` has a `value` column (one row per bar), `orders` the `filled`, `price` and
    `commission` columns of orders.csv, `trades` one row per closed trade. A figure that is
    undefined (Sharpe of a flat curve, anything of a curve shorter than two bars) is None.
    """
    value = equity["value"].astype(float)
    returns = value.pct_change().dropna()
    years = len(returns) / TRADING_DAYS
    growth = value.iloc[-1] / value.iloc[0] if len(value) else math.nan
    volatility = returns.std(ddof=1) * math.sqrt(TRADING_DAYS) if len(returns) > 1 else math.nan
    sharpe = (
        returns.mean() / returns.std(ddof=1) * math.sqrt(TRADING_DAYS)
        if len(returns) > 1 and returns.std(ddof=1) > 0
        else math.nan
    )
    traded = (orders["filled"].abs() * orders["price"]).sum() if len(orders) else 0.0
    mean_value = value.mean() if len(value) else math.nan
    return {
        "total_return": _finite(growth - 1),
        "cagr": _finite(growth ** (1 / years) - 1) if years > 0 and growth > 0 else None,
        "volatility": _finite(volatility),
        "sharpe": _finite(sharpe),
        "max_drawdown": _finite(max_drawdown(value)),
        "turnover": _finite(traded / 2 / mean_value / years) if years > 0 else None,
        "trades": int(len(trades)),
        "commissions": float(orders["commission"].sum()) if len(orders) else 0.0,
    }


def max_drawdown(value: pd.Series) -> float:
    """The deepest fall from a running peak, as a negative fraction (-0.25: 25% below the peak)."""
    if value.empty:
        return math.nan
    return float((value / value.cummax() - 1).min())


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
