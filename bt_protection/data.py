"""Daily price CSVs: read and check one file, align a folder of tickers, fetch with yfinance.

Pure pandas (no backtrader). Every problem a user can fix raises `DataError` with one sentence
naming the file and the row, date or column. The one repair made to a file (a missing Volume
column set to 0) and the rows dropped to align tickers are recorded in a `LoadReport` and
logged at INFO; see docs/data.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import reduce
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from bt_protection.errors import DataError, UserError
from bt_protection.shipped import price_folder

DateLike = str | date

PRICES = ("Open", "High", "Low", "Close")
REQUIRED = ("Date", *PRICES)
CSV_COLUMNS = ("Date", *PRICES, "Adj Close", "Volume")
HEADER = ",".join(CSV_COLUMNS)
MAX_GAP_DAYS = 10
MIN_ROWS = 60
DEFAULT_CACHE_DIR = Path("data/cache")
CACHE_GRACE_WEEKDAYS = 3
_TICKER = re.compile(r"^[A-Za-z0-9.^=\-]+$")

_log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What loading changed: one sentence per repair, and rows dropped per ticker to align."""

    repairs: list[str] = field(default_factory=list)
    dropped_rows: dict[str, int] = field(default_factory=dict)

    def add(self, message: str) -> None:
        self.repairs.append(message)
        _log.info(message)


# --------------------------------------------------------------------------- one file


def read_price_csv(
    path: str | Path,
    *,
    adj_close: bool = True,
    max_gap_days: int | None = MAX_GAP_DAYS,
    report: LoadReport | None = None,
) -> pd.DataFrame:
    """Read a Yahoo-style daily CSV into float columns open, high, low, close, volume.

    The index is a DatetimeIndex named Date, strictly ascending. With `adj_close` and an
    Adj Close column, open/high/low/close are multiplied by Adj Close / Close, so splits and
    dividends do not show as price jumps; volume is kept as in the file.
    """
    path = Path(path)
    raw = _read_raw(path)
    columns = _find_columns(raw, path)  # first: a one-line page that is no CSV has no header
    if raw.empty:
        raise _fail(path, "the header has no rows below it; expected one row per trading day")
    dates = _parse_dates(raw[columns["Date"]], path)
    _check_order(dates, path, max_gap_days)
    optional = ("Adj Close", "Volume") if adj_close else ("Volume",)
    use = [name for name in (*PRICES, *optional) if name in columns]
    values = {name: _numbers(raw[columns[name]], name, dates, path) for name in use}
    _check_values(values, raw, columns, dates, path)
    if "Volume" not in values:
        (report or LoadReport()).add(f"{path}: no Volume column; volume set to 0 on every row")
        values["Volume"] = np.zeros(len(dates))
    factor = values["Adj Close"] / values["Close"] if "Adj Close" in values else 1.0
    frame = {name.lower(): values[name] * factor for name in PRICES}
    frame["volume"] = values["Volume"]
    return pd.DataFrame(frame, index=pd.DatetimeIndex(dates, name="Date"))


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"{path}: {message}.")


def _read_raw(path: Path) -> pd.DataFrame:
    """The file's cells as text, so that errors can quote them."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise _fail(path, f"{what}; expected a CSV with the header {HEADER}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise _fail(path, f"the file is empty; expected the header {HEADER}") from None
    except UnicodeDecodeError:
        raise _fail(path, "not a CSV file (it is not UTF-8 text)") from None
    except pd.errors.ParserError as error:
        detail = str(error).strip().split("C error: ")[-1]
        raise _fail(path, f"not a readable CSV file ({detail})") from None
    return raw


def _find_columns(raw: pd.DataFrame, path: Path) -> dict[str, str]:
    """Map the canonical names to the file's headers (matched ignoring case and spaces)."""
    by_key = {str(name).strip().lower(): str(name) for name in raw.columns}
    columns = {name: by_key[name.lower()] for name in CSV_COLUMNS if name.lower() in by_key}
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise _fail(
            path,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED)} (optional: Adj Close, Volume)",
        )
    return columns


def _parse_dates(text: pd.Series, path: Path) -> pd.DatetimeIndex:
    dates = pd.to_datetime(text.str.strip(), format="ISO8601", errors="coerce")
    bad = np.flatnonzero(dates.isna())
    if bad.size:
        row = bad[0]
        raise _fail(path, f"line {row + 2} has date {text.iloc[row]!r}; expected YYYY-MM-DD")
    index = pd.DatetimeIndex(dates)
    return index.tz_localize(None) if index.tz is not None else index


def _check_order(dates: pd.DatetimeIndex, path: Path, max_gap_days: int | None) -> None:
    """Dates must be unique, ascending and, with `max_gap_days`, without long holes."""
    duplicated = np.flatnonzero(dates.duplicated())
    if duplicated.size:
        second = duplicated[0]
        first = np.flatnonzero(dates == dates[second])[0]
        raise _fail(
            path,
            f"date {_day(dates[second])} appears more than once (lines {first + 2} and "
            f"{second + 2}); each date must appear once",
        )
    steps = np.diff(dates.asi8)
    back = np.flatnonzero(steps < 0)
    if back.size:
        row = back[0] + 1
        raise _fail(
            path,
            f"dates are not ascending: {_day(dates[row])} on line {row + 2} follows "
            f"{_day(dates[row - 1])} on line {row + 1}; sort the rows by Date",
        )
    if max_gap_days is None:
        return
    days = (dates[1:] - dates[:-1]).days
    long = np.flatnonzero(days > max_gap_days)
    if long.size:
        row = long[0] + 1
        raise _fail(
            path,
            f"no row for {days[long[0]]} days between {_day(dates[row - 1])} (line {row + 1}) "
            f"and {_day(dates[row])} (line {row + 2}); daily data may skip at most "
            f"{max_gap_days} calendar days (pass max_gap_days=None to accept gaps)",
        )


def _numbers(text: pd.Series, name: str, dates: pd.DatetimeIndex, path: Path) -> np.ndarray:
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = bad[0]
        cell = text.iloc[row].strip()
        shown = repr(cell) if cell else "empty"
        raise _fail(path, f"column {name} is {shown} {_at(dates, row)}; expected a number")
    return values


def _check_values(
    values: dict[str, np.ndarray],
    raw: pd.DataFrame,
    columns: dict[str, str],
    dates: pd.DatetimeIndex,
    path: Path,
) -> None:
    """Prices must be positive, volume not negative, and High at least Low."""
    for name, array in values.items():
        bad = np.flatnonzero(array < 0 if name == "Volume" else array <= 0)
        if bad.size:
            row = bad[0]
            rule = "volume may not be negative" if name == "Volume" else "prices must be above 0"
            cell = raw[columns[name]].iloc[row].strip()
            raise _fail(path, f"column {name} is {cell} {_at(dates, row)}; {rule}")
    below = np.flatnonzero(values["High"] < values["Low"])
    if below.size:
        row = below[0]
        high, low = (raw[columns[c]].iloc[row].strip() for c in ("High", "Low"))
        raise _fail(path, f"High {high} is below Low {low} {_at(dates, row)}; High must be >= Low")


def _at(dates: pd.DatetimeIndex, row: int) -> str:
    return f"on {_day(dates[row])} (line {row + 2})"


def _day(moment: pd.Timestamp) -> str:
    return moment.strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- a folder


def load_universe(
    folder: str | Path,
    tickers: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    adj_close: bool = True,
    min_rows: int = MIN_ROWS,
    max_gap_days: int | None = MAX_GAP_DAYS,
    report: LoadReport | None = None,
) -> dict[str, pd.DataFrame]:
    """Load `<TICKER>.csv` files of `folder` (`"sample"`: the shipped sample, unless a folder of
    that name exists), clipped to start..end and aligned on shared dates.

    Alignment is an inner join: only dates present in every ticker are kept (rows dropped per
    ticker go to `report.dropped_rows`). Fewer than `min_rows` shared dates is a DataError.
    Returns frames as `read_price_csv` makes them, keyed and ordered by ticker name.
    """
    report = report if report is not None else LoadReport()
    folder = price_folder(folder)
    paths = _ticker_paths(folder, tickers)
    low, high = _bound(start, "start"), _bound(end, "end")
    if low is not None and high is not None and low > high:
        raise DataError(f"start {_day(low)} is after end {_day(high)}; start must come first.")
    frames = {
        ticker: _clip(
            read_price_csv(path, adj_close=adj_close, max_gap_days=max_gap_days, report=report),
            path,
            low,
            high,
        )
        for ticker, path in paths.items()
    }
    return _align(frames, folder, min_rows, report)


def _ticker_paths(folder: Path, tickers: Sequence[str] | None) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; expected one <TICKER>.csv file per ticker.")
    available = {path.stem: path for path in folder.glob("*.csv") if path.is_file()}
    if not available:
        raise DataError(f"{folder}: no .csv files; expected one <TICKER>.csv file per ticker.")
    wanted = sorted(set(available if tickers is None else _as_list(tickers)))
    for ticker in wanted:
        if ticker not in available:
            raise DataError(
                f"{folder / (ticker + '.csv')}: file not found for ticker {ticker}; "
                f"available: {', '.join(sorted(available))}."
            )
    return {ticker: available[ticker] for ticker in wanted}


def _as_list(tickers: Sequence[str] | str) -> list[str]:
    return [tickers] if isinstance(tickers, str) else list(tickers)


def _clip(
    frame: pd.DataFrame, path: Path, low: pd.Timestamp | None, high: pd.Timestamp | None
) -> pd.DataFrame:
    clipped = frame.loc[low:high]
    if clipped.empty:
        wanted = "..".join("" if bound is None else _day(bound) for bound in (low, high))
        raise _fail(
            path,
            f"no rows in {wanted} (the file covers "
            f"{_day(frame.index[0])}..{_day(frame.index[-1])})",
        )
    return clipped


def _align(
    frames: dict[str, pd.DataFrame], folder: Path, min_rows: int, report: LoadReport
) -> dict[str, pd.DataFrame]:
    common = reduce(pd.DatetimeIndex.intersection, (f.index for f in frames.values()))
    if len(common) < min_rows:
        raise DataError(f"{folder}: {_short_overlap(frames, len(common), min_rows)}.")
    window = f"{_day(common[0])}..{_day(common[-1])}"
    aligned = {}
    for ticker, frame in frames.items():
        dropped = len(frame) - len(common)
        report.dropped_rows[ticker] = dropped
        if dropped:
            report.add(
                f"{ticker}: dropped {dropped} of {len(frame)} rows to keep the {len(common)} "
                f"dates common to all tickers ({window})"
            )
        aligned[ticker] = frame.loc[common] if dropped else frame
    return aligned


def _short_overlap(frames: dict[str, pd.DataFrame], count: int, min_rows: int) -> str:
    """Name the ticker that starts last and the one that ends first, with their ranges."""
    late = max(frames, key=lambda t: frames[t].index[0])
    early = min(frames, key=lambda t: frames[t].index[-1])
    ranges = " and ".join(
        f"{t} covers {_day(frames[t].index[0])}..{_day(frames[t].index[-1])}"
        for t in dict.fromkeys((late, early))
    )
    return f"only {count} dates are common to all tickers, fewer than {min_rows}; {ranges}"


def _bound(value: DateLike | None, name: str) -> pd.Timestamp | None:
    return None if value is None else parse_date(value, name)


def parse_date(value: DateLike, name: str) -> pd.Timestamp:
    """A date given as YYYY-MM-DD text or a date object; `name` labels the error."""
    if isinstance(value, date):
        return pd.Timestamp(value)
    try:
        return pd.to_datetime(value.strip(), format="%Y-%m-%d")
    except (ValueError, AttributeError):
        raise DataError(f"{name} {value!r} is not a date; expected YYYY-MM-DD.") from None


# --------------------------------------------------------------------------- yfinance cache


def fetch(
    tickers: Sequence[str],
    start: DateLike,
    end: DateLike,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    *,
    report: LoadReport | None = None,
) -> list[Path]:
    """Download daily prices (end inclusive) into `<cache_dir>/<TICKER>.csv`, one per ticker.

    A cached file that already covers start..end is not downloaded again; others are
    downloaded in one yfinance call over the union of the requested and cached ranges (so a
    file never mixes two Adj Close bases) and checked with `read_price_csv`.
    """
    names = _ticker_names(tickers)
    low, high = parse_date(start, "start"), parse_date(end, "end")
    if low > high:
        raise DataError(f"start {_day(low)} is after end {_day(high)}; start must come first.")
    cache = Path(cache_dir)
    paths = {name: cache / f"{name}.csv" for name in names}
    ranges = {name: _cached_range(path) for name, path in paths.items()}
    stale = [name for name in names if not _covers(ranges[name], low, high)]
    if stale:
        known = [span for n in stale if (span := ranges[n]) is not None]
        first = min([low, *(span[0] for span in known)])
        last = max([high, *(span[1] for span in known)])
        _download(stale, first, last, cache, report or LoadReport())
    return list(paths.values())


def _ticker_names(tickers: Sequence[str] | str) -> list[str]:
    names = list(dict.fromkeys(t.strip().upper() for t in _as_list(tickers)))
    if not names:
        raise DataError("no tickers given; name at least one, e.g. SPY.")
    for name in names:
        if not _TICKER.match(name):
            raise DataError(
                f"ticker {name!r} is not a symbol; use letters, digits and . - ^ = only."
            )
    return names


def _cached_range(path: Path) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last date of a readable cache file; None when absent or broken."""
    try:
        index = read_price_csv(path, max_gap_days=None).index
    except DataError:
        return None
    return index[0], index[-1]


def _covers(
    cached: tuple[pd.Timestamp, pd.Timestamp] | None, low: pd.Timestamp, high: pd.Timestamp
) -> bool:
    """Covered when at most CACHE_GRACE_WEEKDAYS weekdays (holidays) lack rows at each end."""
    if cached is None:
        return False
    first, last = cached
    one = pd.Timedelta(days=1)
    before = np.busday_count(low.date(), first.date())
    after = np.busday_count((last + one).date(), (high + one).date())
    return bool(before <= CACHE_GRACE_WEEKDAYS and after <= CACHE_GRACE_WEEKDAYS)


def _download(
    tickers: list[str], low: pd.Timestamp, high: pd.Timestamp, cache: Path, report: LoadReport
) -> None:
    try:
        import yfinance
    except ImportError:
        raise UserError(
            "yfinance is not installed; install it with: pip install 'bt-protection[fetch]'."
        ) from None
    data = yfinance.download(
        tickers,
        start=_day(low),
        end=_day(high + pd.Timedelta(days=1)),  # yfinance's end is exclusive
        auto_adjust=False,
        progress=False,
        group_by="column",
    )
    cache.mkdir(parents=True, exist_ok=True)
    frames = {ticker: _ticker_frame(data, ticker, single=len(tickers) == 1) for ticker in tickers}
    empty = [ticker for ticker, frame in frames.items() if frame.empty]
    for ticker, frame in frames.items():
        if not frame.empty:
            _write_csv(frame, cache / f"{ticker}.csv", report)
    if empty:
        others = " (the other tickers were cached)" if len(empty) < len(tickers) else ""
        raise DataError(
            f"yfinance returned no rows for {', '.join(empty)} between {_day(low)} and "
            f"{_day(high)}; check the ticker symbols and dates{others}."
        )


def _ticker_frame(data: pd.DataFrame | None, ticker: str, single: bool) -> pd.DataFrame:
    """One ticker's rows from yfinance's (Price, Ticker) columns, padding rows removed."""
    if data is None or data.empty:
        return pd.DataFrame()
    if isinstance(data.columns, pd.MultiIndex):
        if ticker not in data.columns.get_level_values(1):
            return pd.DataFrame()
        data = cast(pd.DataFrame, data.xs(ticker, axis=1, level=1))
    elif not single:  # flat columns only come from older yfinance for one ticker
        return pd.DataFrame()
    return data.reindex(columns=list(CSV_COLUMNS[1:])).dropna(how="all")


def _write_csv(frame: pd.DataFrame, path: Path, report: LoadReport) -> None:
    """Write Yahoo-style columns with ISO dates, then check the file like any other."""
    index = pd.DatetimeIndex(frame.index)
    index = index.tz_localize(None) if index.tz is not None else index
    out = frame.set_axis(index.rename("Date"), axis=0)
    out = out.assign(Volume=out["Volume"].round().astype("Int64"))
    partial = path.with_suffix(".csv.partial")
    out.to_csv(partial, date_format="%Y-%m-%d")
    partial.replace(path)
    read_price_csv(path, max_gap_days=None, report=report)
