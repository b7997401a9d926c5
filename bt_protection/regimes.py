"""The regime labels, and which prices the regime indicator watches (no backtrader here).

`REGIME_LABELS` is the one list of labels: `RegimeIndicator` gives them, `regime_override`
accepts them, calm to stressed. `regime_source` picks the prices the indicator reads: the feed
named by `regime_data` (the profile's `regime.data`, the mixin's param or `--regime-data`), the
only feed of a one-feed run, or else the equal-weight composite of every feed
(docs/regime.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bt_protection.errors import UserError

REGIME_LABELS: tuple[str, ...] = ("bull", "neutral", "bear", "crisis")


@dataclass(frozen=True)
class RegimeSource:
    """The feed the indicator watches, or None for the composite of `feeds`."""

    feed: str | None
    feeds: tuple[str, ...]

    @property
    def label(self) -> str:
        """What the audit header and summary.json call it: `SPY` or `composite(AAPL,AMZN)`."""
        return self.feed if self.feed is not None else f"composite({','.join(self.feeds)})"


def regime_source(named: str | None, feeds: Sequence[str]) -> RegimeSource:
    """The regime source of a run on `feeds` (names in feed order) when `named` is asked for."""
    feeds = tuple(feeds)
    if named:
        if named not in feeds:
            raise UserError(
                f"regime data {named!r} is not a feed of this run; feeds: {', '.join(feeds)}."
            )
        return RegimeSource(named, feeds)
    if len(feeds) == 1:
        return RegimeSource(feeds[0], feeds)
    return RegimeSource(None, feeds)
