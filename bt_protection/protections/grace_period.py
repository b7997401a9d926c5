"""Priority 3: give an asset whose exit signal just started `duration` before it may be closed.

`trigger: close`: the first close request of an asset not in grace starts the grace (and is
denied). `trigger: score`: a score below `threshold` starts it. Grace ends when the position
reaches zero, when a score at or above `recovery_score` arrives (by default `threshold` with
`trigger: score`; with `trigger: close` only when `recovery_score` is set), or when an open or
increase of the asset is approved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import Protection, ProtectionConfig, register


class GraceTrigger(StrEnum):
    CLOSE = "close"
    SCORE = "score"


@dataclass(frozen=True)
class GracePeriodConfig(ProtectionConfig):
    trigger: GraceTrigger = GraceTrigger.CLOSE
    threshold: float = 0.0
    recovery_score: float | None = None
    duration: Duration = Duration.parse("5 bars")

    @property
    def recovery(self) -> float | None:
        """The score that ends a grace: `recovery_score`, else `threshold` with `trigger: score`.

        With `trigger: close` the strategy's own close starts the grace, not a score, so scores
        end it only when `recovery_score` is set: a rotation strategy that reports a positive
        score for an asset it drops must not restart that asset's grace at every rebalance.
        """
        if self.recovery_score is not None:
            return self.recovery_score
        return self.threshold if self.trigger is GraceTrigger.SCORE else None


_EXITS = frozenset({Action.CLOSE, Action.REVERSE})
_ENTRIES = frozenset({Action.OPEN, Action.INCREASE})


@register
class GracePeriod(Protection):
    key = "grace_period"
    status_key = "grace_period"
    priority = 3
    config_class = GracePeriodConfig
    config: GracePeriodConfig

    per_asset = frozenset({"_since"})

    def setup(self) -> None:
        self.guards = _EXITS
        self._since: dict[str, ClockPoint] = {}
        self._not_in_grace = self.constant("Not in grace.")

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        asset, duration = request.asset, self.config.duration
        since = self._since.get(asset)
        if since is None:
            if self._starts_grace(request):
                unit = "bars" if duration.uses_bars else "days"
                return self.deny(
                    f"Grace for {asset} starts now: 0 of {duration.amount} {unit}; "
                    f"close allowed from {duration.ends(now)}.",
                    progress=0,
                    duration=str(duration),
                )
            return self._not_in_grace
        progress = duration.progress(since, now)
        told = duration.describe_progress(since, now, progress)
        if progress >= duration.amount:  # elapsed
            return self.allow(f"Grace of {asset} is over ({told}).", progress=progress)
        return self.deny(
            f"{asset} is in grace: {told}; close allowed from {duration.ends(since)}.",
            progress=progress,
            since=since.date,
        )

    def _starts_grace(self, request: ProtectionRequest) -> bool:
        if self.config.trigger is GraceTrigger.CLOSE:
            return True
        return request.score is not None and request.score < self.config.threshold

    def after_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, now: ClockPoint
    ) -> None:
        asset = request.asset
        if request.score is not None:
            self._score(asset, request.score, now)
        if request.action in _ENTRIES:
            if decision.approved and self._since.pop(asset, None) is not None:
                self.emit("grace_ended", now, {"asset": asset, "why": "selected again"})
        elif request.action in _EXITS and asset not in self._since and self._starts_grace(request):
            self._start(asset, now, "close requested")

    def on_scores(self, now: ClockPoint, scores: Mapping[str, float]) -> None:
        for asset in sorted(scores):
            self._score(asset, scores[asset], now)

    def _score(self, asset: str, score: float, now: ClockPoint) -> None:
        if asset in self._since:
            recovery = self.config.recovery
            if recovery is not None and score >= recovery:
                del self._since[asset]
                self.emit("grace_ended", now, {"asset": asset, "why": f"score {score:g} recovered"})
        elif self.config.trigger is GraceTrigger.SCORE and score < self.config.threshold:
            self._start(asset, now, f"score {score:g} below {self.config.threshold:g}")

    def _start(self, asset: str, now: ClockPoint, why: str) -> None:
        self._since[asset] = now
        self.emit("grace_started", now, {"asset": asset, "why": why})

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        if size_after == 0 and self._since.pop(asset, None) is not None:
            self.emit("grace_ended", now, {"asset": asset, "why": "position closed"})

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        since = self._since.get(asset)
        duration = self.config.duration
        return {
            "enabled": True,
            "in_grace": since is not None,
            "since": None if since is None else since.date.isoformat(),
            "progress": None if since is None else duration.progress(since, now),
            "duration": str(duration),
            "elapsed": since is not None and duration.elapsed(since, now),
            "trigger": self.config.trigger.value,
        }
