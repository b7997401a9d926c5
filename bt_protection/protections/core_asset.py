"""Priority 1: core assets are never closed, decreased or reversed (no override lifts this).

With `keep`, a core asset may be reduced down to a floor instead: `keep` times the largest
position (in the request's units, usually shares) held since it became core, counted from the
position it had when promoted (static core assets: from their first fill). A reduction past the
floor is denied, or with `partial: true` clipped to the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import (
    REDUCING,
    ConfigError,
    Protection,
    ProtectionConfig,
    check_actions,
    register,
)


@dataclass(frozen=True)
class DynamicCoreConfig(ProtectionConfig):
    """Promotion by scores: `min_streak` reports in a row within `top_n` makes an asset core."""

    enabled: bool = True
    top_n: int = 1
    min_streak: int = 3
    duration: Duration = Duration.parse("60 bars")
    max_core: int = 1

    def validate(self) -> None:
        for key in ("top_n", "min_streak", "max_core"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"{key} must be at least 1, not {getattr(self, key)}.")


@dataclass(frozen=True)
class CoreAssetConfig(ProtectionConfig):
    assets: frozenset[str] = frozenset()
    protect: frozenset[Action] = frozenset({Action.CLOSE, Action.DECREASE, Action.REVERSE})
    dynamic: DynamicCoreConfig | None = field(default=None)
    keep: float | None = None
    partial: bool = False

    def validate(self) -> None:
        check_actions("protect", self.protect, REDUCING, "core asset immunity")
        if self.keep is not None and not 0 <= self.keep <= 1:
            raise ConfigError(
                "keep",
                f"keep is the fraction of the core position that stays (0 to 1), "
                f"not {self.keep:g}.",
            )
        if self.dynamic is not None:
            self.dynamic.validate()


@register
class CoreAssetImmunity(Protection):
    key = "core_asset_immunity"
    status_key = "core_asset"
    priority = 1
    config_class = CoreAssetConfig
    can_be_overridden = False

    config: CoreAssetConfig

    per_asset = frozenset({"_streaks", "_promoted", "_peaks"})

    def setup(self) -> None:
        self.guards = self.config.protect
        self._not_core = self.constant("Not a core asset.")
        self._streaks: dict[str, int] = {}
        # asset -> the last report at which it qualified; promotion lasts `duration` from there
        self._promoted: dict[str, ClockPoint] = {}
        self._peaks: dict[str, float] = {}  # largest |position| since the asset became core

    def _promotion(self, asset: str, now: ClockPoint) -> ClockPoint | None:
        since = self._promoted.get(asset)
        dynamic = self.config.dynamic
        if since is None or dynamic is None or dynamic.duration.elapsed(since, now):
            return None
        return since

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        asset = request.asset
        if asset in self.config.assets:
            if self.config.keep is not None:
                return self._floor(request, "listed in the profile", core="static")
            return self.deny(
                f"{asset} is a core asset (listed in the profile); {request.action.value} is never "
                "allowed.",
                core="static",
            )
        since = self._promotion(asset, now) if asset in self._promoted else None
        if since is not None:
            duration = self.config.dynamic.duration  # type: ignore[union-attr]
            if self.config.keep is not None:
                return self._floor(
                    request, f"promoted, core until {duration.ends(since)}", core="promoted"
                )
            return self.deny(
                f"{asset} is a promoted core asset ({duration.describe_progress(since, now)}, "
                f"core until {duration.ends(since)}); {request.action.value} is not allowed.",
                core="promoted",
                since=since.date,
            )
        return self._not_core

    def _floor(self, request: ProtectionRequest, why: str, core: str) -> ProtectionResult:
        """A reduction of a core asset down to `keep` of its largest core position."""
        asset, current, target = request.asset, request.current_size, request.target_size
        keep = self.config.keep or 0.0
        peak = max(self._peaks.get(asset, 0.0), abs(current))
        floor = math.copysign(keep * peak, current)
        details = {"core": core, "floor": floor, "peak": peak}
        head = (
            f"{asset} is a core asset ({why}) that keeps {keep:g} of its largest core "
            f"position {peak:g}, a floor of {floor:g}"
        )
        if (target > 0) == (current > 0) and abs(target) >= abs(floor) and target != 0:
            return self.allow(f"{head}; {target:g} stays above it.", **details)
        if abs(current) <= abs(floor):
            return self.deny(f"{head}; it is at the floor, so it may not go lower.", **details)
        return self.limit(
            request, floor, f"{head}; it may go down to {floor:g}, not {target:g}.", **details
        )

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        if asset in self.config.assets or self._promotion(asset, now) is not None:
            self._peaks[asset] = max(self._peaks.get(asset, 0.0), abs(size_after))

    def on_scores(self, now: ClockPoint, scores: Mapping[str, float]) -> None:
        dynamic = self.config.dynamic
        if dynamic is None or not dynamic.enabled:
            return
        # rank by score, ties by name, so the same report always gives the same ranks
        ranked = sorted(scores, key=lambda a: (-scores[a], a))
        rank = {asset: i for i, asset in enumerate(ranked)}
        top = set(ranked[: dynamic.top_n])
        self._streaks = {a: self._streaks.get(a, 0) + 1 for a in top}
        qualifying = {a for a, n in self._streaks.items() if n >= dynamic.min_streak}
        current = {a for a in self._promoted if self._promotion(a, now) is not None}
        candidates = sorted(current | qualifying, key=lambda a: (rank.get(a, len(rank)), a))
        kept = candidates[: dynamic.max_core]
        promoted = {a: (now if a in qualifying else self._promoted[a]) for a in kept}
        for asset in sorted(set(promoted) - current):
            self._peaks[asset] = abs(self.positions.get(asset, 0.0))  # the ledger
            self.emit("core_promoted", now, {"asset": asset, "rank": rank[asset] + 1})
        for asset in sorted(current - set(promoted)):
            self._peaks.pop(asset, None)
            self.emit("core_demoted", now, {"asset": asset})
        self._promoted = promoted

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        since = self._promotion(asset, now)
        keep = self.config.keep
        return {
            "enabled": True,
            "is_core": asset in self.config.assets or since is not None,
            "static": asset in self.config.assets,
            "promoted_since": None if since is None else since.date.isoformat(),
            "streak": self._streaks.get(asset, 0),
            "protects": sorted(a.value for a in self.config.protect),
            "floor": None if keep is None else keep * self._peaks.get(asset, 0.0),
        }
