"""The original system's demonstration: six requests, six decisions, one per protection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator

DEMO_PROFILE = {
    "name": "demo",
    "description": "Every protection on, with short clocks so the scenarios fit in 60 bars.",
    "protections": {
        "core_asset_immunity": {"enabled": True, "assets": ["SPY"]},
        "regime_override": {
            "enabled": True,
            "window": "5 bars",
            "cooldown": "40 bars",
            "can_override": {"critical": ["whipsaw_protection", "holding_period"]},
        },
        "grace_period": {
            "enabled": True,
            "trigger": "score",
            "threshold": 0.5,
            "duration": "5 bars",
        },
        "holding_period": {"enabled": True, "min_hold": "20 bars"},
        "whipsaw_protection": {
            "enabled": True,
            "max_cycles": 2,
            "window": "60 days",
            "min_reentry": "5 bars",
        },
    },
}

_SESSIONS = pd.bdate_range("2024-01-02", periods=61)


def _day(bar: int) -> datetime:
    return _SESSIONS[bar].to_pydatetime()


@dataclass(frozen=True)
class Scenario:
    title: str
    request: ProtectionRequest
    decision: ProtectionDecision


def run_demo() -> list[Scenario]:
    """Replay a short history of fills, regimes and scores, then ask the six questions."""
    orch = ProtectionOrchestrator.from_profile(DEMO_PROFILE)
    orch.on_regime(_day(0), "bull", bar=0)
    for asset in ("SPY", "XOM"):
        orch.on_fill(asset, _day(0), 0, 100, bar=0)
    for opened, closed in ((30, 36), (42, 48)):  # two quick round trips of TSLA
        orch.on_fill("TSLA", _day(opened), 0, 50, bar=opened)
        orch.on_fill("TSLA", _day(closed), 50, 0, bar=closed)
    orch.on_fill("AMD", _day(55), 0, 80, bar=55)
    orch.on_scores(_day(58), {"SPY": 0.9, "XOM": 0.2, "AMD": 0.7}, bar=58)
    now = _day(60)
    questions = [
        ("Open a new position", ProtectionRequest("NVDA", now, 0, 40, bar=60)),
        ("Close a core asset", ProtectionRequest("SPY", now, 100, 0, bar=60)),
        ("Close an asset in grace", ProtectionRequest("XOM", now, 100, 0, bar=60)),
        ("Open a whipsaw-blocked asset", ProtectionRequest("TSLA", now, 0, 50, bar=60)),
        ("Close a recent position", ProtectionRequest("AMD", now, 80, 0, bar=60)),
        ("Increase a core position", ProtectionRequest("SPY", now, 100, 150, bar=60)),
    ]
    return [Scenario(title, req, orch.can_execute_action(req)) for title, req in questions]


def demo_table(scenarios: list[Scenario]) -> pd.DataFrame:
    """One row per scenario: request, outcome, deciding system and reason."""
    rows = []
    for i, s in enumerate(scenarios, 1):
        req, dec = s.request, s.decision
        rows.append(
            {
                "#": i,
                "scenario": s.title,
                "request": (
                    f"{dec.action.value} {req.asset} {req.current_size:g} -> {req.target_size:g}"
                ),
                "outcome": "APPROVED" if dec.approved else "DENIED",
                "decided by": dec.blocking_systems[0] if dec.blocking_systems else "-",
                "reason": dec.reason,
            }
        )
    return pd.DataFrame(rows).set_index("#")
