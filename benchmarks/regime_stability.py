"""Label stability of RegimeIndicator on the S&P 500, 2000-2013 (the numbers in docs/regime.md).

    python benchmarks/regime_stability.py [--csv ../shared/data/single/GSPC.csv]
        [--confirm 1 3 5 ...] [--plot docs/images/regime_gspc.png]

For each `confirm_bars` asked (default: the profile default) it prints the label changes per
year, the flaps (changes reversed within 5 bars), the share of bear or crisis bars from
2008-09-15 to 2009-03-09 and, for the 2000-2002 and 2007-2009 bear markets, how many bars after
the first 10% drawdown from the peak the regime became bear or crisis. The labels come from
`RegimeState`, the code `RegimeIndicator` runs; the series is fed from its first row (1999), so
the indicator has warmed up by 2000. With --plot it draws the index with the labels (default
parameters) as background.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bt_protection.integration.regime import RegimeState
from bt_protection.profile import RegimeConfig
from bt_protection.regimes import REGIME_LABELS

ROOT = Path(__file__).resolve().parents[1]
GSPC = ROOT.parent / "shared" / "data" / "single" / "GSPC.csv"
PERIOD = ("2000-01-01", "2013-12-31")
CRASH = ("2008-09-15", "2009-03-09")
BEAR_MARKETS = {
    "2000-2002": ("2000-01-01", "2002-12-31"),
    "2007-2009": ("2007-01-01", "2009-12-31"),
}
FLAP_BARS = 5
COLOURS = {"bull": "#c8e6c9", "neutral": "#eeeeee", "bear": "#ffe0b2", "crisis": "#ffcdd2"}


def labels(close: pd.Series, config: RegimeConfig) -> pd.Series:
    """The confirmed label of every bar of `close`."""
    state = RegimeState(config)
    return pd.Series([REGIME_LABELS[state.update(c)] for c in close], index=close.index)


def stability(close: pd.Series, config: RegimeConfig) -> dict[str, float]:
    """The measurements of one configuration over `PERIOD`."""
    found = labels(close, config)
    period = found.loc[PERIOD[0] : PERIOD[1]]
    changes = [i for i in range(1, len(period)) if period.iloc[i] != period.iloc[i - 1]]
    flaps = sum(
        1
        for a, b in zip(changes, changes[1:], strict=False)
        if b - a <= FLAP_BARS and period.iloc[b] == period.iloc[a - 1]
    )
    years = (period.index[-1] - period.index[0]).days / 365.25
    crash = found.loc[CRASH[0] : CRASH[1]]
    result = {
        "changes_per_year": len(changes) / years,
        "flaps": flaps,
        "crash_bear_or_crisis": float(crash.isin(["bear", "crisis"]).mean()),
    }
    for name, (start, end) in BEAR_MARKETS.items():
        result[f"entry_delay_{name}"] = entry_delay(close.loc[start:end], found.loc[start:end])
    return result


def entry_delay(close: pd.Series, found: pd.Series) -> int:
    """Bars from the first 10% drawdown below the window's peak to the first bear or crisis
    label after the peak (negative: the label came first)."""
    peak = int(close.to_numpy().argmax())
    after = close.iloc[peak:]
    first_drawdown = peak + int((after <= 0.9 * close.iloc[peak]).to_numpy().argmax())
    stressed = found.iloc[peak:].isin(["bear", "crisis"]).to_numpy()
    return peak + int(stressed.argmax()) - first_drawdown


def plot(close: pd.Series, config: RegimeConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    found = labels(close, config).loc[PERIOD[0] : PERIOD[1]]
    shown = close.loc[found.index]
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    starts = [i for i in range(len(found)) if i == 0 or found.iloc[i] != found.iloc[i - 1]]
    for first, after in zip(starts, [*starts[1:], len(found) - 1], strict=True):
        ax.axvspan(found.index[first], found.index[after], color=COLOURS[found.iloc[first]], lw=0)
    ax.plot(shown.index, shown.to_numpy(), color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(
        f"S&P 500 {PERIOD[0][:4]}-{PERIOD[1][:4]} with RegimeIndicator labels "
        f"(default parameters, confirm_bars={config.confirm_bars})"
    )
    ax.legend(handles=[Patch(color=c, label=k) for k, c in COLOURS.items()], loc="lower right")
    ax.margins(x=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=GSPC, help="Yahoo CSV of the index")
    parser.add_argument("--confirm", type=int, nargs="+", default=[RegimeConfig.confirm_bars])
    parser.add_argument("--plot", type=Path, help="PNG to draw (default parameters)")
    args = parser.parse_args()
    frame = pd.read_csv(args.csv, parse_dates=["Date"], index_col="Date")
    close = frame["Adj Close"].astype(float)
    rows = {n: stability(close, replace(RegimeConfig(), confirm_bars=n)) for n in args.confirm}
    table = pd.DataFrame(rows).T.rename_axis("confirm_bars")
    print(
        f"{args.csv.name} {PERIOD[0]}..{PERIOD[1]}, flaps: changes reversed within {FLAP_BARS} bars"
    )
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    if args.plot:
        plot(close, RegimeConfig(), args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
