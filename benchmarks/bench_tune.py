"""Trials per minute of a fixed small tune on 1 and 2 local workers and on a 2-worker Dask
cluster, and the scheduling overhead per trial of each engine.

The tune: momentum_rotation on the shipped sample (six stocks) from 2014 to 2021, four candidates
(holding period 10 or 40 bars, grace period on or off), train 2y, test 1y, 252 days of warm-up:
5 folds, 45 backtests. Each setting runs into a fresh folder (nothing reused); the best of
`--repeat` rounds counts. The Dask cluster is a `LocalCluster` of 2 worker processes with one
thread each, started by the benchmark. Overhead: the wall time per task of 400 jobs that end at
once (they get no price data, so `run_job` returns their error right after resolving the
strategy and profile), sent through the same engine (the worker pool or the cluster already
started).
Targets (issue 11): 2 workers at least 1.7x one; Dask within 10% of local processes;
overhead under 50 ms a trial. Run from the project root:

    python benchmarks/bench_tune.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from distributed import LocalCluster

from bt_protection.engine import Engine, Execution, Task
from bt_protection.job import RunSpec
from bt_protection.tune import walk_forward
from bt_protection.tune.store import STORE_NAME

SPACE = {
    "protections.holding_period.min_hold": ["10 bars", "40 bars"],
    "protections.grace_period.enabled": [True, False],
}
TUNE = {
    "data": "sample",
    "start": "2014-01-01",
    "end": "2021-12-31",
    "train": "2y",
    "test": "1y",
    "timing_shifts": 0,  # the 45 backtests above, as measured before the timing test existed
    "progress": False,
}
NOOP_TASKS = 400


def timed_tune(
    out: Path, jobs: int | None = None, scheduler: str | None = None
) -> tuple[float, int]:
    """Seconds of one tune into `out`, and how many trials it ran."""
    start = time.perf_counter()
    walk_forward("momentum_rotation", SPACE, jobs=jobs, scheduler=scheduler, out=out, **TUNE)
    seconds = time.perf_counter() - start
    with sqlite3.connect(out / STORE_NAME) as db:
        trials = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    return seconds, trials


def overhead_ms(jobs: int | None = None, scheduler: str | None = None) -> float:
    """Milliseconds per task of `NOOP_TASKS` empty tasks through an engine (after a warm-up
    round that starts its workers)."""
    spec = RunSpec("sma_crossover", {"name": "off", "description": "No protection."})
    tasks = [Task(f"noop-{i}", spec) for i in range(NOOP_TASKS)]
    with Engine({}, Execution(jobs, scheduler), spec.strategy) as engine:
        list(engine.run(tasks[:4]))
        start = time.perf_counter()
        list(engine.run(tasks))
        return (time.perf_counter() - start) / NOOP_TASKS * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="rounds per setting; best counts")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        settings = {
            "1 local worker": {"jobs": 1},
            "2 local workers": {"jobs": 2},
            "Dask, 2 workers": {"scheduler": cluster.scheduler_address},
        }
        best: dict[str, float] = dict.fromkeys(settings, float("inf"))
        trials = 0
        for round_ in range(args.repeat):
            for name, keywords in settings.items():
                out = Path(folder) / f"{name.replace(' ', '-')}-{round_}"
                seconds, trials = timed_tune(out, **keywords)
                best[name] = min(best[name], seconds)
                print(f"round {round_ + 1}: {name}: {seconds:.2f} s")
        rate = {name: trials / seconds * 60 for name, seconds in best.items()}
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"\ntune of {trials} trials, {os.cpu_count()} CPUs (load average now {load}: other "
            f"processes on the machine slow the parallel settings most), best of {args.repeat}:"
        )
        for name in settings:
            print(f"  {name}: {best[name]:.2f} s, {rate[name]:.0f} trials/minute")
        print(
            f"  2 workers vs 1: {rate['2 local workers'] / rate['1 local worker']:.2f}x "
            "(target >= 1.7x)"
        )
        print(
            f"  Dask vs 2 local workers: {rate['Dask, 2 workers'] / rate['2 local workers']:.2f}x "
            "(target >= 0.90x)"
        )
        print("wall time per empty job (target: scheduling overhead < 50 ms):")
        print(f"  this process (no scheduling): {overhead_ms(jobs=1):.2f} ms")
        print(f"  2 local workers: {overhead_ms(jobs=2):.2f} ms")
        print(f"  Dask, 2 workers: {overhead_ms(scheduler=cluster.scheduler_address):.2f} ms")


if __name__ == "__main__":
    main()
