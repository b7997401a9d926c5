"""The output folder of `run`, `compare` and `tune`: where it goes by default and how it is
written.

Every command writes into `<out>.partial/` and `install`s it in place of `<out>` only once it
is complete (an earlier `<out>` goes only then). A run that fails is kept as `<out>.failed/`
with a status.json naming the error. `<out>` may be absent, empty, or an earlier folder of the
same kind (its marker file readable); anything else is refused before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from bt_protection.errors import UserError
from bt_protection.strategies_registry import StrategySource, strategy_name

RUNS = Path("runs")
JSON_DIGITS = 10


class Kind(StrEnum):
    """What a folder holds; the value is the prefix of its default name (none for a run)."""

    RUN = "run"
    COMPARE = "compare"
    TUNE = "tune"


# each kind's marker file, how errors describe it, and what the folder is called in them
_MARKERS = {
    Kind.RUN: ("status.json", "status.json", "run"),
    Kind.COMPARE: ("comparison.json", "readable comparison.json", "comparison"),
    Kind.TUNE: ("fingerprint.json", "fingerprint.json of a tune", "tune"),
}


def default_out(kind: Kind, strategy: StrategySource, qualifier: str | None = None) -> Path:
    """`runs/[<kind>-]<strategy>[-<qualifier>]`: a run is qualified by its profile's name
    (`runs/sma_crossover-balanced`), a comparison or tune by the name of the data folder it
    was given (`runs/compare-sma_crossover-etf17`; none: `runs/tune-sma_crossover`). A
    strategy given as a class or spec is named by its class name."""
    parts = [] if kind is Kind.RUN else [kind.value]
    parts.append(strategy_name(strategy))
    if qualifier:
        parts.append(qualifier)
    return RUNS / "-".join(parts)


def data_qualifier(data: str | os.PathLike[str] | None) -> str | None:
    """The name of the data folder `data` (None when not given), for `default_out`."""
    return Path(data).resolve().name if data is not None else None


@dataclass(frozen=True)
class OutputFolder:
    """The transaction that writes the folder `out` of a `kind`."""

    out: Path
    kind: Kind

    @property
    def partial(self) -> Path:
        return self._beside(".partial")

    @property
    def failed(self) -> Path:
        return self._beside(".failed")

    def _beside(self, suffix: str) -> Path:
        folder = self.out if self.out.name else self.out.resolve()  # `.` has no name
        return folder.with_name(folder.name + suffix)

    def check(self) -> None:
        """UserError unless `out` is absent, empty or a folder of this kind."""
        marker, described, noun = _MARKERS[self.kind]
        out = self.out
        if not out.exists():
            return
        if not out.is_dir():
            raise UserError(f"`out` {out} is a file; choose a folder for the {noun}.")
        if read_json(out / marker) is None and any(out.iterdir()):
            raise UserError(
                f"`out` {out} exists and is not a {noun} folder (no {described}); choose "
                "another folder or remove it."
            )

    def begin(self, resume: bool = False) -> Path:
        """Create `<out>.partial/` (emptied first unless `resume`) and return it."""
        if not resume:
            shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def install(self) -> None:
        """Put the complete partial folder in place of `out`; an earlier `out` goes only now,
        and a `<out>.failed/` of an earlier attempt with it."""
        out = self._beside("")
        old = self._beside(".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        self.partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.failed, ignore_errors=True)

    def fail(self, error: str) -> Path:
        """Keep the partial folder as `<out>.failed/`, its status.json naming `error`."""
        write_json(self.partial / "status.json", {"status": "failed", "error": error})
        shutil.rmtree(self.failed, ignore_errors=True)
        self.partial.rename(self.failed)
        return self.failed


def read_json(file: Path) -> dict[str, Any] | None:
    """The JSON object in `file`; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{JSON_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as sorted, indented JSON (floats to 10 significant digits, NaN as null)."""
    text = json.dumps(_rounded(data), sort_keys=True, indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
