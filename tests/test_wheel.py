"""A non-editable install works away from the checkout (issue 18, docs/decisions.md).

The wheel is built from a copy of the package's sources, installed (alone, `--no-deps`) into a
fresh virtual environment that sees this environment's dependencies through a `.pth` file, and
driven from an empty folder that holds a user's own `strategies` package: `compare` with two
shipped profiles by name, `run` on the shipped sample, and `import strategies` gives the user's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

SOURCES = ("pyproject.toml", "README.md", "bt_protection")
WINDOW = ("--start", "2019-01-01", "--end", "2019-12-31")


def _call(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` folder of a fresh virtual environment holding only the built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    wheels = root / "dist"
    _call(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        wheels,
        source,
        cwd=root,
    )
    environment = root / "venv"
    venv.create(environment, with_pip=False)
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(environment), "platbase": str(environment)})
    )
    # this environment's dependencies (backtrader, pandas, ...), after the venv's own packages
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (wheel,) = wheels.glob("bt_protection-*.whl")
    _call(
        sys.executable,
        "-m",
        "pip",
        "--python",
        environment / "bin" / "python",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=root,
    )
    return environment / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty folder far from the checkout, with the user's own `strategies` package."""
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "__init__.py").write_text('OWNER = "the user"\n')
    return tmp_path


def test_the_wheel_ships_no_top_level_strategies_and_its_data(installed: Path) -> None:
    python = installed / "python"
    probe = (
        "import bt_protection, importlib.util, json, pathlib; "
        "from bt_protection.shipped import PROFILES, SAMPLE_DATA; "
        "print(json.dumps([bt_protection.__file__, importlib.util.find_spec('strategies') is None,"
        " sorted(p.name for p in PROFILES.glob('*.yaml')), len(list(SAMPLE_DATA.glob('*.csv')))]))"
    )
    where, no_strategies, profiles, csvs = json.loads(
        _call(python, "-c", probe, cwd=installed).stdout
    )
    assert Path(where).is_relative_to(installed.parent)  # not the checkout
    assert no_strategies
    assert "balanced.yaml" in profiles and csvs == 6


def test_compare_and_run_work_from_an_empty_folder(installed: Path, elsewhere: Path) -> None:
    cli = installed / "bt-protection"
    _call(cli, "compare", "--profiles", "off", "balanced", *WINDOW, cwd=elsewhere)
    comparison = elsewhere / "runs" / "compare-momentum_rotation"
    table = (comparison / "comparison.csv").read_text()
    assert [line.split(",")[0] for line in table.splitlines()[1:]] == ["off", "balanced"]
    manifest = json.loads((comparison / "comparison.json").read_text())
    assert [run["status"] for run in manifest["runs"]] == ["complete", "complete"]

    _call(
        cli, "run", "--strategy", "sma_crossover", "--profile", "balanced", *WINDOW, cwd=elsewhere
    )
    summary = json.loads(
        (elsewhere / "runs" / "sma_crossover-balanced" / "summary.json").read_text()
    )
    assert summary["data"] == ["AAPL", "AMZN", "GOOG", "META", "NFLX", "NVDA"]
    assert summary["orders_attempted"] > 0

    owner = _call(
        installed / "python", "-c", "import strategies; print(strategies.OWNER)", cwd=elsewhere
    )
    assert owner.stdout.strip() == "the user"
