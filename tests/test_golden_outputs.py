"""Golden outputs: `run`, `compare` and `tune` give the same decisions, audits, orders and
tables as the digests stored in tests/golden/digests.json (wall-clock fields aside).

The cases are cut to a few years so the whole file runs in seconds; they use only the off,
conservative, balanced and portfolio_guard profiles (changes to the adaptive or aggressive
profiles do not move them). A change that is meant to change these outputs regenerates the
digests, and the diff of digests.json shows which files moved:

    python tests/test_golden_outputs.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import PROJECT_ROOT, SAMPLE_DATA

from bt_protection.audit import read_audit
from bt_protection.cli import main

DIGESTS = Path(__file__).resolve().parent / "golden" / "digests.json"
ETF17 = PROJECT_ROOT / "data" / "etf17"
SAMPLE_WINDOW = ["--start", "2019-01-01", "--end", "2020-12-31"]
ETF_WINDOW = ["--data", str(ETF17), "--regime-data", "SPY", "--start", "2007-01-01",
              "--end", "2009-12-31"]  # fmt: skip
SPACE = {
    "protections.holding_period.min_hold": ["5 bars", "20 bars"],
    "protections.whipsaw_protection.enabled": [True, False],
}
CASES: dict[str, list[str]] = {
    # the default comparison (momentum_rotation on the shipped sample), stable profiles only
    "compare-sample": ["compare", "--profiles", "off", "conservative", "balanced",
                       "portfolio_guard", *SAMPLE_WINDOW, "--jobs", "1", "--no-report"],
    "compare-etf17": ["compare", "--strategy", "sma_crossover", "--profiles", "off", "balanced",
                      "portfolio_guard", *ETF_WINDOW, "--jobs", "1", "--no-report"],
    "run-etf17": ["run", "--strategy", "sma_crossover", "--profile", "balanced", *ETF_WINDOW],
    "tune-sample": ["tune", "--strategy", "sma_crossover", "--space", "{space}", "--data",
                    str(SAMPLE_DATA), "--tickers", "AAPL", "NVDA", "--start", "2018-01-01",
                    "--end", "2020-12-31", "--train", "1y", "--test", "6m", "--warmup", "60",
                    "--jobs", "1", "--no-report"],
}  # fmt: skip
# what is digested of each output folder (the chart and report are pictures, the tune's
# trial store a database: they are left out)
DIGESTED = (
    "audit.jsonl",
    "orders.csv",
    "trades.csv",
    "equity.csv",
    "summary.json",
    "comparison.csv",
    "attribution.csv",
    "attribution_summary.csv",
    "folds.csv",
    "trials.csv",
    "oos_equity.csv",
    "verdict.json",
    "recommended.yaml",
)


def normalised(file: Path) -> bytes:
    """The file's bytes; an audit's records without their `wall` fields."""
    if file.name != "audit.jsonl":
        return file.read_bytes()
    records = read_audit(file, drop_wall=True)
    return b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in records)


def produce(case: str, folder: Path) -> dict[str, str]:
    """Run `case` through the CLI into `folder/out`; sha256 of each digested file by path."""
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    out = folder / "out"
    argv = [arg.format(space=space) for arg in CASES[case]]
    assert main([*argv, "--out", str(out)]) == 0
    return {
        str(file.relative_to(out)): hashlib.sha256(normalised(file)).hexdigest()
        for file in sorted(out.rglob("*"))
        if file.name in DIGESTED
    }


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_match_the_golden_digests(case: str, tmp_path: Path) -> None:
    if "etf17" in case and not ETF17.is_dir():
        pytest.skip(f"needs {ETF17}, which is absent here")
    expected = json.loads(DIGESTS.read_text(encoding="utf-8"))[case]
    found = produce(case, tmp_path)
    assert sorted(found) == sorted(expected)  # the same files
    changed = [name for name in expected if found[name] != expected[name]]
    assert changed == [], f"{case}: these outputs changed: {', '.join(changed)}"


def write_digests(root: Path) -> None:
    """Regenerate digests.json (every case, run in folders under `root`)."""
    digests = {case: produce(case, root / case) for case in CASES}
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden_outputs.py --write")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            (Path(tmp) / name).mkdir()
        write_digests(Path(tmp))
    print(f"wrote {DIGESTS}")
