"""backtrader overhead of the protection layer (README "Performance", issue 8).

The same strategy (`sma_crossover`) on the first 1, 5 and all feeds of a real set, run side by
side in one process: without the mixin, with the mixin and the `off` profile, with `balanced`,
and with `balanced` asking again every bar after a denial (`retry_every=1`: the most decisions
per bar a denial can cause). One more variant has no mixin but the `RegimeIndicator` that
`balanced` needs (on the composite index beyond one feed): the part of `balanced`'s cost that
is backtrader running the indicator, before any protection work. Rounds are interleaved, each
starting with another variant, so that machine noise hits every variant alike; the best round
of each is compared with the best plain run of the same size.

    python benchmarks/bench_backtest.py                 # etf17_quantfiction, 2008-2018
    python benchmarks/bench_backtest.py --rounds 7 --sizes 1 17
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
from bt_protection.integration.regime import CompositeIndex, RegimeIndicator
from bt_protection.profile import load_profile
from bt_protection.strategies.sma_crossover import SmaCrossover, SmaCrossoverSignals

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "etf17_quantfiction"


BALANCED_REGIME = load_profile("balanced").regime


class SignalsWithRegime(SmaCrossoverSignals):
    """No protection; only the regime indicator `balanced` would build, on the same prices."""

    def __init__(self) -> None:
        super().__init__()
        watched = self.datas[0] if len(self.datas) == 1 else CompositeIndex(*self.datas)
        self.regime = RegimeIndicator.from_config(watched, BALANCED_REGIME)


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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 17], help="feed counts")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(
            f"{args.data} is absent: this benchmark needs ../shared/data beside the project."
        )
    universe = load_universe(args.data, end=args.end)
    off, balanced = "off", "balanced"
    variants = {
        "without mixin": (SmaCrossoverSignals, {}),
        "no mixin, regime only": (SignalsWithRegime, {}),
        "mixin, off": (SmaCrossover, {"protection": off}),
        "mixin, balanced": (SmaCrossover, {"protection": balanced}),
        "balanced, ask every bar": (SmaCrossover, {"protection": balanced, "retry_every": 1}),
    }
    bars = len(next(iter(universe.values())))
    print(f"sma_crossover on {args.data.name}, {bars} bars, best of {args.rounds} rounds")
    print(f"  {'feeds':>5}  {'variant':<24} {'seconds':>8} {'ratio':>6} {'us/bar':>7}")
    for size in args.sizes:
        frames = {t: universe[t] for t in sorted(universe)[:size]}
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):  # each round starts with another variant: no position bias
            for name in names[r % len(names) :] + names[: r % len(names)]:
                strategy, params = variants[name]
                times[name].append(run_once(frames, strategy, **params))
        base = min(times["without mixin"])
        for name, runs in times.items():
            best = min(runs)
            extra = (best - base) / bars * 1e6  # added cost per bar, all feeds together
            print(f"  {len(frames):>5}  {name:<24} {best:8.3f} {best / base:6.3f} {extra:+7.1f}")


if __name__ == "__main__":
    main()
