"""A state as a state file keeps it: rows a save rewrites only when they changed.

A state is a tree of dicts. Its parts are named by their path (`protections/whipsaw/_exits`);
a portfolio-level part is one row, and the per-asset dicts (`Protection.per_asset`) are
spread over one row per asset plus one row with each dict's keys in order, so a bar whose
events touched three assets rewrites three asset rows and the parts whose text changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

_PART, _ORDER, _ASSET = "p:", "o:", "a:"


@dataclass
class StateRows:
    """`parts`: path -> value (a dict a part's children go in is a part holding `{}`);
    `orders`: path of a per-asset dict -> its assets in order; `assets`: asset -> {path of a
    per-asset dict: the asset's value in it}."""

    parts: dict[str, Any]
    orders: dict[str, list[str]] = field(default_factory=dict)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keyed(self) -> Iterator[tuple[str, Any]]:
        """The rows as (key, value), as the file stores them."""
        for path, value in self.parts.items():
            yield _PART + path, value
        for path, keys in self.orders.items():
            yield _ORDER + path, keys
        for asset, values in self.assets.items():
            yield _ASSET + asset, values

    @classmethod
    def from_keyed(cls, rows: Mapping[str, Any]) -> StateRows:
        """The inverse of `keyed`."""
        made = cls({})
        kinds: dict[str, dict[str, Any]] = {
            _PART: made.parts,
            _ORDER: made.orders,
            _ASSET: made.assets,
        }
        for key, value in rows.items():
            kinds[key[:2]][key[2:]] = value
        return made

    def join(self) -> dict[str, Any]:
        """The state tree: each per-asset dict rebuilt in its saved order."""
        flat = dict(self.parts)
        for path, keys in self.orders.items():
            flat[path] = {asset: self.assets[asset][path] for asset in keys}
        return nest(flat)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The tree of `flat` (path -> value); a path's parent must be in `flat` as a dict."""
    tree: dict[str, Any] = {}
    for path in sorted(flat):  # a parent sorts before its children
        *parents, name = path.split("/")
        where = tree
        for parent in parents:
            where = where[parent]
        where[name] = flat[path]
    return tree
