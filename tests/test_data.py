"""bt_protection.data: reading, checking and aligning price CSVs; the yfinance cache (offline)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE_DATA

from bt_protection.cli import main
from bt_protection.data import (
    HEADER,
    LoadReport,
    fetch,
    load_universe,
    parse_date,
    read_price_csv,
)
from bt_protection.errors import DataError, UserError

SAMPLE_TICKERS = ["AAPL", "AMZN", "GOOG", "META", "NFLX", "NVDA"]
GOOD = ["2020-01-02,10,11,9,10,5,100", "2020-01-03,10,11,9,10,5,100"]


def write_csv(folder: Path, lines: list[str], name: str = "T.csv", header: str = HEADER) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def rows(start: str, count: int, skip: tuple[str, ...] = ()) -> list[str]:
    """`count` weekdays of valid rows from `start`, leaving out the dates in `skip`."""
    days = [d for d in pd.bdate_range(start, periods=count) if f"{d:%Y-%m-%d}" not in skip]
    return [f"{d:%Y-%m-%d},10,11,9,10,5,100" for d in days]


def raises(call: Callable[[], object], message: str) -> None:
    with pytest.raises(DataError) as caught:
        call()
    assert str(caught.value) == message


# --------------------------------------------------------------------------- real data


def test_sample_universe_loads_six_aligned_tickers() -> None:
    report = LoadReport()
    universe = load_universe(SAMPLE_DATA, report=report)
    assert list(universe) == SAMPLE_TICKERS
    index = universe["AAPL"].index
    assert (index.name, len(index), index[0], index[-1]) == (
        "Date",
        2699,
        pd.Timestamp("2013-01-02"),
        pd.Timestamp("2023-09-21"),
    )
    assert index.is_monotonic_increasing
    for frame in universe.values():
        assert frame.index.equals(index)
        assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
        assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert report.repairs == []
    assert report.dropped_rows == dict.fromkeys(SAMPLE_TICKERS, 0)


def test_prices_are_scaled_by_adj_close_and_volume_is_kept() -> None:
    raw = pd.read_csv(SAMPLE_DATA / "AAPL.csv", index_col="Date", parse_dates=True)
    adjusted = read_price_csv(SAMPLE_DATA / "AAPL.csv")
    factor = raw["Adj Close"] / raw["Close"]
    np.testing.assert_allclose(adjusted["close"], raw["Adj Close"], rtol=1e-12)
    np.testing.assert_allclose(adjusted["open"], raw["Open"] * factor, rtol=1e-12)
    np.testing.assert_allclose(adjusted["low"], raw["Low"] * factor, rtol=1e-12)
    np.testing.assert_array_equal(adjusted["volume"], raw["Volume"])
    unadjusted = read_price_csv(SAMPLE_DATA / "AAPL.csv", adj_close=False)
    np.testing.assert_array_equal(unadjusted["high"], raw["High"])


def test_shared_etf17_folder_loads_clipped_to_common_end(shared_data: Path) -> None:
    report = LoadReport()
    universe = load_universe(shared_data / "etf17_quantfiction", end="2018-03-01", report=report)
    assert len(universe) == 17
    index = universe["SPY"].index
    assert (len(index), index[0], index[-1]) == (
        2578,
        pd.Timestamp("2007-12-04"),
        pd.Timestamp("2018-03-01"),
    )
    assert all(frame.index.equals(index) for frame in universe.values())
    assert report.dropped_rows["JNK"] == 0
    assert report.dropped_rows["SPY"] == 6358 - 2578 - 40  # 40 SPY rows follow 2018-03-01


def test_every_shared_csv_passes_the_checks(shared_data: Path) -> None:
    paths = sorted(shared_data.glob("*/*.csv"))
    assert len(paths) == 76
    for path in paths:
        assert len(read_price_csv(path)) >= 1258, path


# --------------------------------------------------------------------------- one file


def test_headers_match_ignoring_case_and_extra_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["2020-01-02,x,10,11,9,10"], header="date,Note,open,HIGH,low,close")
    frame = read_price_csv(path)
    assert frame.loc["2020-01-02"].tolist() == [10.0, 11.0, 9.0, 10.0, 0.0]


def test_missing_volume_column_is_a_reported_repair(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["2020-01-02,10,11,9,10"], header="Date,Open,High,Low,Close")
    report = LoadReport()
    frame = read_price_csv(path, report=report)
    assert frame["volume"].tolist() == [0.0]
    assert report.repairs == [f"{path}: no Volume column; volume set to 0 on every row"]


def test_without_adj_close_column_prices_are_raw(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, ["2020-01-02,10,11,9,10,7"], header="Date,Open,High,Low,Close,Volume"
    )
    assert read_price_csv(path).iloc[0].tolist() == [10.0, 11.0, 9.0, 10.0, 7.0]


BAD_FILES = {
    "missing columns": (
        "Date,Open,Close,Volume",
        ["2020-01-02,10,10,100"],
        "missing columns High, Low; required: Date, Open, High, Low, Close "
        "(optional: Adj Close, Volume)",
    ),
    "header only": (
        HEADER,
        [],
        "the header has no rows below it; expected one row per trading day",
    ),
    "ragged row": (
        HEADER,
        [*GOOD, "2020-01-06,10,11,9,10,5,100,7,8"],
        "not a readable CSV file (Expected 7 fields in line 4, saw 9)",
    ),
    "bad date": (
        HEADER,
        [GOOD[0], "2020-13-45,10,11,9,10,5,100"],
        "line 3 has date '2020-13-45'; expected YYYY-MM-DD",
    ),
    "duplicate date": (
        HEADER,
        [*GOOD, GOOD[1]],
        "date 2020-01-03 appears more than once (lines 3 and 4); each date must appear once",
    ),
    "unsorted": (
        HEADER,
        [GOOD[1], GOOD[0]],
        "dates are not ascending: 2020-01-02 on line 3 follows 2020-01-03 on line 2; "
        "sort the rows by Date",
    ),
    "gap": (
        HEADER,
        [GOOD[0], "2020-02-03,10,11,9,10,5,100"],
        "no row for 32 days between 2020-01-02 (line 2) and 2020-02-03 (line 3); daily data "
        "may skip at most 10 calendar days (pass max_gap_days=None to accept gaps)",
    ),
    "empty cell": (
        HEADER,
        [GOOD[0], "2020-01-03,10,11,9,,5,100"],
        "column Close is empty on 2020-01-03 (line 3); expected a number",
    ),
    "null cell": (
        HEADER,
        ["2020-01-02,null,null,null,null,null,null"],
        "column Open is 'null' on 2020-01-02 (line 2); expected a number",
    ),
    "bad adj close": (
        HEADER,
        ["2020-01-02,10,11,9,10,n/a,100"],
        "column Adj Close is 'n/a' on 2020-01-02 (line 2); expected a number",
    ),
    "zero price": (
        HEADER,
        [GOOD[0], "2020-01-03,10,11,0,10,5,100"],
        "column Low is 0 on 2020-01-03 (line 3); prices must be above 0",
    ),
    "negative price": (
        HEADER,
        ["2020-01-02,-1.5,11,9,10,5,100"],
        "column Open is -1.5 on 2020-01-02 (line 2); prices must be above 0",
    ),
    "negative volume": (
        HEADER,
        ["2020-01-02,10,11,9,10,5,-3"],
        "column Volume is -3 on 2020-01-02 (line 2); volume may not be negative",
    ),
    "high below low": (
        HEADER,
        [GOOD[0], "2020-01-03,10,8.5,9,10,5,100"],
        "High 8.5 is below Low 9 on 2020-01-03 (line 3); High must be >= Low",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_raises_one_sentence(tmp_path: Path, case: str) -> None:
    header, lines, message = BAD_FILES[case]
    path = write_csv(tmp_path, lines, header=header)
    raises(lambda: read_price_csv(path), f"{path}: {message}.")


def test_missing_file_empty_file_folder_and_binary_file(tmp_path: Path) -> None:
    missing = tmp_path / "NOPE.csv"
    raises(
        lambda: read_price_csv(missing),
        f"{missing}: file not found; expected a CSV with the header {HEADER}.",
    )
    raises(
        lambda: read_price_csv(tmp_path),
        f"{tmp_path}: is a folder, not a file; expected a CSV with the header {HEADER}.",
    )
    empty = tmp_path / "EMPTY.csv"
    empty.write_bytes(b"")
    raises(
        lambda: read_price_csv(empty), f"{empty}: the file is empty; expected the header {HEADER}."
    )
    binary = tmp_path / "BIN.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfa")
    raises(lambda: read_price_csv(binary), f"{binary}: not a CSV file (it is not UTF-8 text).")


def test_gap_check_can_be_switched_off_and_adj_close_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [GOOD[0], "2020-03-02,10,11,9,10,n/a,100"])
    assert len(read_price_csv(path, max_gap_days=None, adj_close=False)) == 2


# --------------------------------------------------------------------------- a folder


def test_inner_join_drops_dates_missing_elsewhere_and_reports_them(tmp_path: Path) -> None:
    write_csv(tmp_path, rows("2020-01-01", 80), "AAA.csv")
    write_csv(tmp_path, rows("2020-01-06", 80, skip=("2020-02-03", "2020-02-04")), "BBB.csv")
    report = LoadReport()
    universe = load_universe(tmp_path, report=report)
    assert universe["AAA"].index.equals(universe["BBB"].index)
    assert len(universe["AAA"]) == 75
    assert report.dropped_rows == {"AAA": 5, "BBB": 3}
    assert report.repairs == [
        "AAA: dropped 5 of 80 rows to keep the 75 dates common to all tickers "
        "(2020-01-06..2020-04-21)",
        "BBB: dropped 3 of 78 rows to keep the 75 dates common to all tickers "
        "(2020-01-06..2020-04-21)",
    ]


def test_tickers_and_date_clip(tmp_path: Path) -> None:
    universe = load_universe(SAMPLE_DATA, ["NVDA", "AAPL"], date(2020, 1, 1), "2020-12-31")
    assert list(universe) == ["AAPL", "NVDA"]
    assert universe["NVDA"].index[[0, -1]].tolist() == [
        pd.Timestamp("2020-01-02"),
        pd.Timestamp("2020-12-31"),
    ]


def test_folder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    raises(
        lambda: load_universe(missing),
        f"{missing}: folder not found; expected one <TICKER>.csv file per ticker.",
    )
    (tmp_path / "notes.txt").write_text("no prices here")
    raises(
        lambda: load_universe(tmp_path),
        f"{tmp_path}: no .csv files; expected one <TICKER>.csv file per ticker.",
    )
    raises(
        lambda: load_universe(SAMPLE_DATA, ["AAPL", "MSFT"]),
        f"{SAMPLE_DATA / 'MSFT.csv'}: file not found for ticker MSFT; "
        "available: AAPL, AMZN, GOOG, META, NFLX, NVDA.",
    )


def test_date_range_errors() -> None:
    raises(
        lambda: load_universe(SAMPLE_DATA, ["AAPL"], start="2030-01-01"),
        f"{SAMPLE_DATA / 'AAPL.csv'}: no rows in 2030-01-01.. "
        "(the file covers 2013-01-02..2023-09-21).",
    )
    raises(
        lambda: load_universe(SAMPLE_DATA, start="2021-01-01", end="2020-01-01"),
        "start 2021-01-01 is after end 2020-01-01; start must come first.",
    )
    raises(
        lambda: load_universe(SAMPLE_DATA, start="01/02/2020"),
        "start '01/02/2020' is not a date; expected YYYY-MM-DD.",
    )
    assert parse_date(date(2020, 1, 2), "start") == pd.Timestamp("2020-01-02")


def test_short_overlap_names_the_tickers_and_their_ranges(tmp_path: Path) -> None:
    write_csv(tmp_path, rows("2020-01-01", 70), "EARLY.csv")
    write_csv(tmp_path, rows("2020-03-02", 70), "LATE.csv")
    raises(
        lambda: load_universe(tmp_path),
        f"{tmp_path}: only 27 dates are common to all tickers, fewer than 60; "
        "LATE covers 2020-03-02..2020-06-05 and EARLY covers 2020-01-01..2020-04-07.",
    )
    assert len(load_universe(tmp_path, min_rows=27)["LATE"]) == 27


# --------------------------------------------------------------------------- fetch (offline)


class FakeYahoo:
    """Stands in for `yfinance.download`: serves the sample CSVs in yfinance's real shape.

    Like yfinance 1.x with group_by="column": symbols upper-cased, `end` exclusive, a
    (Price, Ticker) column MultiIndex sorted by Price, tz-naive DatetimeIndex named Date,
    float prices and int Volume, unknown symbols as all-NaN columns on the union index
    (an empty frame when no symbol is known).
    """

    def __init__(self, empty_df: Callable[[], pd.DataFrame]) -> None:
        self.empty_df = empty_df  # yfinance's own frame for a failed symbol
        self.calls: list[dict[str, Any]] = []

    def __call__(self, tickers: list[str], start: str, end: str, **kwargs: Any) -> pd.DataFrame:
        self.calls.append({"tickers": list(tickers), "start": start, "end": end, **kwargs})
        frames = {t.upper(): self._history(t.upper(), start, end) for t in tickers}
        index = pd.DatetimeIndex([], name="Date").as_unit("ns")
        for frame in frames.values():
            index = index.union(frame.index)
        frames = {t: frame.reindex(index) for t, frame in frames.items()}
        data = pd.concat(frames.values(), axis=1, keys=frames.keys(), names=["Ticker", "Price"])
        data.columns = data.columns.swaplevel(0, 1)
        return data.sort_index(level=0, axis=1)

    def _history(self, ticker: str, start: str, end: str) -> pd.DataFrame:
        path = SAMPLE_DATA / f"{ticker}.csv"
        if not path.exists():
            return self.empty_df()
        frame = pd.read_csv(path, index_col="Date", parse_dates=True)
        frame.index = frame.index.as_unit("ns")
        frame = frame.loc[start : pd.Timestamp(end) - pd.Timedelta(days=1)]
        return frame[["Open", "High", "Low", "Close", "Adj Close", "Volume"]]


@pytest.fixture
def fake_yahoo(monkeypatch: pytest.MonkeyPatch) -> FakeYahoo:
    yfinance = pytest.importorskip("yfinance")
    fake = FakeYahoo(yfinance.utils.empty_df)
    monkeypatch.setattr(yfinance, "download", fake)
    return fake


def assert_cache_holds_sample(path: Path, first: str, last: str) -> None:
    """The cache file has Yahoo's header and exactly the sample's values for first..last."""
    assert path.read_text().splitlines()[0] == HEADER
    cached = pd.read_csv(path, index_col="Date", parse_dates=True)
    sample = pd.read_csv(SAMPLE_DATA / path.name, index_col="Date", parse_dates=True)
    pd.testing.assert_frame_equal(cached, sample.loc[first:last], check_exact=True)


def test_fake_matches_yfinance_output_shape(fake_yahoo: FakeYahoo) -> None:
    data = fake_yahoo(["aapl"], start="2020-01-01", end="2020-02-01")
    assert data.columns.names == ["Price", "Ticker"]
    assert data.columns.get_level_values(0).tolist() == [
        "Adj Close",
        "Close",
        "High",
        "Low",
        "Open",
        "Volume",
    ]
    assert (data.index.name, data.index.tz, data.index[-1]) == (
        "Date",
        None,
        pd.Timestamp("2020-01-31"),
    )
    assert data[("Volume", "AAPL")].dtype == np.int64
    assert data[("Close", "AAPL")].dtype == np.float64


def test_fetch_writes_yahoo_csvs_then_reads_the_cache(
    tmp_path: Path, fake_yahoo: FakeYahoo
) -> None:
    paths = fetch(["nvda", "AAPL"], "2020-01-01", "2020-06-30", tmp_path)
    assert paths == [tmp_path / "NVDA.csv", tmp_path / "AAPL.csv"]
    assert fake_yahoo.calls == [
        {
            "tickers": ["NVDA", "AAPL"],
            "start": "2020-01-01",
            "end": "2020-07-01",
            "auto_adjust": False,
            "progress": False,
            "group_by": "column",
        }
    ]
    for path in paths:
        assert_cache_holds_sample(path, "2020-01-01", "2020-06-30")
    assert path.read_text().splitlines()[1].startswith("2020-01-02,")

    assert fetch(["AAPL"], "2020-01-01", "2020-06-30", tmp_path) == [tmp_path / "AAPL.csv"]
    assert fetch(["AAPL"], "2020-01-03", "2020-06-26", tmp_path) == [tmp_path / "AAPL.csv"]
    assert len(fake_yahoo.calls) == 1
    universe = load_universe(tmp_path)
    assert len(universe["AAPL"]) == 125


def test_fetch_extends_a_cached_file_over_the_union_of_ranges(
    tmp_path: Path, fake_yahoo: FakeYahoo
) -> None:
    fetch(["AAPL"], "2020-03-02", "2020-06-30", tmp_path)
    fetch(["AAPL"], "2020-01-01", "2020-04-30", tmp_path)
    assert [(c["start"], c["end"]) for c in fake_yahoo.calls] == [
        ("2020-03-02", "2020-07-01"),
        ("2020-01-01", "2020-07-01"),
    ]
    assert_cache_holds_sample(tmp_path / "AAPL.csv", "2020-01-01", "2020-06-30")


def test_fetch_unknown_ticker_is_named_and_the_others_are_cached(
    tmp_path: Path, fake_yahoo: FakeYahoo
) -> None:
    raises(
        lambda: fetch(["AAPL", "ZZZZ"], "2020-01-01", "2020-03-31", tmp_path),
        "yfinance returned no rows for ZZZZ between 2020-01-01 and 2020-03-31; check the ticker "
        "symbols and dates (the other tickers were cached).",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AAPL.csv"]
    raises(
        lambda: fetch(["ZZZZ", "YYYY"], "2020-01-01", "2020-03-31", tmp_path),
        "yfinance returned no rows for ZZZZ, YYYY between 2020-01-01 and 2020-03-31; "
        "check the ticker symbols and dates.",
    )
    assert len(fake_yahoo.calls) == 2


def test_fetch_accepts_the_flat_columns_of_older_yfinance(
    tmp_path: Path, fake_yahoo: FakeYahoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flat(tickers: list[str], **kwargs: Any) -> pd.DataFrame:
        return fake_yahoo(tickers, **kwargs).droplevel(1, axis=1)

    monkeypatch.setattr(sys.modules["yfinance"], "download", flat)
    fetch(["AAPL"], "2020-01-01", "2020-03-31", tmp_path)
    assert_cache_holds_sample(tmp_path / "AAPL.csv", "2020-01-01", "2020-03-31")
    assert len(fake_yahoo.calls) == 1


def test_fetch_argument_errors(tmp_path: Path, fake_yahoo: FakeYahoo) -> None:
    raises(
        lambda: fetch([], "2020-01-01", "2020-02-01", tmp_path),
        "no tickers given; name at least one, e.g. SPY.",
    )
    raises(
        lambda: fetch(["../X"], "2020-01-01", "2020-02-01", tmp_path),
        "ticker '../X' is not a symbol; use letters, digits and . - ^ = only.",
    )
    raises(
        lambda: fetch(["AAPL"], "2020-02-01", "2020-01-01", tmp_path),
        "start 2020-02-01 is after end 2020-01-01; start must come first.",
    )
    assert fake_yahoo.calls == []


def test_fetch_without_yfinance_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yfinance", None)
    with pytest.raises(UserError) as caught:
        fetch(["AAPL"], "2020-01-01", "2020-02-01", tmp_path)
    assert str(caught.value) == (
        "yfinance is not installed; install it with: pip install 'bt-protection[fetch]'."
    )


def test_cli_fetch_end_to_end(
    tmp_path: Path, fake_yahoo: FakeYahoo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fetch", "AAPL", "META", "--start", "2019-01-01", "--end", "2019-12-31"]
    assert main([*argv, "--cache", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(tmp_path / "AAPL.csv"),
        str(tmp_path / "META.csv"),
    ]
    assert len(fake_yahoo.calls) == 1
    universe = load_universe(tmp_path)
    assert universe["META"].index[[0, -1]].tolist() == [
        pd.Timestamp("2019-01-02"),
        pd.Timestamp("2019-12-31"),
    ]


def test_cli_fetch_bad_date_exits_2_with_one_sentence(
    tmp_path: Path, fake_yahoo: FakeYahoo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fetch", "AAPL", "--start", "2019-02-30", "--end", "2019-12-31"]
    assert main([*argv, "--cache", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "bt-protection fetch: error: --start '2019-02-30' is not a date; expected YYYY-MM-DD.\n"
    )
    assert fake_yahoo.calls == []
