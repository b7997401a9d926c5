"""backtrader overhead of the protection layer (README "Performance", issue 8 and 17).

The same strategy (`sma_crossover`) on the first 1, 5 and all 17 feeds of a real set, run side
by side in one process, five variants:

- `without mixin`: `SmaCrossoverSignals`, plain backtrader (the base of every ratio);
- `no mixin, regime only`: the same with the regime label `balanced` follows worked out every
  bar, and no protection: the `ClockRegime` the mixin builds (the profile's `regime:` block, on
  the feeds the mixin would watch, updated once a bar on the strategy's clock), nothing else;
- `mixin, off`: `SmaCrossover` with the `off` profile;
- `mixin, balanced`: `SmaCrossover` with `balanced` (its denials wait `retry_every=5` bars);
- `balanced, ask every bar`: the same asking again every bar after a denial (`retry_every=1`:
  the most decisions per bar a denial can cause).

Times are CPU time (on a shared machine, wall time also counts the waits for a core). Rounds
are interleaved, each starting with another variant, so that machine noise hits every variant
alike; the best round of each is compared with the best plain run of the same size ("ratio"),
and with the regime-only variant ("above regime": the ratio minus regime only's ratio: the cost
of the protection itself). Targets (SPEC 13): `off` at most 1.05, `balanced` at most 0.05
above regime only, asking every bar at most 0.10 above it. "paired" is the same difference
taken within each round (the variant minus regime only, over that round's plain run) and
the median over rounds: on a loaded machine the best runs of two variants may come from
quiet and busy moments, while the runs of one round share the load of the moment.

With `--calls`, one more run of each variant under cProfile counts its Python function calls
(the same on a quiet or a loaded machine): calls a bar, and above regime only. The load average
is printed before and after: quote it with the figures.

After the rounds, three more runs asking every bar time each `buy` / `sell` call the protection
denies, from the call to its return (the thread's CPU time): the request, the decision, the
`Rejected` order and its queued notification (target: at most 15 us a denied order; the run
with the lowest median is shown). The plain bar's cost is printed beside it: on a loaded
machine both grow.

    python benchmarks/bench_backtest.py                 # etf17_quantfiction, 2008-2018
    python benchmarks/bench_backtest.py --rounds 7 --sizes 1 17
    python benchmarks/bench_backtest.py --rounds 9 --sizes 1 --calls
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
from pathlib import Path
from statistics import median
from time import process_time, thread_time_ns
from typing import Any

import backtrader as bt
import pandas as pd

from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.regime import ClockRegime
from bt_protection.profile import load_profile
from bt_protection.strategies.sma_crossover import SmaCrossover, SmaCrossoverSignals

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "etf17_quantfiction"


BALANCED_REGIME = load_profile("balanced").regime


class SignalsWithRegime(SmaCrossoverSignals):
    """No protection; only the regime label `balanced` follows, worked out once a bar as the
    mixin does it (`ClockRegime` on every feed, the composite beyond one)."""

    def start(self) -> None:
        markets = {d._name: d for d in self.datas}
        self.market = ClockRegime(list(self.datas), BALANCED_REGIME, markets)

    def prenext(self) -> None:
        self.market.update()

    def next(self) -> None:
        self.market.update()
        super().next()


class DenialsTimed(SmaCrossover):
    """`SmaCrossover` timing each order call that comes back denied."""

    def __init__(self) -> None:
        super().__init__()
        self.denied_ns: list[int] = []

    def buy(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().buy, args, kwargs)

    def sell(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().sell, args, kwargs)

    def _timed(self, call: Any, args: Any, kwargs: Any) -> Any:
        started = thread_time_ns()
        order = call(*args, **kwargs)
        took = thread_time_ns() - started
        if order is not None and order.status == order.Rejected:
            self.denied_ns.append(took)
        return order


def run_once(frames: dict[str, pd.DataFrame], strategy: type, **params: object) -> Any:
    """CPU time of one backtest, and its strategy."""
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, frames)
    cerebro.broker.setcash(1_000_000)
    cerebro.addstrategy(strategy, **params)
    gc.collect()
    started = process_time()
    strat = cerebro.run()[0]
    return process_time() - started, strat


def call_count(frames: dict[str, pd.DataFrame], strategy: type, **params: object) -> int:
    """Python function calls of one backtest (cProfile's count: the same under any load)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_once(frames, strategy, **params)
    finally:
        profiler.disable()
    return int(pstats.Stats(profiler).total_calls)  # type: ignore[attr-defined]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _paired(times: dict[str, list[float]]) -> dict[str, float]:
    """Each variant above regime only, round by round (both over the same round's plain run),
    the median over rounds: runs of one round share the machine's load of the moment."""
    plain, regime = times["without mixin"], times["no mixin, regime only"]
    return {
        name: median((t - r) / p for t, r, p in zip(runs, regime, plain, strict=True))
        for name, runs in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of ticker CSVs")
    parser.add_argument("--end", default="2018-03-01", help="last date (ragged ends clipped)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 17], help="feed counts")
    parser.add_argument(
        "--calls", action="store_true", help="also count each variant's Python calls a bar"
    )
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(
            f"{args.data} is absent: this benchmark needs ../shared/data beside the project."
        )
    universe = load_universe(args.data, end=args.end)
    off, balanced = "off", "balanced"
    variants: dict[str, tuple[type, dict[str, object]]] = {
        "without mixin": (SmaCrossoverSignals, {}),
        "no mixin, regime only": (SignalsWithRegime, {}),
        "mixin, off": (SmaCrossover, {"protection": off}),
        "mixin, balanced": (SmaCrossover, {"protection": balanced}),
        "balanced, ask every bar": (SmaCrossover, {"protection": balanced, "retry_every": 1}),
    }
    timed = {"protection": balanced, "retry_every": 1}
    bars = len(next(iter(universe.values())))
    rounds = f"best of {args.rounds} rounds"
    print(f"sma_crossover on {args.data.name}, {bars} bars, {rounds}; {_load()}")
    print(
        "  ratio: best run over the best plain run; above regime: ratio minus regime only's;\n"
        "  us/bar: CPU added a bar over plain; paired: (variant - regime only) / plain within\n"
        "  each round, median over rounds (targets: off ratio <= 1.05, balanced above regime\n"
        "  <= +0.05, ask every bar <= +0.10)"
    )
    head = f"{'cpu s':>8} {'ratio':>6} {'above regime':>12} {'us/bar':>7} {'paired':>7}"
    if args.calls:
        head += f" {'calls/bar':>9} {'above regime':>12}"
    print(f"  {'feeds':>5}  {'variant':<24} {head}")
    for size in args.sizes:
        frames = {t: universe[t] for t in sorted(universe)[:size]}
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):  # each round starts with another variant: no position bias
            for name in names[r % len(names) :] + names[: r % len(names)]:
                strategy, params = variants[name]
                times[name].append(run_once(frames, strategy, **params)[0])
        base = min(times["without mixin"])
        regime = min(times["no mixin, regime only"]) / base
        paired = _paired(times)
        calls = {
            name: call_count(frames, strategy, **params) / bars if args.calls else 0.0
            for name, (strategy, params) in variants.items()
        }
        for name, runs in times.items():
            best = min(runs)
            extra = (best - base) / bars * 1e6  # added cost per bar, all feeds together
            figures = f"{best:8.3f} {best / base:6.3f} {best / base - regime:+12.3f}"
            figures += f" {extra:+7.1f} {paired[name]:+7.3f}"
            if args.calls:
                above = calls[name] - calls["no mixin, regime only"]
                figures += f" {calls[name]:9.1f} {above:+12.1f}"
            print(f"  {len(frames):>5}  {name:<24} {figures}")
        denied = min(  # the quietest of three timed runs: preemption hits single calls
            (sorted(run_once(frames, DenialsTimed, **timed)[1].denied_ns) for _ in range(3)),
            key=lambda ns: ns[len(ns) // 2],
        )
        median, mean = denied[len(denied) // 2] / 1e3, sum(denied) / len(denied) / 1e3
        plain = base / bars * 1e6
        print(
            f"  {len(frames):>5}  a denied order: median {median:.1f} us, mean {mean:.1f} us "
            f"({len(denied)} denials, the best of 3 runs); a plain bar {plain:.0f} us "
            f"(a denial costs {median / plain:.2f} plain bars)"
        )
    print(f"done; {_load()}")


if __name__ == "__main__":
    main()
