"""The position ledger: the one record of positions, moved by fills, that the rules read."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any


class PositionLedger:
    """Positions as the fills reported them; `view` is a live read-only mapping of them."""

    def __init__(self) -> None:
        self._sizes: dict[str, float] = {}
        self.view = MappingProxyType(self._sizes)

    def get(self, asset: str) -> float:
        """The position of `asset` (0 when none was reported)."""
        return self._sizes.get(asset, 0.0)

    def check_fill(self, asset: Any, size_before: Any, size_after: Any) -> tuple[float, float]:
        """The fill's sizes as numbers, after checking it starts where the fills so far left
        `asset`."""
        if not isinstance(asset, str) or not asset:
            raise ValueError(f"asset must be a non-empty string, not {asset!r}.")
        before, after = float(size_before), float(size_after)
        if not (math.isfinite(before) and math.isfinite(after)):
            raise ValueError(f"fill sizes of {asset} must be finite, not {before} -> {after}.")
        if before == after:
            raise ValueError(
                f"fill of {asset} changes nothing: size_before and size_after are {before:g}."
            )
        known = self._sizes.get(asset)
        if known is None and before != 0:
            raise ValueError(
                f"unknown asset {asset}: its fill starts from {before:g}, but no position of "
                f"{asset} was ever reported."
            )
        if known is not None and not math.isclose(known, before, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                f"fill of {asset} starts from {before:g}, but the fills so far left {known:g}."
            )
        return before, after

    def book(self, asset: str, size: float) -> None:
        self._sizes[asset] = size

    def state(self) -> dict[str, float]:
        return self._sizes

    def restore(self, sizes: dict[str, float]) -> None:
        self._sizes.clear()
        self._sizes.update(sizes)
