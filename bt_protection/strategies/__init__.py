"""Example strategies, each a `ProtectionMixin` strategy. Runs find them by the names
pyproject.toml registers in the entry-point group `bt_protection.strategies`."""

from __future__ import annotations

from bt_protection.strategies.momentum_rotation import MomentumRotation
from bt_protection.strategies.sma_crossover import SmaCrossover

__all__ = ["MomentumRotation", "SmaCrossover"]
