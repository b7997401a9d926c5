"""What the package ships beside its code, found next to it (a wheel needs no checkout): the
profiles (`profiles/*.yaml`), the tune example spaces (`profiles/spaces/*.yaml`) and the sample
prices (`sample/`). Each loads by its name; a path that exists always wins over a name.
"""

from __future__ import annotations

import os
from pathlib import Path

from bt_protection.errors import ProfileError

PACKAGE = Path(__file__).resolve().parent
PROFILES = PACKAGE / "profiles"
SPACES = PROFILES / "spaces"
SAMPLE_DATA = PACKAGE / "sample"
SAMPLE_NAME = "sample"


def names(folder: Path) -> list[str]:
    """The shipped YAML files of `folder` by name (file name without `.yaml`), sorted."""
    return sorted(path.stem for path in folder.glob("*.yaml"))


def is_name(source: str | os.PathLike[str]) -> bool:
    """Whether `source` is a bare name (no folder, no suffix), as `balanced` or `example`."""
    text = os.fspath(source)
    return bool(text) and Path(text).name == text and not Path(text).suffix


def shipped_file(source: str | os.PathLike[str], folder: Path, kind: str) -> str:
    """The file `source` names: itself when it exists or is not a bare name, else the shipped
    `folder/<source>.yaml`. A bare name that is neither raises `ProfileError` listing the shipped
    names; any other missing path is returned as given (its reader reports it)."""
    text = os.fspath(source)
    if not is_name(text) or Path(text).exists():
        return text
    found = folder / f"{text}.yaml"
    if found.is_file():
        return str(found)
    raise ProfileError(
        f"{text}: no such file, and no shipped {kind} has that name; shipped {kind}s: "
        f"{', '.join(names(folder))}."
    )


def price_folder(source: str | os.PathLike[str]) -> Path:
    """The price folder `source` names: itself when it exists or is not `sample`, else the
    shipped sample."""
    text = os.fspath(source)
    return SAMPLE_DATA if text == SAMPLE_NAME and not Path(text).exists() else Path(text)
