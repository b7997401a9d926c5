"""`bt-protection compare`, `bt_protection.runs.compare_runs` and the attribution: real runs of
`momentum_rotation` on the sample data, clipped to 2019-2020 to stay fast."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE_DATA

from bt_protection.attribution import forward_returns, summarize
from bt_protection.cli import build_parser, main
from bt_protection.compare import default_profiles, run_comparison
from bt_protection.errors import UserError
from bt_protection.profile import load_profile
from bt_protection.runner import RunSpec, execute_run
from bt_protection.runs import SUMMARY_COLUMNS, compare_runs, load_run
from bt_protection.shipped import PROFILES
from bt_protection.strategies import MomentumRotation

START, END = "2019-01-01", "2020-12-31"
BALANCED_SYSTEMS = load_profile(PROFILES / "balanced.yaml").enabled_systems
COMMON = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]


def compare(out: Path, *profiles: str, extra: tuple[str, ...] = ()) -> int:
    """`bt-protection compare` of momentum_rotation under the shipped <profile> into `out`."""
    paths = [str(PROFILES / f"{name}.yaml") for name in profiles]
    return main(["compare", "--profiles", *paths, *COMMON, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def ablated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """off and balanced, with balanced's ablations, run in this process (--jobs 1)."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    assert compare(out, "off", "balanced", extra=("--ablate", "--jobs", "1")) == 0
    return out


@pytest.fixture(scope="module")
def table(ablated: Path) -> pd.DataFrame:
    """comparison.csv as written (blank `protection` cells read back as "")."""
    written = pd.read_csv(ablated / "comparison.csv", index_col="run")
    return written.fillna({"protection": ""})


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the table


def test_rows_are_profiles_in_order_then_their_ablations(table: pd.DataFrame) -> None:
    ablations = [f"balanced-without-{system}" for system in BALANCED_SYSTEMS]
    assert list(table.index) == ["off", "balanced", *ablations]
    assert list(table["protection"]) == ["", "", *BALANCED_SYSTEMS]


def test_table_values_are_those_of_each_summary(ablated: Path, table: pd.DataFrame) -> None:
    for name, row in table.iterrows():
        data = summary(ablated / name)
        for column in (*SUMMARY_COLUMNS, "overrides_applied"):
            expected = math.nan if data[column] is None else data[column]
            assert row[column] == pytest.approx(expected, rel=0, abs=0, nan_ok=True), column
        for system in BALANCED_SYSTEMS:
            assert row[f"denied_{system}"] == data["denials_by_system"].get(system, 0)


def test_off_run_has_no_denials(table: pd.DataFrame) -> None:
    off = table.loc["off"]
    assert off["orders_denied"] == 0
    assert off["orders_approved"] == off["orders_attempted"] > 0
    assert all(off[f"denied_{system}"] == 0 for system in BALANCED_SYSTEMS)
    assert table.loc["balanced", "orders_denied"] > 0


def test_ablation_deltas_are_profile_minus_ablated_run(table: pd.DataFrame) -> None:
    assert table.loc[["off", "balanced"], "delta_total_return"].isna().all()
    for system in BALANCED_SYSTEMS:
        name = f"balanced-without-{system}"
        for metric in ("total_return", "max_drawdown", "turnover", "commissions"):
            delta = table.loc["balanced", metric] - table.loc[name, metric]
            assert table.loc[name, f"delta_{metric}"] == pytest.approx(delta, abs=1e-8)
        assert table.loc[name, f"denied_{system}"] == 0
    # switching grace off changes what balanced does on this data
    assert table.loc["balanced-without-grace_period", "delta_total_return"] != 0


def test_ablated_profiles_are_written_and_used(ablated: Path) -> None:
    for system in BALANCED_SYSTEMS:
        name = f"balanced-without-{system}"
        profile = load_profile(ablated / "profiles" / f"{name}.yaml")
        assert profile.name == name
        assert set(profile.enabled_systems) == set(BALANCED_SYSTEMS) - {system}
        assert summary(ablated / name)["profile_hash"] == profile.hash


def test_compare_runs_gives_the_written_table(ablated: Path, table: pd.DataFrame) -> None:
    folders = [ablated / name for name in table.index]
    again = compare_runs(folders)
    pd.testing.assert_frame_equal(again, table, check_dtype=False, atol=1e-9)


def test_markdown_and_manifest(ablated: Path, table: pd.DataFrame) -> None:
    lines = (ablated / "comparison.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| run | total_return |") and len(lines) == 2 + len(table)
    manifest = json.loads((ablated / "comparison.json").read_text(encoding="utf-8"))
    assert manifest["strategy"] == "momentum_rotation"
    assert (manifest["start"], manifest["end"]) == ("2019-01-02", "2020-12-31")
    assert [run["name"] for run in manifest["runs"]] == list(table.index)
    for run in manifest["runs"]:
        assert run["status"] == "complete"
        assert run["fingerprint"] == summary(ablated / run["name"])["fingerprint"]
        assert run["fingerprint"]["profile_hash"] == run["profile_hash"]
    assert manifest["runs"][2]["ablation"] == {"of": "balanced", "protection": BALANCED_SYSTEMS[0]}
    assert not list(ablated.parent.glob("*.partial"))


def test_png_has_three_coloured_panels(ablated: Path) -> None:
    png = ablated / "comparison.png"
    assert png.stat().st_size > 20_000
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 800 and image.shape[1] >= 800
    pixels = (image[::3, ::3, :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 50


def test_default_profiles_resolve_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["compare"])
    assert args.strategy == "momentum_rotation" and args.profiles is None
    names = ["off", "conservative", "balanced", "aggressive", "portfolio_guard"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "off.yaml").write_text("name: mine\n")  # a checkout's folder: unused
    monkeypatch.chdir(tmp_path)
    assert default_profiles() == [PROFILES / f"{n}.yaml" for n in names]


# --------------------------------------------------------------------------- parallel runs


def test_parallel_equals_sequential_and_a_rerun_replaces(ablated: Path, tmp_path: Path) -> None:
    out = tmp_path / "parallel"
    assert compare(out, "off", "balanced", extra=("--ablate", "--jobs", "2")) == 0
    for name in ("comparison.csv", "attribution.csv", "attribution_summary.csv"):
        assert (out / name).read_bytes() == (ablated / name).read_bytes(), name
    for run in pd.read_csv(out / "comparison.csv")["run"]:
        orders = (out / run / "orders.csv").read_bytes()
        assert orders == (ablated / run / "orders.csv").read_bytes(), run
    # the same comparison again into its own folder: replaced, not refused
    assert compare(out, "off", extra=("--jobs", "2")) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["off"]


# --------------------------------------------------------------------------- attribution


def adjusted_close(asset: str) -> pd.Series:
    """The close the runs see, by hand: Adj Close of the sample CSV, clipped to the test span."""
    raw = pd.read_csv(SAMPLE_DATA / f"{asset}.csv", index_col="Date", parse_dates=True)
    return raw.loc[START:END, "Adj Close"]


def test_forward_returns_by_hand(ablated: Path) -> None:
    found = pd.read_csv(ablated / "attribution.csv")
    denied = summary(ablated / "balanced")["orders_denied"]
    assert (found["run"] == "balanced").sum() == denied > 0
    for _, row in found.iterrows():
        close = adjusted_close(row["asset"])
        t = close.index.get_loc(pd.Timestamp(row["date"]))
        for h in (5, 20, 60):
            if t + h < len(close):
                expected = close.iloc[t + h] / close.iloc[t] - 1
                assert row[f"fwd_{h}"] == pytest.approx(expected, rel=1e-8)
            else:
                assert math.isnan(row[f"fwd_{h}"])
    assert found["fwd_60"].isna().any()  # late denials run past the data


def test_denials_match_the_audit_and_orders(ablated: Path) -> None:
    found = pd.read_csv(ablated / "attribution.csv")
    run = load_run(ablated / "balanced")
    orders = run.orders[run.orders["protection"] == "denied"]
    mine = found[found["run"] == "balanced"]
    assert list(mine["asset"]) == list(orders["asset"])
    assert list(mine["date"]) == list(orders["created"].dt.strftime("%Y-%m-%d"))
    assert list(mine["reason"]) == list(orders["reason"])
    assert set(mine["side"]) <= {"buy", "sell"}
    # blocked value: the denied order's shares at the decision day's close
    days = zip(mine["asset"], mine["date"], strict=True)
    closes = [adjusted_close(asset).loc[pd.Timestamp(day)] for asset, day in days]
    expected = orders["size"].abs().to_numpy() * np.array(closes)
    assert mine["blocked_value"].to_numpy() == pytest.approx(expected, rel=1e-8)


def test_summary_counts_and_right_rates(ablated: Path, table: pd.DataFrame) -> None:
    found = pd.read_csv(ablated / "attribution.csv")
    written = pd.read_csv(ablated / "attribution_summary.csv")
    each = found.assign(system=found["blocking_systems"].str.split(";")).explode("system")
    for _, row in written.iterrows():
        assert row["count"] == table.loc[row["run"], f"denied_{row['system']}"]
        mine = each[(each["run"] == row["run"]) & (each["system"] == row["system"])]
        known = mine.dropna(subset=["fwd_20"])
        right = ((known["side"] == "sell") & (known["fwd_20"] > 0)) | (
            (known["side"] == "buy") & (known["fwd_20"] < 0)
        )
        assert row["right_20"] == pytest.approx(right.mean(), nan_ok=True)
        assert row["mean_fwd_20"] == pytest.approx(known["fwd_20"].mean(), nan_ok=True)


def test_forward_returns_and_right_rate_on_a_toy_series() -> None:
    dates = pd.bdate_range("2020-01-01", periods=8)
    prices = pd.DataFrame({"X": [10, 11, 12, 13, 14, 15, 16, 8.0]}, index=dates)
    got = forward_returns(prices, pd.Series([dates[1], dates[6]]), pd.Series(["X", "X"]), (1, 5))
    assert got["fwd_1"].tolist() == pytest.approx([12 / 11 - 1, 8 / 16 - 1])
    assert got["fwd_5"].iloc[0] == pytest.approx(16 / 11 - 1) and math.isnan(got["fwd_5"].iloc[1])
    rows = pd.DataFrame({
        "run": "r", "asset": "X", "side": ["sell", "buy"], "blocking_systems": "grace_period",
        "fwd_1": got["fwd_1"], "blocked_value": [110.0, 50.0],
    })
    result = summarize(rows, (1,))
    assert result[["count", "right_1"]].values.tolist() == [[2, 1.0]]  # up after the sell,
    # down after the buy: both right
    # the kept 110 rose by 1/11 (+10); the 50 kept out fell by half (+25)
    assert result["saved_1"].tolist() == pytest.approx([35.0])


# --------------------------------------------------------------------------- mixed data


def test_mixed_data_is_refused_unless_allowed(ablated: Path, tmp_path: Path) -> None:
    later = execute_run(
        RunSpec("momentum_rotation", PROFILES / "off.yaml", data=SAMPLE_DATA, start="2019-06-01",
                end=END),
        tmp_path / "later",
    )
    with pytest.raises(UserError) as error:
        compare_runs([ablated / "off", later])
    message = str(error.value)
    assert "runs on different data cannot share a table" in message
    assert "off uses AAPL AMZN GOOG META NFLX NVDA from 2019-01-02 to 2020-12-31" in message
    assert "later uses" in message and "another date range" in message
    assert message.endswith("; set `allow_mixed_data` to compare them anyway.")
    assert list(compare_runs([ablated / "off", later], allow_mixed_data=True).index) == [
        "off", "later"
    ]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'; valid names:"),
        (["--profiles", "missing.yaml"], "missing.yaml: no such file."),
        (["--jobs", "0"], "--jobs must be 1 or more, not 0."),
        (["--jobs", "-2"], "--jobs must be 1 or more, not -2."),
        (["--profiles", str(PROFILES / "off.yaml"), str(PROFILES / "off.yaml")],
         "two runs would be named 'off'"),
        (["--cash", "0"], "--cash must be above 0"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *COMMON, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bt-protection compare: error: ") and message in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_invalid_profile_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprotections:\n  holding_period:\n    min_hold: 20\n")
    out = tmp_path / "cmp"
    args = ["compare", "--profiles", str(PROFILES / "off.yaml"), str(bad), "--out", str(out)]
    assert main([*args, *COMMON]) == 2
    assert "min_hold" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_out_holding_another_comparison_is_refused(
    ablated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (ablated / "comparison.csv").read_bytes()
    argv = ["compare", "--strategy", "sma_crossover", "--profiles", str(PROFILES / "off.yaml")]
    assert main([*argv, *COMMON, "--out", str(ablated)]) == 2
    err = capsys.readouterr().err
    assert f"--out {ablated} already holds another comparison (momentum_rotation on " in err
    assert "not sma_crossover on" in err
    assert (ablated / "comparison.csv").read_bytes() == before


def test_out_that_is_not_a_comparison_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert compare(tmp_path, "off") == 2
    assert "exists and is not a comparison folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- a failing run


class FailsUnderBalanced(MomentumRotation):
    """momentum_rotation that raises on its first bar when the profile is `balanced`."""

    def next(self) -> None:
        if self.protection.profile.name == "balanced":
            raise RuntimeError("boom under balanced")
        super().next()


def test_a_failing_run_is_reported_and_the_others_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    profiles = [str(PROFILES / "off.yaml"), str(PROFILES / "balanced.yaml")]
    strategy = "test_compare:FailsUnderBalanced"  # a module on sys.path (tests/)
    argv = ["compare", "--strategy", strategy, "--profiles", *profiles, "--jobs", "1"]
    assert main([*argv, *COMMON, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    kept = out / "balanced.failed"
    error = "RuntimeError: boom under balanced"
    assert f"run balanced failed (kept as {kept}/): {error}" in captured.err
    assert "1 of 2 runs failed: balanced." in captured.err
    assert "| off |" in captured.out
    assert list(pd.read_csv(out / "comparison.csv")["run"]) == ["off"]
    assert (out / "off" / "status.json").is_file()
    status = json.loads((kept / "status.json").read_text(encoding="utf-8"))
    assert status["status"] == "failed"
    manifest = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert [r["status"] for r in manifest["runs"]] == ["complete", "failed"]


def test_library_call_returns_path_table_and_runs(ablated: Path) -> None:
    comparison = run_comparison(
        "momentum_rotation", [PROFILES / "off.yaml"], data=SAMPLE_DATA, start=START, end=END,
        out=ablated.parent / "library", jobs=1, progress=False,
    )
    assert comparison.path == ablated.parent / "library"
    assert list(comparison.table.index) == ["off"] and comparison.failed == {}
    assert comparison.runs["off"].path == comparison.path / "off"
    assert comparison.attribution.empty and comparison.attribution_summary.empty


def test_a_comparison_on_other_data_gets_a_folder_of_its_own() -> None:
    from bt_protection.outfolder import Kind, data_qualifier, default_out

    def compare_out(strategy: str, data: str | None = None) -> Path:
        return default_out(Kind.COMPARE, strategy, data_qualifier(data))

    assert compare_out("momentum_rotation") == Path("runs/compare-momentum_rotation")
    assert compare_out("sma_crossover", "data/etf17") == Path("runs/compare-sma_crossover-etf17")
    assert compare_out("sma_crossover", "data/etf17/").name == "compare-sma_crossover-etf17"
    # the one rule: a tune is named the same way, a run by its profile
    assert default_out(Kind.TUNE, "sma_crossover", data_qualifier("data/etf17")) == Path(
        "runs/tune-sma_crossover-etf17"
    )
    assert default_out(Kind.RUN, "sma_crossover", "balanced") == Path(
        "runs/sma_crossover-balanced"
    )
