"""Cost of `bt-protection paper` against the same backtest (issue 19: within 1.5x).

Over the shipped sample, for `sma_crossover` and `momentum_rotation` under `balanced` and
`portfolio_guard`: the CPU time of a paper run from a new state file to the end of the data
(the state, the paper broker and the changed order rows saved at the end of every bar, the
audit and orders.csv written), and of its saves, against that of the same backtest with the
audit (`run`'s engine) in three modes: backtrader's defaults (preloaded data, vectorised
indicators), preloaded with indicators bar by bar, and bar by bar as with a live feed (no
preload, no vectorised indicators). So the gap from the default mode to paper splits into
vectorised indicators (default -> preloaded), loading bars one by one (preloaded -> bar by
bar) and what paper adds (bar by bar -> paper: mostly the saves). The best of `--rounds` is
kept for each; rounds are interleaved so that machine noise hits all alike. Then the time of
resuming after a kill in the middle (the backfill runs again) is printed.

    python benchmarks/bench_paper.py
    python benchmarks/bench_paper.py --rounds 3 --strategies sma_crossover
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from time import process_time

from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.job import backtest
from bt_protection.paper import run_paper
from bt_protection.runner import RunSpec, plan_run


def cpu(action: Callable[..., object], *args: object) -> float:
    started = process_time()
    action(*args)
    return process_time() - started


MODES = {  # how `run` drives backtrader: (runonce, preload)
    "default": (True, True),  # backtrader's defaults: preloaded data, vectorised indicators
    "preloaded": (False, True),  # preloaded data, indicators bar by bar
    "bar by bar": (False, False),  # as with a live feed: no preload, no vectorised indicators
}


class SaveClock:
    """The CPU time spent in the mixin's saves (the state, the paper broker, the order rows)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        save = ProtectionMixin._protection_save

        def timed(strategy: ProtectionMixin, when: datetime, bar: int) -> None:
            started = process_time()
            save(strategy, when, bar)
            self.seconds += process_time() - started

        ProtectionMixin._protection_save = timed  # type: ignore[method-assign,assignment]


def measure(
    strategy: str, profile: str, rounds: int, folder: Path, saves: SaveClock
) -> dict[str, float]:
    """CPU seconds of the backtest in each of `MODES`, of the paper run and of its saves, best
    of `rounds` (interleaved)."""
    best: dict[str, float] = {}
    for n in range(rounds):
        out = folder / f"{strategy}-{profile}-{n}"
        for mode, (runonce, preload) in MODES.items():
            plan = plan_run(RunSpec(strategy, profile, runonce=runonce, preload=preload))
            seconds = cpu(backtest, plan, out / f"audit-{mode}.jsonl")
            best[mode] = min(best.get(mode, seconds), seconds)
        saves.seconds = 0.0
        seconds = cpu(run_paper, RunSpec(strategy, profile), out / "state.db", out / "paper", None)
        if seconds < best.get("paper", float("inf")):
            best["paper"], best["saves"] = seconds, saves.seconds
    return best


def resume_cost(strategy: str, profile: str, folder: Path) -> tuple[float, float]:
    """(first half, resumed second half) CPU seconds of a paper run stopped in the middle."""
    spec = RunSpec(strategy, profile)
    state, out = folder / f"half-{strategy}-{profile}.db", folder / f"half-{strategy}-{profile}"
    first = cpu(run_paper, spec, state, out, "2018-05-15")
    second = cpu(run_paper, spec, state, out, None)
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=["sma_crossover", "momentum_rotation"])
    parser.add_argument("--profiles", nargs="+", default=["balanced", "portfolio_guard"])
    args = parser.parse_args()
    saves = SaveClock()
    with tempfile.TemporaryDirectory() as tmp:
        print("CPU seconds, best of the rounds; backtests: `run`'s engine with the audit")
        print(
            "strategy           profile          default  preloaded  bar by bar  "
            "paper (saves)  paper/default  paper/bar by bar  resume: half, other half"
        )
        for strategy in args.strategies:
            for profile in args.profiles:
                best = measure(strategy, profile, args.rounds, Path(tmp), saves)
                first, second = resume_cost(strategy, profile, Path(tmp))
                paper = best["paper"]
                print(
                    f"{strategy:<18} {profile:<16} {best['default']:>7.2f}  "
                    f"{best['preloaded']:>9.2f}  {best['bar by bar']:>10.2f}  "
                    f"{paper:>5.2f} ({best['saves']:.2f})  {paper / best['default']:>13.2f}  "
                    f"{paper / best['bar by bar']:>16.2f}  {first:.2f}, {second:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
