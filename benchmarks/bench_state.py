"""Cost of saving the protection state once per bar (issue 19, docs/live.md).

An orchestrator under `balanced` and `portfolio_guard` gets N assets with open positions, lots,
closed round trips and portfolio values, then its state is saved to a state file as the mixin
does at the end of each bar (`state()`, the encoding and one SQLite transaction), a new
portfolio value (a new bar) before each save. The median and p90 of the saves are printed for
17 and 1,000 assets.

    python benchmarks/bench_state.py
    python benchmarks/bench_state.py --sizes 17 1000 --saves 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from time import perf_counter

from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile
from bt_protection.state import StateFile, dumps

START = datetime(2020, 1, 1)


def loaded(profile: str, assets: list[str]) -> ProtectionOrchestrator:
    """An orchestrator whose systems hold state for every asset: a round trip, then a position."""
    orch = ProtectionOrchestrator(load_profile(profile))
    for bar in range(40):
        when = START + timedelta(days=bar)
        orch.on_portfolio(when, 100_000.0 + 500 * ((bar % 7) - 3), bar=bar)
        for i, asset in enumerate(assets):
            if bar == 1 + i % 5:
                orch.on_fill(asset, when, 0.0, 10.0, bar=bar, price=100.0)
            elif bar == 20 + i % 5:
                orch.on_fill(asset, when, 10.0, 0.0, bar=bar, price=101.0)
            elif bar == 30 + i % 5:
                orch.on_fill(asset, when, 0.0, 5.0 + i % 3, bar=bar, price=99.0)
    return orch


def measure(profile: str, size: int, saves: int, folder: Path) -> tuple[float, float, int]:
    """(median ms, p90 ms, state bytes) of `saves` saves of a state of `size` assets."""
    assets = [f"A{i:04d}" for i in range(size)]
    orch = loaded(profile, assets)
    store = StateFile.open(folder / f"{profile}-{size}.db", orch.profile, assets)
    times = []
    for bar in range(40, 40 + saves):
        # a new bar: the portfolio's value moves the clock and the systems that follow it, so
        # each save writes a changed state (an unchanged one would not be written again)
        when = START + timedelta(days=bar)
        orch.on_portfolio(when, 100_000.0 + 500 * ((bar % 7) - 3), bar=bar)
        started = perf_counter()
        store.save({"orchestrator": orch.state(), "bar": (when, bar), "attempts": 0})
        times.append((perf_counter() - started) * 1000)
    store.close()
    times.sort()
    nbytes = len(dumps({"orchestrator": orch.state(), "bar": (START, 0), "attempts": 0}))
    return statistics.median(times), times[int(len(times) * 0.9)], nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[17, 1000])
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("profile          assets  median ms  p90 ms  state KB")
        for profile in ("balanced", "portfolio_guard"):
            for size in args.sizes:
                median, p90, nbytes = measure(profile, size, args.saves, Path(tmp))
                print(f"{profile:<16} {size:>6}  {median:>9.3f}  {p90:>6.3f}  {nbytes / 1e3:>8.1f}")


if __name__ == "__main__":
    main()
