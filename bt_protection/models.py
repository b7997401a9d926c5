"""Value types of the decision path: requests, per-system results and decisions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

_NO_DETAILS: Mapping[str, Any] = MappingProxyType({})


class Action(StrEnum):
    """What an order does to a position, derived from the signed sizes before and after."""

    OPEN = "open"
    CLOSE = "close"
    INCREASE = "increase"
    DECREASE = "decrease"
    REVERSE = "reverse"


class Severity(StrEnum):
    """How strong a regime change is, from `low` to `critical`."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


def derive_action(current_size: float, target_size: float) -> Action:
    """Return the action that takes `current_size` to `target_size` (sizes must differ)."""
    if current_size == 0:
        return Action.OPEN
    if target_size == 0:
        return Action.CLOSE
    if (current_size > 0) != (target_size > 0):
        return Action.REVERSE
    return Action.INCREASE if abs(target_size) > abs(current_size) else Action.DECREASE


def to_datetime(value: object, field_name: str = "current_date") -> datetime:
    """Normalise a backtest timestamp (datetime, date, pandas Timestamp or ISO text)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    if value is None:
        raise ValueError(
            f"{field_name} is required: give the backtest date of the event "
            "(there is no wall-clock default)."
        )
    raise ValueError(
        f"{field_name} must be a datetime, a date or an ISO date string, not {value!r}."
    )


def _finite(value: object, field_name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} must be a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{field_name} must be a finite number, not {value!r}.")
    return number


@dataclass(frozen=True, slots=True)
class ProtectionRequest:
    """One order the strategy wants to place, as signed sizes of one asset.

    `action` is derived from the sizes; an explicit one must agree with them.
    `exempt=True` marks a safety exit: approved, but still evaluated and recorded.
    """

    asset: str
    current_date: datetime
    current_size: float
    target_size: float
    # None (the default) means: derive it from the sizes; after construction it is never None
    action: Action = None  # type: ignore[assignment]
    reason: str = ""
    score: float | None = None
    bar: int | None = None
    exempt: bool = False
    metadata: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.asset, str) or not self.asset:
            raise ValueError(f"asset must be a non-empty string, not {self.asset!r}.")
        setattr_ = object.__setattr__
        setattr_(self, "current_date", to_datetime(self.current_date))
        current = _finite(self.current_size, "current_size")
        target = _finite(self.target_size, "target_size")
        if current == target:
            raise ValueError(
                f"current_size and target_size are both {current:g} for {self.asset}: "
                "a request must change the position."
            )
        setattr_(self, "current_size", current)
        setattr_(self, "target_size", target)
        derived = derive_action(current, target)
        if self.action is not None:
            try:
                given = Action(self.action)
            except ValueError:
                valid = ", ".join(a.value for a in Action)
                raise ValueError(f"action must be one of {valid}, not {self.action!r}.") from None
            if given is not derived:
                raise ValueError(
                    f"action {given.value!r} contradicts the sizes of {self.asset}: "
                    f"{current:g} -> {target:g} is {derived.value!r}."
                )
        setattr_(self, "action", derived)
        if self.score is not None:
            setattr_(self, "score", _finite(self.score, "score"))
        if self.bar is not None and not isinstance(self.bar, int):
            setattr_(self, "bar", int(self.bar))
        if self.metadata is not None:
            setattr_(self, "metadata", dict(self.metadata))

    @classmethod
    def trusted(
        cls,
        asset: str,
        current_date: datetime,
        current_size: float,
        target_size: float,
        action: Action,
        reason: str,
        score: float | None,
        bar: int | None,
        exempt: bool,
        metadata: dict[str, Any] | None,
    ) -> ProtectionRequest:
        """The request an adapter builds for an order (the decision path's hot part;
        docs/decisions.md). When the values already pass `__post_init__`'s checks (a non-empty
        `asset`, a `datetime`, different finite float sizes whose `action` is the one given, an
        int `bar`, no score), they are set without running them again, and `metadata`, the
        caller's own dict, is kept as it is; any other values go through the constructor and
        its errors."""
        if not (
            score is None
            and type(asset) is str
            and asset
            and type(current_size) is float
            and type(target_size) is float
            and current_size != target_size
            and math.isfinite(current_size)
            and math.isfinite(target_size)
            and isinstance(current_date, datetime)
            and isinstance(bar, int)
        ):
            return cls(
                asset,
                current_date,
                current_size,
                target_size,
                action,
                reason=reason,
                score=score,
                bar=bar,
                exempt=exempt,
                metadata=metadata,
            )
        request = object.__new__(cls)
        setattr_ = object.__setattr__  # field by field, as the generated __init__ does
        setattr_(request, "asset", asset)
        setattr_(request, "current_date", current_date)
        setattr_(request, "current_size", current_size)
        setattr_(request, "target_size", target_size)
        setattr_(request, "action", action)
        setattr_(request, "reason", reason)
        setattr_(request, "score", None)
        setattr_(request, "bar", bar)
        setattr_(request, "exempt", exempt)
        setattr_(request, "metadata", metadata)
        return request


@dataclass(frozen=True, slots=True)
class ProtectionResult:
    """What one protection system said about one request.

    `allowed_target` is set when the system allows part of the request: the target size it
    lets through, strictly between the request's current and target sizes (`allowed` is
    then False: the request as asked is not allowed).
    """

    system: str
    priority: int
    allowed: bool
    reason: str
    details: Mapping[str, Any] = field(default_factory=lambda: _NO_DETAILS)
    allowed_target: float | None = None
    audit_json: str | None = field(default=None, init=False, repr=False, compare=False)
    """The audit's JSON of this result, cached on a result made once and reused (see
    `Protection.constant`); not part of its value."""

    def __post_init__(self) -> None:
        if type(self.details) is not MappingProxyType:  # read-only, so decisions stay immutable
            object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def __reduce__(self) -> tuple[Any, ...]:
        # a mappingproxy does not pickle; rebuild from a plain copy (optstrategy, processes)
        return (
            ProtectionResult,
            (
                self.system,
                self.priority,
                self.allowed,
                self.reason,
                dict(self.details),
                self.allowed_target,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        plain = {
            "system": self.system,
            "priority": self.priority,
            "allowed": self.allowed,
            "reason": self.reason,
            "details": _plain(self.details),
        }
        if self.allowed_target is not None:
            plain["allowed_target"] = self.allowed_target
        return plain


@dataclass(frozen=True)
class ProtectionDecision:
    """The orchestrator's answer to one request, with every system's result.

    `approved_target` is the target size allowed: the request's target when fully approved,
    its current size when denied, in between when `partial` (then `approved` is True and the
    order to send is `approved_target - current_size`). `risk_exit` marks an approval that
    profile's `exit_safety` valves gave against the denials of `lifted_systems`.
    """

    approved: bool
    action: Action
    asset: str
    date: datetime
    reason: str
    blocking_systems: tuple[str, ...] = ()
    results: tuple[ProtectionResult, ...] = ()
    override_applied: bool = False
    overridden_systems: tuple[str, ...] = ()
    regime: str | None = None
    exempt: bool = False
    would_block: bool = False
    error: str | None = None
    trace_id: str | None = None
    decision_time_us: float = field(default=0.0, compare=False)  # wall clock: not the decision
    bar: int | None = None
    current_size: float = 0.0
    target_size: float = 0.0
    approved_target: float = 0.0
    partial: bool = False
    risk_exit: bool = False
    lifted_systems: tuple[str, ...] = ()

    @property
    def approved_size(self) -> float:
        """The signed size change allowed (0 when denied)."""
        return self.approved_target - self.current_size

    @classmethod
    def from_values(cls, *values: Any) -> ProtectionDecision:
        """Build from all field values in declaration order, without per-field checks.

        The orchestrator's hot path: filling `__dict__` at once costs half of the generated
        frozen `__init__`. The instance is as immutable as any other.
        """
        decision = object.__new__(cls)
        decision.__dict__.update(zip(_DECISION_FIELDS, values, strict=True))
        return decision

    def to_dict(self) -> dict[str, Any]:
        """The decision in plain JSON types (dates as ISO text)."""
        return {
            "approved": self.approved,
            "action": self.action.value,
            "asset": self.asset,
            "date": self.date.isoformat(),
            "bar": self.bar,
            "current_size": self.current_size,
            "target_size": self.target_size,
            "approved_target": self.approved_target,
            "partial": self.partial,
            "risk_exit": self.risk_exit,
            "lifted_systems": list(self.lifted_systems),
            "reason": self.reason,
            "blocking_systems": list(self.blocking_systems),
            "results": [r.to_dict() for r in self.results],
            "override_applied": self.override_applied,
            "overridden_systems": list(self.overridden_systems),
            "regime": self.regime,
            "exempt": self.exempt,
            "would_block": self.would_block,
            "error": self.error,
            "trace_id": self.trace_id,
            "decision_time_us": self.decision_time_us,
        }


_DECISION_FIELDS = tuple(f.name for f in fields(ProtectionDecision))


def _plain(value: Any) -> Any:
    """Convert mappings, sequences, enums and dates to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
