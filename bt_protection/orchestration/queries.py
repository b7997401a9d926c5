"""Read-only questions about the orchestrator's state: each system's view of an asset, and
what would happen to an action now. They change no state."""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any

from bt_protection.durations import ClockPoint
from bt_protection.exit_safety import ExitSafety
from bt_protection.models import Action, ProtectionRequest
from bt_protection.orchestration.pipeline import DecisionPipeline
from bt_protection.protections.base import Protection, registry


def protection_status(
    asset: str,
    now: ClockPoint,
    by_key: dict[str, Protection],
    position: float,
    regime: str | None,
    safety: ExitSafety | None,
) -> dict[str, Any]:
    """Each system's view of `asset` at `now` (disabled systems say `enabled: False`)."""
    protections: dict[str, Any] = {}
    for key, cls in registry().items():
        protection = by_key.get(key)
        protections[cls.status_key] = (
            {"enabled": False} if protection is None else protection.status(asset, now)
        )
        if protection is not None and protection.in_force:
            protections[cls.status_key]["in_force"] = {
                c.key: c.describe() for c in protection.in_force
            }
    status = {
        "asset": asset,
        "date": now.date.isoformat(),
        "position": position,
        "regime": regime,
        "protections": protections,
    }
    if safety is not None:
        status["exit_safety"] = safety.status(asset)
    return status


def explain(
    pipeline: DecisionPipeline,
    asset: str,
    action: Action | str,
    now: ClockPoint,
    position: float,
    regime: str | None,
) -> str:
    """What would happen to `action` on `asset` at `now`, which system decides, and until
    when."""
    wanted = Action(action)
    held = position or 1.0
    sizes = {
        Action.OPEN: (0.0, 1.0),
        Action.CLOSE: (held, 0.0),
        Action.INCREASE: (held, 2 * held),
        Action.DECREASE: (held, held / 2),
        Action.REVERSE: (held, -held),
    }[wanted]
    request = ProtectionRequest(asset, now.date, *sizes, bar=now.bar)
    decision, _ = pipeline.decide(request, now, perf_counter_ns(), regime)
    head = f"{wanted.value} of {asset} on {now.describe()}: "
    if not decision.approved:
        lines = [head + f"denied by {decision.blocking_systems[0]}: {decision.reason}"]
        lines += [
            f"Also blocking: {r.system}: {r.reason}"
            for r in decision.results
            if r.system in decision.blocking_systems[1:]
        ]
    else:
        lines = [head + decision.reason]
    if decision.overridden_systems:
        lines.append(f"Lifted by the regime override: {', '.join(decision.overridden_systems)}.")
    return "\n".join(lines)
