"""report.html for a comparison, a run and a tune, opened in headless Chromium; `compare
--costs` and the break-even cost. Real runs of the sample data, 2019-2020, two profiles."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from browser import MISSING, look
from conftest import SAMPLE_DATA

from bt_protection.cli import main
from bt_protection.costs import COST_COLUMNS, breakeven
from bt_protection.report import REPORT_FILE, report_html
from bt_protection.report.evidence import run_evidence, special_events
from bt_protection.runs import load_run
from bt_protection.shipped import PROFILES as SHIPPED

CONFIGS = SHIPPED
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (gitignored)
COMMON = ["--data", str(SAMPLE_DATA), "--start", "2019-01-01", "--end", "2020-12-31"]
PROFILES = ["--profiles", str(CONFIGS / "off.yaml"), str(CONFIGS / "balanced.yaml")]
COSTS = (0.0, 300.0, 1000.0)  # wide enough that balanced's Sharpe crosses off's
TUNE = [
    "tune", "--strategy", "sma_crossover", "--data", str(SAMPLE_DATA), "--tickers", "AAPL",
    "NVDA", "--start", "2018-01-01", "--end", "2020-12-31", "--train", "1y", "--test", "6m",
    "--warmup", "60", "--jobs", "1", "--timing-shifts", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """off and balanced at the default broker, and at each of COSTS; report by default."""
    out = tmp_path_factory.mktemp("report") / "cmp"
    costs = ",".join(f"{c:g}" for c in COSTS)
    assert main(["compare", *PROFILES, *COMMON, "--costs", costs, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def free(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain compare with no commission and no slippage, and no report."""
    out = tmp_path_factory.mktemp("report") / "free"
    extra = ["--commission", "0", "--slippage", "0", "--no-report"]
    assert main(["compare", *PROFILES, *COMMON, *extra, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    space = folder / "space.yaml"
    space.write_text(
        yaml.safe_dump({"protections.holding_period.min_hold": ["5 bars", "20 bars"]}),
        encoding="utf-8",
    )
    assert main([*TUNE, "--space", str(space), "--out", str(folder / "tune")]) == 0
    return folder / "tune"


# --------------------------------------------------------------------------- costs


def test_costs_csv_has_one_row_per_profile_and_cost(compared: Path) -> None:
    costs = pd.read_csv(compared / "costs.csv")
    assert list(costs.columns) == list(COST_COLUMNS)
    assert sorted(zip(costs["profile"], costs["cost_bps"], strict=True)) == sorted(
        (p, c) for p in ("off", "balanced") for c in COSTS
    )
    # each row is the summary of its own run, which charged that cost and no slippage
    for row in costs.itertuples():
        run = load_run(compared / "costs" / f"{row.profile}-{row.cost_bps:g}bps")
        assert run.summary["commission"] == pytest.approx(row.cost_bps / 10_000)
        assert run.summary["slippage"] == 0
        assert row.sharpe == run.summary["sharpe"]
    assert (costs.loc[costs["profile"] == "off", "sharpe_vs_off"] == 0).all()


def test_cost_zero_equals_a_plain_compare_without_costs(compared: Path, free: Path) -> None:
    costs = pd.read_csv(compared / "costs.csv").set_index(["profile", "cost_bps"])
    plain = pd.read_csv(free / "comparison.csv", index_col="run")
    for profile in ("off", "balanced"):
        for column in ("total_return", "sharpe", "max_drawdown", "turnover"):
            assert costs.loc[(profile, 0.0), column] == plain.loc[profile, column]
    assert not (free / REPORT_FILE).exists()  # --no-report
    assert "breakeven_cost_bps" not in plain


def test_breakeven_lies_where_sharpe_vs_off_changes_sign(compared: Path) -> None:
    costs = pd.read_csv(compared / "costs.csv")
    table = pd.read_csv(compared / "comparison.csv", index_col="run")
    balanced = costs[costs["profile"] == "balanced"]
    gap, cost = balanced["sharpe_vs_off"].to_numpy(), balanced["cost_bps"].to_numpy()
    flips = [i for i in range(len(gap) - 1) if gap[i] * gap[i + 1] < 0]
    assert flips, "the test costs must make balanced cross off"
    i = flips[0]
    found = table.loc["balanced", "breakeven_cost_bps"]
    assert cost[i] < found < cost[i + 1]
    between = cost[i] + (cost[i + 1] - cost[i]) * gap[i] / (gap[i] - gap[i + 1])
    assert found == pytest.approx(between)
    assert math.isnan(table.loc["off", "breakeven_cost_bps"])


def test_breakeven_is_empty_with_the_side_it_stays_on() -> None:
    rows = (
        [("off", c, 0.0) for c in (0, 10, 20)]
        + [("above", c, g) for c, g in ((0, 0.2), (10, 0.1), (20, 0.05))]
        + [("below", c, g) for c, g in ((0, -0.3), (10, -0.2), (20, -0.1))]
        + [("worse", c, g) for c, g in ((0, 0.1), (10, -0.1), (20, -0.3))]
    )
    costs = pd.DataFrame(rows, columns=["profile", "cost_bps", "sharpe_vs_off"])
    found = breakeven(costs)
    assert found["breakeven_cost_bps"].isna().tolist() == [True, True, True, False]
    assert "stays above" in found.loc["above", "breakeven_note"]
    assert "stays below" in found.loc["below", "breakeven_note"]
    assert found.loc["worse", "breakeven_cost_bps"] == pytest.approx(5.0)
    assert "trails it above" in found.loc["worse", "breakeven_note"]


@pytest.mark.parametrize(
    ("costs", "words"),
    [("0,-5", "-5 is not a cost"), ("0,ten", "'ten' is not a number"), ("", "is not a number")],
)
def test_bad_costs_are_one_sentence_and_write_nothing(
    costs: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    assert main(["compare", *PROFILES, *COMMON, "--costs", costs, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert words in error and error.count("\n") == 0 and "Traceback" not in error
    assert not out.exists() and not out.with_name("never.partial").exists()


def test_costs_need_an_off_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    only = ["--profiles", str(CONFIGS / "balanced.yaml")]
    assert main(["compare", *only, *COMMON, "--costs", "0,10", "--out", str(out)]) == 2
    assert "needs a profile named 'off'" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_report_on_another_folder_is_one_sentence(
    content: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    if content:
        (folder / content).write_text("hello", encoding="utf-8")
    assert main(["report", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "is not a run, comparison or tune folder" in error and error.count("\n") == 0
    assert sorted(p.name for p in folder.iterdir()) == ([content] if content else [])
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_page_is_self_contained(compared: Path) -> None:
    page = (compared / REPORT_FILE).read_text(encoding="utf-8")
    assert page.count("window.vegaEmbed=") == 1  # the libraries once, not once per chart
    assert "<script src" not in page and "<link" not in page
    assert (compared / REPORT_FILE).stat().st_size < 5_000_000


def test_lone_run_reads_its_moves_from_the_prices(compared: Path, tmp_path: Path) -> None:
    """A run folder outside its comparison gets the same moves from --data as the
    comparison's attribution.csv holds."""
    lone = tmp_path / "balanced"
    shutil.copytree(compared / "balanced", lone)
    evidence = run_evidence(lone, SAMPLE_DATA)
    written = pd.read_csv(compared / "attribution.csv")
    mine = written[written["run"] == "balanced"].reset_index(drop=True)
    assert len(evidence.attribution) == len(mine) > 0
    for column in ("fwd_5", "fwd_20", "fwd_60", "blocked_value"):
        got, expected = evidence.attribution[column].to_numpy(), mine[column].to_numpy()
        assert got == pytest.approx(expected, rel=1e-8, nan_ok=True)
    blank = run_evidence(lone, tmp_path / "no-such-data")
    assert blank.attribution["fwd_20"].isna().all() and "could not be read" in blank.notes[0]


def test_risk_exits_show_when_a_run_has_them(compared: Path, tmp_path: Path) -> None:
    """A run that records risk exits (summary `risk_exits`, orders `protection` risk_exit,
    as the exit-safety branch writes) gets them listed; without them, one sentence."""
    run = tmp_path / "balanced"
    shutil.copytree(compared / "balanced", run)
    assert "No partial approvals and no risk exits" in report_html(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    (run / "summary.json").write_text(json.dumps(summary | {"risk_exits": 1}), encoding="utf-8")
    orders = pd.read_csv(run / "orders.csv")
    orders.loc[0, ["protection", "reason"]] = ["risk_exit", "Stop loss of 8% hit."]
    orders.to_csv(run / "orders.csv", index=False)
    events = special_events({"balanced": load_run(run)})
    assert events[["kind", "reason"]].values.tolist() == [["risk_exit", "Stop loss of 8% hit."]]
    page = report_html(run)
    assert "Stop loss of 8% hit." in page and "risk_exits" in page


# --------------------------------------------------------------------------- in a browser


def _seen_in_browser(report: Path, name: str, **actions: str):  # type: ignore[no-untyped-def]
    if MISSING:
        pytest.skip(f"{MISSING}.")
    pytest.importorskip("playwright", reason="playwright (a test extra) is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{name}.png"
    seen = look(report, shot, **actions)
    assert shot.stat().st_size > 10_000  # the screenshot is kept as the test's artefact
    assert seen.rendered == "true" and seen.errors == []
    assert [url for url in seen.requests if not url.startswith("file://")] == []
    assert seen.charts and all(w > 0 and h > 0 for w, h in seen.charts.values()), seen.charts
    return seen


def test_comparison_report_in_a_browser(compared: Path) -> None:
    seen = _seen_in_browser(compared / REPORT_FILE, "comparison", sort_by="sharpe")
    table = pd.read_csv(compared / "comparison.csv", index_col="run")
    assert seen.sorted_rows == list(table["sharpe"].sort_values().index)  # a click sorts
    assert set(seen.charts) == {
        "chart-equity", "chart-denials", "chart-effectiveness", "chart-decisions", "chart-costs"
    }  # fmt: skip
    reasons = set(pd.read_csv(compared / "attribution.csv")["reason"])
    assert any(reason in seen.tooltip for reason in reasons), seen.tooltip
    for words in ("profile", "system", "move 5 bars after", "move 60 bars after"):
        assert words in seen.tooltip


def test_run_report_in_a_browser_filters_its_orders(compared: Path) -> None:
    assert main(["report", str(compared / "balanced")]) == 0
    seen = _seen_in_browser(compared / "balanced" / REPORT_FILE, "run", filter_text="denied")
    orders = load_run(compared / "balanced").orders
    denied = orders["protection"].eq("denied") | orders["reason"].str.contains("denied")
    assert seen.filtered_rows == int(denied.sum()) > 0
    assert "reason" in seen.tooltip and "chart-denials" in seen.charts


def test_tune_report_in_a_browser(tuned: Path) -> None:
    seen = _seen_in_browser(tuned / REPORT_FILE, "tune")
    assert set(seen.charts) == {"chart-oos", "chart-chosen", "chart-bootstrap", "chart-stability"}
    verdict = json.loads((tuned / "verdict.json").read_text(encoding="utf-8"))["verdict"]
    assert verdict[1:] in (tuned / REPORT_FILE).read_text(encoding="utf-8")
