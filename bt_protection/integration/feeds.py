"""Feeds and assets: the asset a feed trades is its name; loaded price frames become named
backtrader feeds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import backtrader as bt
import pandas as pd


def add_feeds(cerebro: bt.Cerebro, frames: Mapping[str, pd.DataFrame]) -> list[bt.feeds.PandasData]:
    """Add one `PandasData` feed per ticker, in sorted ticker order, named after the ticker.

    Frames are as `bt_protection.data.load_universe` returns them: a DatetimeIndex and lowercase
    open/high/low/close/volume columns. Returns the feeds in the order they were added.
    """
    feeds = []
    for ticker in sorted(frames):
        feed = bt.feeds.PandasData(dataname=frames[ticker], name=ticker)
        cerebro.adddata(feed, name=ticker)
        feeds.append(feed)
    return feeds


def asset_name(data: Any) -> str:
    """The asset a feed trades: its name (a single unnamed feed is `data0`)."""
    return data._name or "data0"
