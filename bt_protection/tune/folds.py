"""Walk-forward folds: consecutive train and test windows over the trading days of the data.

Window lengths are calendar spans (`3y`, `6m`, `8w`, `90d`). The first train window starts
after the first `warmup` trading days, so every window has `warmup` days before it on which
indicators warm up. Fold k (from 0) trains on [t0 + k*step, t0 + k*step + train) (rolling) or
[t0, t0 + train + k*step) (anchored) and tests on the `test` span right after; a fold exists
only if its test window ends within the data (weekend days after the last day count as
within). Windows hold trading days, half-open in time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bt_protection.errors import UserError

_SPAN = re.compile(r"^\s*(\d+)\s*([ymwd])\s*$", re.IGNORECASE)
_UNITS = {"y": "years", "m": "months", "w": "weeks", "d": "days"}


@dataclass(frozen=True)
class Window:
    """Trading days [first, last] of a window and the first day of its warm-up."""

    warmup: str
    first: str
    last: str
    days: int


@dataclass(frozen=True)
class Fold:
    index: int
    train: Window
    test: Window


def parse_span(text: str, option: str) -> pd.DateOffset:
    """`3y`, `6m`, `8w` or `90d` as a calendar offset; `UserError` otherwise."""
    match = _SPAN.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise UserError(
            f"{option} {text!r} is not a window length; write a whole number and a unit such "
            "as 3y (years), 6m (months), 8w (weeks) or 90d (days)."
        )
    unit = _UNITS[match.group(2).lower()]
    return pd.DateOffset(**{unit: int(match.group(1))})  # type: ignore[arg-type]  # stubs type each keyword apart


def make_folds(
    dates: pd.DatetimeIndex,
    train: str,
    test: str,
    step: str | None = None,
    *,
    anchored: bool = False,
    warmup: int = 252,
) -> list[Fold]:
    """The folds over `dates` (the data's trading days); at least 2, else `UserError`."""
    train_span, test_span = parse_span(train, "`train`"), parse_span(test, "`test`")
    step_span = parse_span(step, "`step`") if step is not None else test_span
    if warmup < 0:
        raise UserError(f"`warmup` must be 0 or more trading days, not {warmup}.")
    if dates[0] + step_span < dates[0] + test_span:
        raise UserError(
            f"`step` {step} is shorter than `test` {test}, so test windows would overlap; "
            "use a step at least as long as the test window."
        )
    if warmup >= len(dates):
        raise UserError(
            f"`warmup` {warmup} trading days leaves no data: the data has {len(dates)} days "
            f"({_day(dates[0])} to {_day(dates[-1])})."
        )
    t0 = dates[warmup]
    folds: list[Fold] = []
    while True:
        k = len(folds)
        start = t0 if anchored else t0 + step_span * k
        train_end = t0 + train_span + step_span * k if anchored else start + train_span
        test_end = train_end + test_span
        if _weekdays_between(dates[-1], test_end):
            break  # the test window would end after the data
        train_window = _window(dates, start, train_end, warmup)
        test_window = _window(dates, train_end, test_end, warmup)
        if train_window is None or test_window is None:
            break
        folds.append(Fold(k, train_window, test_window))
    if len(folds) < 2:
        raise UserError(
            f"`train` {train} and `test` {test} leave {len(folds)} fold"
            f"{'' if len(folds) == 1 else 's'} in the data ({_day(dates[0])} to "
            f"{_day(dates[-1])}, the first {warmup} trading days kept for warm-up); walk-forward "
            "needs at least 2: use shorter windows, a shorter `warmup` or more data."
        )
    return folds


def _window(
    dates: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp, warmup: int
) -> Window | None:
    """The trading days in [start, end), with `warmup` days before it; None if empty."""
    first = int(dates.searchsorted(start))
    stop = int(dates.searchsorted(end))
    if stop <= first:
        return None
    return Window(
        _day(dates[max(0, first - warmup)]), _day(dates[first]), _day(dates[stop - 1]), stop - first
    )


def _weekdays_between(last: pd.Timestamp, end: pd.Timestamp) -> int:
    """Weekdays after `last` and before `end` (data ending on a Friday covers a window that
    ends on the Monday after it)."""
    after = (last + pd.Timedelta(days=1)).date()
    return int(np.busday_count(after, end.date())) if end.date() > after else 0


def _day(moment: pd.Timestamp) -> str:
    return moment.date().isoformat()
