"""The decision pipeline: each system's result -> the regime override -> clips -> exit safety,
and the decision's reason."""

from __future__ import annotations

from operator import attrgetter
from time import perf_counter_ns

from bt_protection.durations import ClockPoint
from bt_protection.exit_safety import ExitSafety
from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, ProtectionResult
from bt_protection.orchestration.clock import Clock
from bt_protection.profile import Mode, OnError, Profile
from bt_protection.protections.base import REDUCING, Protection

_CORE = "core_asset_immunity"  # what exit safety's `core: keep` leaves alone
_SYSTEM = attrgetter("system")  # the systems of results: tuple(map(_SYSTEM, results))


def error_text(protection: Protection, exc: Exception) -> str:
    return f"{protection.key} raised {type(exc).__name__}: {exc}"


class DecisionPipeline:
    """Turns a request into a decision with the enabled `protections` (in priority order);
    changes no state."""

    def __init__(
        self,
        profile: Profile,
        protections: list[Protection],
        safety: ExitSafety | None,
        clock: Clock,
    ) -> None:
        self._protections = protections
        self._safety = safety
        self._clock = clock
        self._on_error = profile.on_error.value
        self._approve_on_error = profile.on_error is OnError.APPROVE
        self.shadow = profile.mode is Mode.SHADOW
        self._liftable = frozenset(p.key for p in protections if p.can_be_overridden)
        self._entry_rules = frozenset(p.key for p in protections if p.judges_entries)
        self._overriders = [p for p in protections if type(p).overrides is not Protection.overrides]
        # what exit safety splits a reversal by: who judges its open leg, who guards closes
        self._open_judges = frozenset(
            p.key for p in protections if p.judges_entries or Action.OPEN in p.guards
        )
        self._close_guards = [p for p in protections if Action.CLOSE in p.guards]
        self._approved_reasons = {
            a: f"Approved: no protection blocks this {a.value}." for a in Action
        }

    def decide(
        self,
        request: ProtectionRequest,
        now: ClockPoint,
        started: int,
        regime: str | None,
        refusal: str | None = None,
    ) -> tuple[ProtectionDecision, list[str]]:
        """The decision on `request` at `now` and the texts of the systems' failures."""
        errors: list[str] = []
        action = request.action
        results, blocking = self._evaluate(request, now, errors, self._protections)
        overridden: tuple[str, ...] = ()
        if blocking and self._overriders:
            blocking, overridden = self._lift(blocking, now)
        target = request.target_size
        lifted: tuple[str, ...] = ()
        if refusal is not None:
            approved, reason, blocking, target = False, refusal, [], request.current_size
        else:
            approved = not blocking or request.exempt or self.shadow
            safe = (
                None
                if approved or self._safety is None or action not in REDUCING
                else self._safe_exit(self._safety, request, now, blocking, errors)
            )
            if approved:
                reason = self._reason(request, blocking, overridden, results)
            elif safe is not None:
                approved = True
                target, reason, blocking, lifted = safe
            else:
                target, limiting = _clip(request, blocking)
                approved = limiting is not None
                reason = (
                    self._reason(request, blocking, overridden, results)
                    if limiting is None
                    else _partial_reason(request, target, limiting)
                )
        decision = ProtectionDecision.from_values(
            approved,
            action,
            request.asset,
            now.date,
            reason,
            tuple(map(_SYSTEM, blocking)),
            tuple(results),
            bool(overridden),
            overridden,
            regime,
            request.exempt,
            bool(blocking) or bool(lifted),  # a risk exit was objected to
            "; ".join(errors) or None,
            self._clock.trace_text or self._clock.trace_id(),
            (perf_counter_ns() - started) / 1000.0,
            now.bar,
            request.current_size,
            request.target_size,
            target,
            approved and target != request.target_size,
            bool(lifted),
            lifted,
        )
        return decision, errors

    def _lift(
        self, blocking: list[ProtectionResult], now: ClockPoint
    ) -> tuple[list[ProtectionResult], tuple[str, ...]]:
        """The blocking results the regime override does not lift at `now`, and those it does."""
        lifted: frozenset[str] = frozenset()
        for protection in self._overriders:
            lifted = lifted | protection.overrides(now)
        lifted &= self._liftable
        if not lifted:
            return blocking, ()
        return (
            [r for r in blocking if r.system not in lifted],
            tuple([r.system for r in blocking if r.system in lifted]),
        )

    def _safe_exit(
        self,
        safety: ExitSafety,
        request: ProtectionRequest,
        now: ClockPoint,
        blocking: list[ProtectionResult],
        errors: list[str],
    ) -> tuple[float, str, list[ProtectionResult], tuple[str, ...]] | None:
        """What exit safety makes of a denied close, decrease or reversal: (approved target,
        reason, systems still blocking, systems its valve lifted), or None (it stays denied).

        A reversal's close leg is judged as a close of the position by the systems that guard
        closes; its open leg is denied by the blocking systems that judge entries (or guard
        opens) and by those that block the reversal but not the close.
        """
        if request.action is Action.REVERSE:
            close_blocking = self._close_leg(request, now, errors)
            closing = set(map(_SYSTEM, close_blocking))
            open_blocking = [
                r for r in blocking if r.system not in closing or r.system in self._open_judges
            ]
        else:
            close_blocking, open_blocking = blocking, []
        valve = None
        lifted = tuple(map(_SYSTEM, close_blocking))
        if close_blocking:
            if _CORE in lifted and not safety.lifts_core:  # core immunity stays
                return None
            valve = safety.valve(request)
            if valve is None:
                return None
        risk = "" if valve is None else _risk_reason(valve, close_blocking) + " "
        if not open_blocking:  # the whole order may go: its exit is a risk exit
            return request.target_size, risk.rstrip(), [], lifted
        if not safety.close_leg:  # reversal: deny
            return None
        denied = "; ".join(f"{r.system}: {r.reason}" for r in open_blocking)
        reason = (
            f"{risk}Approved as the close alone (exit_safety reversal: close_leg); the open leg "
            f"is denied by {denied}"
        )
        return 0.0, reason, open_blocking, lifted

    def _close_leg(
        self, request: ProtectionRequest, now: ClockPoint, errors: list[str]
    ) -> list[ProtectionResult]:
        """The results that block the close of `request`'s position (a reversal's close leg),
        after the regime override."""
        close = ProtectionRequest(
            request.asset,
            request.current_date,
            request.current_size,
            0.0,
            reason=request.reason,
            score=request.score,
            bar=request.bar,
            metadata=request.metadata,
        )
        blocking = self._evaluate(close, now, errors, self._close_guards)[1]
        return self._lift(blocking, now)[0] if blocking and self._overriders else blocking

    def _evaluate(
        self,
        request: ProtectionRequest,
        now: ClockPoint,
        errors: list[str],
        protections: list[Protection],
    ) -> tuple[list[ProtectionResult], list[ProtectionResult]]:
        """The result of each of `protections` for `request` (a failure follows `on_error`),
        and those of them that do not allow it."""
        results: list[ProtectionResult] = []
        blocking: list[ProtectionResult] = []
        action = request.action
        for protection in protections:
            try:
                if action in protection.guards:
                    result = protection.check(request, now)
                    if protection.in_force:  # adaptive values in force: named in the result
                        result = protection.annotate(result)
                else:
                    result = protection.not_guarded[action]
            except Exception as exc:  # noqa: BLE001 - on_error decides what a failure means
                text = error_text(protection, exc)
                errors.append(text)
                result = ProtectionResult(
                    protection.key,
                    protection.priority,
                    self._approve_on_error,
                    f"{text}; on_error={self._on_error} "
                    + ("lets the order pass." if self._approve_on_error else "keeps the position."),
                    {"error": text},
                )
            results.append(result)
            if not result.allowed:
                blocking.append(result)
        return results, blocking

    def _reason(
        self,
        request: ProtectionRequest,
        blocking: list[ProtectionResult],
        overridden: tuple[str, ...],
        results: list[ProtectionResult],
    ) -> str:
        if blocking:
            first = blocking[0]
            if request.exempt:
                return f"Approved as a safety exit; {first.system} would block: {first.reason}"
            if self.shadow:
                return f"Approved in shadow mode; {first.system} would block: {first.reason}"
            if request.action is Action.REVERSE and all(
                r.system in self._entry_rules for r in blocking
            ):  # only the open leg is refused
                return (
                    f"{first.reason} (The open leg of this reversal is denied; "
                    f"the close alone would be allowed.)"
                )
            return first.reason
        if overridden:
            lifted = next(r for r in results if r.system == overridden[0])
            return (
                f"Approved: the regime override lifts {', '.join(overridden)} "
                f"(which said: {lifted.reason})"
            )
        return self._approved_reasons[request.action]


def _clip(
    request: ProtectionRequest, blocking: list[ProtectionResult]
) -> tuple[float, ProtectionResult | None]:
    """The most restrictive allowed target of the blocking results (the first in priority
    order on ties) and the result that set it; (current size, None) when nothing may move."""
    current = request.current_size
    direction = 1.0 if request.target_size > current else -1.0
    best, limiting = request.target_size, None
    for result in blocking:
        allowed = current if result.allowed_target is None else result.allowed_target
        if (allowed - current) * direction < (best - current) * direction:
            best, limiting = allowed, result
        if best == current:
            return current, None
    return best, limiting


def _partial_reason(request: ProtectionRequest, target: float, limiting: ProtectionResult) -> str:
    return (
        f"Partly approved: {request.asset} may go from {request.current_size:g} to "
        f"{target:g} of the requested {request.target_size:g}; {limiting.system} clips "
        f"it: {limiting.reason}"
    )


def _risk_reason(valve: str, lifted: list[ProtectionResult]) -> str:
    """`Risk exit: <valve and its numbers>; <system> would have denied: <its reason>`."""
    denials = "; ".join(f"{r.system} would have denied: {r.reason}" for r in lifted)
    return f"Risk exit: {valve}; {denials}"
