"""Wall time of the default comparison with one process and with worker processes, side by side.

The default comparison is `bt-protection compare` without flags: momentum_rotation under
the default profiles (`bt_protection.compare.DEFAULT_PROFILES`) on the shipped sample (2013-2023).
With five runs on two processes the best possible speed-up is 5/3 = 1.67x (three rounds of
runs instead of five), less when the runs differ in length. Each setting runs
`--repeat` times, alternating, and the best time counts; the first parallel round also starts
the worker server. Run from anywhere:

    python benchmarks/bench_compare.py [--jobs 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bt_protection.compare import DEFAULT_PROFILES, run_comparison


def timed(jobs: int, out: Path) -> float:
    """Seconds for one default comparison into `out` with `jobs` processes."""
    start = time.perf_counter()
    run_comparison(jobs=jobs, out=out, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes to compare (2)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per setting; best counts")
    args = parser.parse_args()
    best = {1: float("inf"), args.jobs: float("inf")}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.repeat):
            for jobs in best:
                seconds = timed(jobs, Path(folder) / f"jobs{jobs}")
                best[jobs] = min(best[jobs], seconds)
                print(f"round {round_ + 1}: --jobs {jobs}: {seconds:.2f} s")
    sequential, parallel = best[1], best[args.jobs]
    print(
        f"default comparison ({len(DEFAULT_PROFILES)} runs, {os.cpu_count()} CPUs), "
        f"best of {args.repeat}: "
        f"--jobs 1 {sequential:.2f} s, --jobs {args.jobs} {parallel:.2f} s, "
        f"speed-up {sequential / parallel:.2f}x"
    )


if __name__ == "__main__":
    main()
