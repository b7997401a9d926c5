"""backtrader overhead of the protection layer (SPEC 13).

The same strategy (`sma_crossover`) on a real multi-asset set, run side by side in one process:
without the mixin, with the mixin and the `off` profile, and with `balanced`. Rounds are
interleaved so that machine noise hits every variant alike; the best round of each is compared.

    python benchmarks/bench_backtest.py                 # etf17_quantfiction, 17 ETFs, 2008-2018
    python benchmarks/bench_backtest.py --rounds 5 --data ../shared/data/etf24_portopt
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
from time import perf_counter

import backtrader as bt
import pandas as pd

from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from strategies.sma_crossover import SmaCrossover, SmaCrossoverSignals

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "etf17_quantfiction"
CONFIGS = ROOT / "configs"


def run_once(frames: dict[str, pd.DataFrame], strategy: type, **params: object) -> float:
    """Wall time of one backtest."""
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, frames)
    cerebro.broker.setcash(1_000_000)
    cerebro.addstrategy(strategy, **params)
    gc.collect()
    started = perf_counter()
    cerebro.run()
    return perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of ticker CSVs")
    parser.add_argument("--end", default="2018-03-01", help="last date (ragged ends clipped)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(
            f"{args.data} is absent: this benchmark needs ../shared/data beside the project."
        )
    frames = load_universe(args.data, end=args.end)
    bars = len(next(iter(frames.values())))
    variants = {
        "without mixin": (SmaCrossoverSignals, {}),
        "mixin, off": (SmaCrossover, {"protection": str(CONFIGS / "off.yaml")}),
        "mixin, balanced": (SmaCrossover, {"protection": str(CONFIGS / "balanced.yaml")}),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (strategy, params) in variants.items():
            times[name].append(run_once(frames, strategy, **params))
    base = min(times["without mixin"])
    print(
        f"sma_crossover on {args.data.name}: {len(frames)} feeds x {bars} bars, "
        f"best of {args.rounds}"
    )
    for name, runs in times.items():
        best = min(runs)
        print(f"  {name:<16} {best:7.3f} s   ratio {best / base:5.3f}")


if __name__ == "__main__":
    main()
