"""Real price frames of the sample data, modified the way real feeds are (issue 17): ragged
calendars, NaN closes, a weekly frame, a timezone-aware index. No synthetic prices."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from conftest import SAMPLE_DATA

from bt_protection.data import load_universe

TICKERS = ("AAPL", "AMZN", "NVDA")


@cache
def sample() -> dict[str, pd.DataFrame]:
    """AAPL, AMZN and NVDA of the sample data, 2018 and 2019."""
    return load_universe(SAMPLE_DATA, list(TICKERS), "2018-01-01", "2019-12-31")


def ragged() -> dict[str, pd.DataFrame]:
    """NVDA starts half a year later, AMZN misses 60 sessions in 2018, AAPL ends in
    October 2019 while the others trade on."""
    frames = sample()
    amzn = frames["AMZN"]
    return {
        "AAPL": frames["AAPL"].loc[:"2019-10-15"],
        "AMZN": amzn.drop(amzn.loc["2018-09-01":].index[:60]),
        "NVDA": frames["NVDA"].loc["2018-07-02":],
    }


def with_nan_closes() -> dict[str, pd.DataFrame]:
    """AMZN's close is NaN on one session in every 25 from March 2018 (a multi-ticker
    download's gaps), open, high and low kept."""
    frames = dict(sample())
    amzn = frames["AMZN"].copy()
    days = amzn.loc["2018-03-01":].index[::25]
    amzn.loc[days, "close"] = np.nan
    frames["AMZN"] = amzn
    return frames


def daily_and_weekly() -> dict[str, pd.DataFrame]:
    """AAPL daily and NVDA as weekly bars (Friday's close, the week's high and low), the
    frame a user downloads at another interval."""
    nvda = sample()["NVDA"]
    weekly = nvda.resample("W-FRI").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    return {"AAPL": sample()["AAPL"], "NVDA": weekly.dropna()}


def in_new_york() -> dict[str, pd.DataFrame]:
    """The sample frames with their dates as midnight in America/New_York."""
    frames = {}
    for name, frame in sample().items():
        local = frame.copy()
        local.index = local.index.tz_localize("America/New_York")
        frames[name] = local
    return frames


def cut(frames: dict[str, pd.DataFrame], last: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every frame up to and including `last` (frames that start later may be empty)."""
    return {name: frame.loc[frame.index <= last] for name, frame in frames.items()}
