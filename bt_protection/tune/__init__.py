"""Walk-forward tuning of protection parameters with an out-of-sample verdict (docs/tune.md)."""

from bt_protection.tune.result import WalkForward
from bt_protection.tune.walk import walk_forward

__all__ = ["WalkForward", "walk_forward"]
