"""Install a local distribution folder for a test the way pip would, as far as
`importlib.metadata` can tell: its packages plus a `<name>-<version>.dist-info` folder with
METADATA and `entry_points.txt` written from the folder's own pyproject.toml.

Why not `pip install --no-build-isolation --target`: that needs a build backend able to make a
wheel in the test environment (setuptools 65 of a fresh 3.11 venv cannot without `wheel`, a 3.12
venv has no setuptools at all), and with build isolation pip would fetch one from PyPI. Entry
points are found through the dist-info either way, which is the path under test.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path


def install(source: Path, site: Path) -> str:
    """Copy the packages of `source` (a folder with pyproject.toml) into `site` and write their
    dist-info; returns the distribution name."""
    project_file = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    project = project_file["project"]
    site.mkdir(parents=True, exist_ok=True)
    for package in project_file["tool"]["setuptools"]["packages"]:
        shutil.copytree(
            source / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    return str(name)


def environment(site: Path) -> dict[str, str]:
    """This process's environment with `site` first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}
