"""bt-protection: one protection orchestrator between a backtrader strategy and its broker.

The core (models, durations, protections, orchestrator, profile, audit) does not import
backtrader; the adapter names below (`ProtectionMixin`, `RegimeIndicator`, ...) load it on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from bt_protection.durations import ClockPoint, Duration, DurationUnit
from bt_protection.errors import DataError, ProfileError, UserError
from bt_protection.models import (
    Action,
    ProtectionDecision,
    ProtectionRequest,
    ProtectionResult,
    Severity,
)
from bt_protection.profile import Mode, OnError, Profile

__version__ = "0.1.0"

_LAZY = {
    "load_profile": "bt_protection.profile",
    "ProtectionOrchestrator": "bt_protection.orchestrator",
    "AuditLog": "bt_protection.audit",
    "ProtectionMixin": "bt_protection.integration.mixin",
    "RegimeIndicator": "bt_protection.integration.regime",
    "CompositeIndex": "bt_protection.integration.regime",
    "ProtectionAnalyzer": "bt_protection.integration.analyzer",
    "ProtectionAwareRebalancer": "bt_protection.integration.rebalancer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bt_protection' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Action",
    "ClockPoint",
    "DataError",
    "Duration",
    "DurationUnit",
    "Mode",
    "OnError",
    "Profile",
    "ProfileError",
    "ProtectionDecision",
    "ProtectionRequest",
    "ProtectionResult",
    "Severity",
    "UserError",
    "__version__",
    *_LAZY,
]
