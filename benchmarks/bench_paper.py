"""Cost of `bt-protection paper` against the same backtest (issue 19: within 1.5x).

Over the shipped sample, for `sma_crossover` and `momentum_rotation` under `balanced` and
`portfolio_guard`: the CPU time of a paper run from a new state file to the end of the data
(the state, the paper broker and the changed order rows saved at the end of every bar, the
audit and orders.csv written) against that of the same backtest with the audit (`run`'s engine,
once with backtrader's defaults, once bar by bar as a live feed runs: no preload, no
vectorised indicators). The best of `--rounds` is kept for each; rounds are interleaved so
that machine noise hits both alike. Then the time of resuming after a kill in the middle (the
backfill runs again) is printed.

    python benchmarks/bench_paper.py
    python benchmarks/bench_paper.py --rounds 3 --strategies sma_crossover
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import process_time

from bt_protection.job import backtest
from bt_protection.paper import run_paper
from bt_protection.runner import RunSpec, plan_run


def cpu(action: Callable[..., object], *args: object) -> float:
    started = process_time()
    action(*args)
    return process_time() - started


def measure(strategy: str, profile: str, rounds: int, folder: Path) -> tuple[float, float, float]:
    """(backtest, backtest bar by bar, paper) CPU seconds, best of `rounds`."""
    best = [float("inf")] * 3
    for n in range(rounds):
        out = folder / f"{strategy}-{profile}-{n}"
        for i, (runonce, preload) in enumerate(((True, True), (False, False))):
            spec = RunSpec(strategy, profile, runonce=runonce, preload=preload)
            plan = plan_run(spec)
            best[i] = min(best[i], cpu(backtest, plan, out / f"audit{i}.jsonl"))
        paper = RunSpec(strategy, profile)
        seconds = cpu(run_paper, paper, out / "state.db", out / "paper", None)
        best[2] = min(best[2], seconds)
    return best[0], best[1], best[2]


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
    with tempfile.TemporaryDirectory() as tmp:
        print(
            "strategy           profile          backtest s  bar by bar s  paper s  "
            "paper/backtest  paper/bar by bar  resume: half s, other half s"
        )
        for strategy in args.strategies:
            for profile in args.profiles:
                base, live, paper = measure(strategy, profile, args.rounds, Path(tmp))
                first, second = resume_cost(strategy, profile, Path(tmp))
                print(
                    f"{strategy:<18} {profile:<16} {base:>10.2f}  {live:>12.2f}  {paper:>7.2f}"
                    f"  {paper / base:>14.2f}  {paper / live:>16.2f}  "
                    f"{first:>6.2f}, {second:.2f}"
                )


if __name__ == "__main__":
    main()
