"""Example strategies, each a `ProtectionMixin` strategy, by the name the CLI uses."""

from __future__ import annotations

from bt_protection.errors import UserError
from strategies.momentum_rotation import MomentumRotation
from strategies.sma_crossover import SmaCrossover

STRATEGIES: dict[str, type] = {
    "momentum_rotation": MomentumRotation,
    "sma_crossover": SmaCrossover,
}


def get_strategy(name: str) -> type:
    """The strategy class registered as `name`; `UserError` naming the valid names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        valid = ", ".join(sorted(STRATEGIES))
        raise UserError(f"unknown strategy {name!r}; valid names: {valid}.") from None


__all__ = ["STRATEGIES", "MomentumRotation", "SmaCrossover", "get_strategy"]
