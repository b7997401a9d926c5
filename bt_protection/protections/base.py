"""The small base class every protection system derives from, and the registry of systems.

A protection is one module: a frozen `Config` dataclass (its profile block, validated by
`bt_protection.profile` from the field types) and a `Protection` subclass that evaluates
requests and follows the events of the backtest (fills, regime labels, scores). The built-in
systems are the modules of this package; other packages add theirs through the entry-point
group `bt_protection.protections` (docs/extending.md).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any, ClassVar

from bt_protection.adaptive import Adaptive, InForce, amount
from bt_protection.audit import cache_json
from bt_protection.config_types import unreadable_fields
from bt_protection.durations import ClockPoint, Duration
from bt_protection.errors import PluginError
from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, ProtectionResult

EventSink = Callable[[str, ClockPoint, dict[str, Any]], None]
"""Receives audit events a protection raises: (kind, when, payload)."""


class ConfigError(ValueError):
    """A profile value that is wrong in the context of its block; `key` is relative to it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ProtectionConfig:
    """Parameters every protection block has.

    `decision_fields` names the durations that may count decisions (`"3 decisions"`); any
    other duration given in decisions is refused when the config is made. `adaptive` holds the
    keys the profile gives by regime or scaled by volatility (set by the profile loader; the
    field itself then holds the default or base value): `resolve` gives the config in force.
    """

    enabled: bool = False
    adaptive: Mapping[str, Adaptive] = field(
        default_factory=lambda: MappingProxyType({}), init=False, compare=False, repr=False
    )
    decision_fields: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            counts = isinstance(value, Duration) and value.counts_decisions
            if counts and f.name not in self.decision_fields:
                raise ConfigError(
                    f.name,
                    f"{str(value)!r} counts decisions, which only regime_override.window "
                    'can; write bars or days here, such as "10 bars" or "14 days".',
                )

    def validate(self) -> None:
        """Cross-field checks; raise `ConfigError` naming the key."""

    def resolve(
        self, regime: str | None, ratio: float | None
    ) -> tuple[ProtectionConfig, tuple[InForce, ...]]:
        """The config in force under `regime` and the volatility ratio `ratio` (None: not known
        yet), and the adaptive values it took; a config without adaptive keys is itself."""
        if not self.adaptive:
            return self, ()
        chosen = tuple(spec.resolve(key, regime, ratio) for key, spec in self.adaptive.items())
        values: dict[str, Any] = {c.key: c.value for c in chosen}
        return replace(self, **values), chosen

    def durations(self) -> list[Duration]:
        """Every duration in the block, to learn whether bar indexes are needed."""
        found: list[Duration] = [
            value
            for spec in self.adaptive.values()
            for value in spec.values_in_use()
            if isinstance(value, Duration)
        ]
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Duration):
                found.append(value)
            elif isinstance(value, ProtectionConfig):
                found.extend(value.durations())
        return found


HOOKS = ("on_fill", "on_regime", "on_scores", "on_portfolio", "on_trade", "after_decision")
"""The event hooks of a protection; the orchestrator calls only those a class overrides."""

REDUCING = frozenset({Action.CLOSE, Action.DECREASE, Action.REVERSE})
"""Actions that take exposure away: what core immunity and the holding period can guard."""


def check_actions(
    key: str, actions: frozenset[Action], allowed: frozenset[Action], who: str
) -> None:
    """Refuse actions a system cannot guard, naming them (`ConfigError` on `key`)."""
    extra = sorted(a.value for a in actions - allowed)
    if extra:
        names = [a.value for a in Action if a in allowed]
        can = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        raise ConfigError(key, f"{who} can protect {can}, not {', '.join(extra)}.")


def toward_current(request: ProtectionRequest, size: float) -> float:
    """`size` rounded toward the request's current size to a whole unit when both request
    sizes are whole (shares), so a clipped order never exceeds what a system allows."""
    current, target = request.current_size, request.target_size
    if not (current.is_integer() and target.is_integer()) or float(size).is_integer():
        return float(size)
    return float(math.floor(size) if size > current else math.ceil(size))


# what a system derives from its profile (the values in force follow the restored regime)
_NOT_STATE = frozenset(
    {"config", "emit", "not_guarded", "profile_config", "in_force", "_constants", "positions"}
)


def _ignore_event(kind: str, when: ClockPoint, payload: dict[str, Any]) -> None:
    return None


class Protection:
    """One protection system. Subclasses set the class attributes and override what they use.

    `check` must not change state: `explain` and `get_protection_status` call it freely. State
    moves only through the `on_*` hooks and `after_decision`.
    """

    key: ClassVar[str]
    status_key: ClassVar[str]
    priority: ClassVar[int]
    config_class: ClassVar[type[ProtectionConfig]]
    can_be_overridden: ClassVar[bool] = True
    judges_entries: ClassVar[bool] = False
    """True for entry rules: on a `reverse` they judge its open leg, the others its close leg."""
    guards: frozenset[Action] = frozenset()
    positions: Mapping[str, float] = MappingProxyType({})
    """The orchestrator's position ledger, read-only (set when the orchestrator builds the
    system): positions as the fills reported them."""
    per_asset: ClassVar[frozenset[str]] = frozenset()
    """The `state()` entries that are dicts keyed by asset and change only through events of
    that asset (a fill, a decision, a score report naming it): a state file keeps them in one
    row per asset and rewrites only the rows of the assets an event touched. The other
    entries are rewritten when their text changes."""

    def __init__(self, config: ProtectionConfig, emit: EventSink = _ignore_event) -> None:
        self.profile_config = config
        self.config, self.in_force = config.resolve(None, None)
        self.emit = emit
        self._constants: dict[tuple[str, str], ProtectionResult] = {}
        self.not_guarded = {
            action: self.constant(f"{action.value} is not guarded by {self.key}.")
            for action in Action
        }
        self.setup()

    def setup(self) -> None:
        """Create the system's state from `self.config` (called once by `__init__`)."""

    # --- adaptive values --------------------------------------------------------------------

    def adapt(self, regime: str | None, ratio: float | None) -> None:
        """Put in force the profile's values for `regime` and the volatility ratio `ratio`
        (the orchestrator calls it each bar for a system with adaptive keys)."""
        config, self.in_force = self.profile_config.resolve(regime, ratio)
        if config != self.config:
            self.config = config
            self.reconfigure()

    def widest(self, key: str) -> Any:
        """The largest value `key` takes under any regime or volatility (the value in force
        when it is not adaptive): how far back state kept for `key` must reach, so a value
        that grows with the regime finds everything a fixed value would."""
        spec = self.profile_config.adaptive.get(key)
        if spec is None:
            return getattr(self.config, key)
        return max(spec.values_in_use(), key=amount)

    def reconfigure(self) -> None:
        """`self.config` changed to the values in force at a new regime or volatility: update
        whatever `setup` derived from it (the state stays). Systems that read `self.config`
        where they use it need nothing here."""

    def annotate(self, result: ProtectionResult) -> ProtectionResult:
        """`result` naming the adaptive values in force: in its reason, and under `in_force`
        in its details."""
        if not self.in_force:
            return result
        named = "; ".join(c.describe() for c in self.in_force)
        in_force = {c.key: str(c.value) for c in self.in_force}
        reason = result.reason
        reason = f"{reason[:-1]} ({named})." if reason.endswith(".") else f"{reason} ({named})"
        return replace(
            result,
            reason=reason,
            details=MappingProxyType({**result.details, "in_force": in_force}),
        )

    # --- persisted state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The system's state as plain data (what `setup` created and the hooks moved): every
        instance attribute but the config and the event sink. A state file stores it."""
        return {k: v for k, v in vars(self).items() if k not in _NOT_STATE}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a `state()`; attributes equal to the current ones are kept as they are."""
        unknown = set(state) ^ set(self.state())
        if unknown:
            raise ValueError(
                f"the saved state of {self.key} has other fields ({', '.join(sorted(unknown))}) "
                "than this version's; reset the state file."
            )
        for name, value in state.items():
            if getattr(self, name) != value:
                setattr(self, name, value)

    # --- evaluation -------------------------------------------------------------------------

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        """Evaluate an action in `guards` (others get `not_guarded[action]` without a call).

        Pure: no state changes here.
        """
        raise NotImplementedError

    def allow(self, reason: str, **details: Any) -> ProtectionResult:
        return ProtectionResult(self.key, self.priority, True, reason, MappingProxyType(details))

    def constant(self, reason: str, **details: Any) -> ProtectionResult:
        """An allowing result made once and reused; it carries its audit JSON. The same reason
        and details give the same object."""
        key = (reason, repr(sorted(details.items())))
        result = self._constants.get(key)
        if result is None:
            result = self._constants[key] = self.allow(reason, **details)
            cache_json(result)
        return result

    def deny(self, reason: str, **details: Any) -> ProtectionResult:
        return ProtectionResult(self.key, self.priority, False, reason, MappingProxyType(details))

    def limit(
        self, request: ProtectionRequest, allowed_target: float, reason: str, **details: Any
    ) -> ProtectionResult:
        """Allow `request` only up to `allowed_target` (a size between its current and target
        sizes): a clip with `partial: true` in the system's block, else a denial."""
        allowed_target = toward_current(request, allowed_target)
        if allowed_target == request.current_size or not getattr(self.config, "partial", False):
            return self.deny(reason, **details)
        return ProtectionResult(
            self.key, self.priority, False, reason, MappingProxyType(details), allowed_target
        )

    def overrides(self, now: ClockPoint) -> frozenset[str]:
        """Systems whose denials do not block at `now` (only regime override lifts any)."""
        return frozenset()

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        """This system's view of `asset` at `now`, in plain types."""
        return {"enabled": True}

    # --- events -----------------------------------------------------------------------------

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        """An execution changed the position of `asset`."""

    def on_regime(self, now: ClockPoint, regime: str) -> None:
        """The confirmed regime label: at the first bar, then when it changes (and at every
        bar while `wants_each_bar` says so)."""

    def wants_each_bar(self) -> bool:
        """Whether `on_regime` must also come at bars whose label did not change (regime
        override: while a window may close, so it closes at the first bar past its end).
        Asked after each `on_regime` and each decision."""
        return False

    def on_scores(self, now: ClockPoint, scores: Mapping[str, float]) -> None:
        """A score report (usually once per rebalance)."""

    def on_portfolio(self, now: ClockPoint, value: float) -> None:
        """The portfolio's value (the broker's, cash included) at the current bar."""

    def on_trade(self, asset: str, now: ClockPoint, size: float, price: float) -> None:
        """A fill of `size` (unsigned) at `price`; sent with `on_fill` when the price is known."""

    def after_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, now: ClockPoint
    ) -> None:
        """The orchestrator decided `request`."""

    @classmethod
    def hooks(cls) -> frozenset[str]:
        """Names of the event hooks this class overrides, so no-op hooks are never called."""
        return frozenset(n for n in HOOKS if getattr(cls, n) is not getattr(Protection, n))


ENTRY_POINT_GROUP = "bt_protection.protections"
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY: dict[str, type[Protection]] = {}
_SOURCES: dict[str, str] = {}  # key -> where the system comes from (`systems` lists it)
_DISCOVERED = False


def register(cls: type[Protection]) -> type[Protection]:
    """Class decorator: make a protection known to profiles and the orchestrator.

    The contract is checked here, when the module defining the class is imported: a
    `Protection` subclass with its own `check`, a `key` (lower-case letters, digits and `_`)
    and an integer `priority` that no other system has, and a `config_class` that is a frozen
    dataclass deriving from `ProtectionConfig` with a default for every field. A class that
    breaks it raises `PluginError` naming the class. `status_key` defaults to `key`.
    """
    _check_contract(cls)
    for other in _REGISTRY.values():
        if other is cls or _same_class(other, cls):
            continue
        for attribute in ("key", "priority"):
            if getattr(other, attribute) == getattr(cls, attribute):
                raise PluginError(
                    f"protection {_name(cls)} takes {attribute} {getattr(cls, attribute)!r}, "
                    f"which {_name(other)} has; each system needs its own key and priority "
                    f"(taken priorities: {', '.join(str(c.priority) for c in _REGISTRY.values())})."
                )
    if "status_key" not in vars(cls):
        cls.status_key = cls.key
    _REGISTRY[cls.key] = cls
    _SOURCES.setdefault(cls.key, "bt-protection (built-in)")
    return cls


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class(a: type, b: type) -> bool:
    """The same class defined again (its module imported twice, e.g. by a reload)."""
    return _name(a) == _name(b)


def _check_contract(cls: Any) -> None:
    name = _name(cls) if isinstance(cls, type) else repr(cls)
    if not (isinstance(cls, type) and issubclass(cls, Protection)):
        raise PluginError(f"{name} is not a subclass of bt_protection.protections.Protection.")

    def broken(problem: str) -> PluginError:
        return PluginError(f"protection {name} {problem}.")

    key = vars(cls).get("key", getattr(cls, "key", None))
    if not isinstance(key, str) or not _KEY.match(key):
        raise broken(
            f"needs a class attribute `key`: lower-case letters, digits and _, starting with a "
            f"letter (it names the profile block), not {key!r}"
        )
    priority = getattr(cls, "priority", None)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise broken(f"needs an integer class attribute `priority`, not {priority!r}")
    if cls.check is Protection.check:
        raise broken(
            "has no `check` method; without one every guarded order would fail, and be denied "
            "under on_error: deny"
        )
    config = getattr(cls, "config_class", None)
    if not (isinstance(config, type) and issubclass(config, ProtectionConfig)):
        raise broken(f"needs `config_class`, a subclass of ProtectionConfig, not {config!r}")
    params = vars(config).get("__dataclass_params__")
    if params is None or not params.frozen:
        raise broken(
            f"has config_class {config.__qualname__}, which is not a frozen dataclass; "
            "decorate it with @dataclass(frozen=True)"
        )
    missing = [
        f.name for f in fields(config) if f.default is MISSING and f.default_factory is MISSING
    ]
    unreadable = unreadable_fields(config)
    if unreadable:
        raise broken(
            f"has config_class {config.__qualname__} with fields {', '.join(unreadable)} of a "
            "type profiles cannot hold; use bool, int, float, str, date, Duration, a StrEnum, "
            "a dataclass, tuple[X, ...], frozenset[X], Mapping[K, V] or X | None"
        )
    if missing:
        raise broken(
            f"has config_class {config.__qualname__} whose fields {', '.join(missing)} have no "
            "default; a profile may leave any key out"
        )


def registry() -> dict[str, type[Protection]]:
    """Every protection system, by key, in priority order: the modules of this package and the
    classes of the entry-point group `bt_protection.protections` (each loads once)."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        package = importlib.import_module("bt_protection.protections")
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            if module != "base":
                importlib.import_module(f"bt_protection.protections.{module}")
        try:
            for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                _load_plugin(entry)
        except BaseException:
            _DISCOVERED = False  # a broken plugin fails every time, not only the first
            raise
    return dict(sorted(_REGISTRY.items(), key=lambda item: item[1].priority))


def _load_plugin(entry: EntryPoint) -> None:
    """Register the protection class an entry point names; its name must be the class key."""
    dist = entry.dist
    origin = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    where = f"entry point {entry.name} = {entry.value} ({origin}, group {ENTRY_POINT_GROUP})"
    try:
        cls = entry.load()
    except PluginError:
        raise
    except Exception as error:
        raise PluginError(f"{where} cannot be loaded: {type(error).__name__}: {error}.") from None
    register(cls)
    if cls.key != entry.name:
        raise PluginError(
            f"{where} names a protection whose key is {cls.key!r}; name the entry point "
            f"{cls.key!r}."
        )
    _SOURCES[cls.key] = f"{origin} (plugin)"


def system_sources() -> dict[str, str]:
    """Where each registered system comes from, by key: built-in or `distribution version`."""
    return {key: _SOURCES[key] for key in registry()}
