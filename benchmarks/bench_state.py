"""Cost of saving the protection state once per bar (issue 19, docs/live.md).

An orchestrator under `balanced` and `portfolio_guard` gets N assets with open positions, lots,
closed round trips and portfolio values, then its state is saved to a state file as the mixin
does at the end of each bar (`state_rows`, the encoding of what changed and one SQLite
transaction). Before each save a new bar moves it: a new portfolio value (the portfolio-level
parts change) and fills of `--touched` assets (a realistic bar: a few orders fill), or, in the
worst case, fills of every asset. The median and p90 of the saves are printed for 17 and
1,000 assets.

    python benchmarks/bench_state.py
    python benchmarks/bench_state.py --sizes 17 1000 --saves 300 --touched 3
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


def measure(
    profile: str, size: int, saves: int, touched: int | None, folder: Path
) -> tuple[float, float, int]:
    """(median ms, p90 ms, state bytes) of `saves` saves of a state of `size` assets, each
    after a bar whose fills touched `touched` assets (None: all of them)."""
    assets = [f"A{i:04d}" for i in range(size)]
    orch = loaded(profile, assets)
    name = f"{profile}-{size}-{touched}.db"
    store = StateFile.open(folder / name, orch.profile, assets)
    save(store, orch, START, 0)  # the first save writes every asset
    times = []
    count = size if touched is None else touched
    for bar in range(40, 40 + saves):
        when = START + timedelta(days=bar)
        orch.on_portfolio(when, 100_000.0 + 500 * ((bar % 7) - 3), bar=bar)
        for k in range(count):  # the next assets in turn buy or sell a unit (5 <-> 4 ...)
            asset = assets[(bar * count + k) % size]
            held = orch.position(asset)
            after = held - 1.0 if held % 2 else held + 1.0
            orch.on_fill(asset, when, held, after, bar=bar, price=100.0 + bar % 5)
        started = perf_counter()
        save(store, orch, when, bar)
        times.append((perf_counter() - started) * 1000)
    store.close()
    times.sort()
    nbytes = len(dumps({"orchestrator": orch.state(), "bar": (START, 0), "attempts": 0}))
    return statistics.median(times), times[int(len(times) * 0.9)], nbytes


def save(store: StateFile, orch: ProtectionOrchestrator, when: datetime, bar: int) -> None:
    """What the mixin's save at the end of a bar does."""
    rows = orch.state_rows("orchestrator")
    rows.parts["bar"] = (when, bar)
    rows.parts["attempts"] = 0
    store.save(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[17, 1000])
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--touched", type=int, default=3, help="assets a realistic bar fills")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"ms per save; a bar touches {args.touched} assets (realistic) or all (worst case)")
        print("profile          assets  median ms  p90 ms  worst median ms  p90 ms  state KB")
        for profile in ("balanced", "portfolio_guard"):
            for size in args.sizes:
                median, p90, nbytes = measure(profile, size, args.saves, args.touched, Path(tmp))
                worst = measure(profile, size, max(args.saves // 4, 10), None, Path(tmp))
                print(
                    f"{profile:<16} {size:>6}  {median:>9.3f}  {p90:>6.3f}  "
                    f"{worst[0]:>15.3f}  {worst[1]:>6.3f}  {nbytes / 1e3:>8.1f}"
                )


if __name__ == "__main__":
    main()
