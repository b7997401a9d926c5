"""Walk-forward tuning of protection parameters with an out-of-sample verdict (docs/tune.md)."""

from bt_protection.tune.result import WalkForward
from bt_protection.tune.search import TuneSettings
from bt_protection.tune.walk import TuneSpec, execute_tune, walk_forward

__all__ = ["TuneSettings", "TuneSpec", "WalkForward", "execute_tune", "walk_forward"]
