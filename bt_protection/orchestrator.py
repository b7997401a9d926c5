"""The protection orchestrator: every request runs through every enabled system, in priority order.

State moves only with events carrying the backtest clock (`on_fill`, `on_regime`, `on_scores`,
and decisions). Nothing here reads the wall clock except to time a decision.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from bt_protection.adaptive import ByVolatility
from bt_protection.audit import AuditLog
from bt_protection.durations import ClockPoint
from bt_protection.exit_safety import ExitSafety
from bt_protection.fingerprint import run_fingerprint
from bt_protection.models import (
    Action,
    ProtectionDecision,
    ProtectionRequest,
    ProtectionResult,
    to_datetime,
)
from bt_protection.profile import Mode, OnError, Profile, load_profile
from bt_protection.protections.base import HOOKS, REDUCING, Protection, registry

_CORE = "core_asset_immunity"  # what exit safety's `core: keep` leaves alone
_LATENCY_SAMPLES = 1 << 16  # percentiles cover the latest 65,536 decisions: constant memory
_RECENT_ERRORS = 10  # texts of the latest failures kept for the metrics


class ProtectionOrchestrator:
    """Decides whether an order may go to the broker, and why.

    `profile` is a `Profile`, a profile file or a mapping; `audit` is an `AuditLog`, a path to
    write one to, or None.
    """

    def __init__(
        self,
        profile: Profile | str | os.PathLike[str] | Mapping[str, Any],
        audit: AuditLog | str | os.PathLike[str] | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        if isinstance(audit, (str, Path, os.PathLike)):
            audit = AuditLog(audit, run_fingerprint(self.profile))
        self.audit: AuditLog | None = audit
        systems = registry()
        self._protections: list[Protection] = [
            systems[key](self.profile.protections[key], self._emit)
            for key in self.profile.enabled_systems
        ]
        self._by_key = {p.key: p for p in self._protections}
        self._hooks = {
            hook: [p for p in self._protections if hook in type(p).hooks()] for hook in HOOKS
        }
        self._adaptive = [p for p in self._protections if p.profile_config.adaptive]
        self._volatility: float | None = None  # the volatility ratio (on_volatility)
        self._liftable = frozenset(p.key for p in self._protections if p.can_be_overridden)
        self._entry_rules = frozenset(p.key for p in self._protections if p.judges_entries)
        self._overriders = [
            p for p in self._protections if type(p).overrides is not Protection.overrides
        ]
        safety = self.profile.exit_safety
        self._safety = None if safety is None else ExitSafety(safety, self._emit)
        # what exit safety splits a reversal by: who judges its open leg, who guards closes
        self._open_judges = frozenset(
            p.key for p in self._protections if p.judges_entries or Action.OPEN in p.guards
        )
        self._close_guards = [p for p in self._protections if Action.CLOSE in p.guards]
        self._approved_reasons = {
            a: f"Approved: no protection blocks this {a.value}." for a in Action
        }
        self._shadow = self.profile.mode is Mode.SHADOW
        self._approve_on_error = self.profile.on_error is OnError.APPROVE
        self._regimes = self.profile.regimes
        self._needs_bars = self.profile.uses_bars
        self.trace_each_bar = False
        """True: each bar index passed starts a trace, as if an event came at every bar (set by
        the backtrader mixin, which reports the regime at the first bar and on change only)."""
        self.regime_each_bar = False
        """Whether a system wants `on_regime` at the next bar even if the label stays."""
        self._now: ClockPoint | None = None
        self._first: ClockPoint | None = None
        self._trace = 0
        self._trace_text: str | None = None  # the trace id, formatted when first needed
        self._regime: str | None = None
        self._positions: dict[str, float] = {}
        self._counts = {
            "decisions_processed": 0,
            "approved": 0,
            "denied": 0,
            "exempt": 0,
            "partial": 0,
            "risk_exits": 0,
            "overrides_applied": 0,
            "errors": 0,
        }
        self._recent_errors: deque[str] = deque(maxlen=_RECENT_ERRORS)
        self._blocks = {key: 0 for key in self.profile.enabled_systems}
        self._would_block = dict(self._blocks)
        self._latency = array("q", bytes(8 * _LATENCY_SAMPLES))
        self._latency_total = 0
        self._resume: datetime | None = None  # see `restore`: events up to it were handled

    @classmethod
    def from_profile(
        cls,
        source: Profile | str | os.PathLike[str] | Mapping[str, Any],
        audit: AuditLog | str | os.PathLike[str] | None = None,
    ) -> ProtectionOrchestrator:
        """Shortcut for `ProtectionOrchestrator(load_profile(source), audit)`."""
        return cls(load_profile(source), audit)

    @property
    def regime(self) -> str | None:
        return self._regime

    @property
    def positions(self) -> Mapping[str, float]:
        """Positions as the fills reported them."""
        return dict(self._positions)

    def position(self, asset: str) -> float:
        """The position of `asset` as the fills reported it (0 when none was)."""
        return self._positions.get(asset, 0.0)

    @property
    def can_deny(self) -> bool:
        """Whether a decision may deny: the profile enforces and enables a system."""
        return not self._shadow and bool(self._protections)

    @property
    def uses_portfolio(self) -> bool:
        """Whether an enabled system (or exit safety's drawdown valve) follows the portfolio's
        value (`on_portfolio`)."""
        safety = self._safety
        return bool(self._hooks["on_portfolio"]) or (safety is not None and safety.needs_portfolio)

    @property
    def uses_prices(self) -> bool:
        """Whether an enabled system (or exit safety's position-loss valve) values orders
        (fill prices, `metadata["price"]`: the bar's close)."""
        safety = self._safety
        return bool(self._hooks["on_trade"]) or (safety is not None and safety.needs_prices)

    @property
    def uses_regime(self) -> bool:
        """Whether an enabled system follows the regime label (`on_regime`) or has values by
        regime."""
        return bool(self._hooks["on_regime"] or self._adaptive)

    @property
    def uses_volatility(self) -> bool:
        """Whether a system has a value scaled by volatility (`on_volatility`)."""
        return any(
            isinstance(spec, ByVolatility)
            for p in self._adaptive
            for spec in p.profile_config.adaptive.values()
        )

    # --- the clock --------------------------------------------------------------------------

    def _advance(self, date: Any, bar: int | None) -> ClockPoint:
        """Move the clock to (date, bar); a new bar starts a new trace and flushes the audit."""
        now = self._now
        moment = to_datetime(date, "date")  # a date or text of the same moment: same trace
        if now is not None and now.bar == bar and now.date == moment:
            return now
        point = ClockPoint(moment, None if bar is None else int(bar))
        if bar is None and self._needs_bars:
            raise ValueError(
                f"bar is required: profile {self.profile.name!r} counts durations in bars, "
                f"and the event of {point.date.date()} came without its bar index."
            )
        if now is not None and (
            point.date < now.date or (bar is not None and now.bar is not None and bar < now.bar)
        ):
            raise ValueError(
                f"event of {point.describe()} is earlier than the last event "
                f"({now.describe()}): events must come in backtest order."
            )
        if self._first is None:
            self._first = point
        elif self.trace_each_bar and bar is not None and now is not None and now.bar is not None:
            self._trace += max(bar - now.bar - 1, 0)  # the bars passed without an event
        self._now = point
        self._new_trace()
        return point

    def advance(self, date: Any, bar: int | None = None) -> None:
        """Move the clock to the bar at `date` without an event (an adapter that reports the
        regime only on change calls it where a record may follow: a failure, the run's end)."""
        self._advance(date, bar)

    def _new_trace(self) -> None:
        self._trace += 1
        self._trace_text = None
        if self.audit is not None:
            self.audit.flush()

    def _trace_id(self) -> str | None:
        """The current trace id, `"<date of the clock>#<trace number>"`; None before any event.

        Most bars make no record: the text is formatted on first use, then kept in
        `_trace_text` (which the decision path reads first)."""
        text = self._trace_text
        if text is None and self._now is not None:
            text = self._trace_text = f"{self._now.date.date().isoformat()}#{self._trace}"
        return text

    def _emit(self, kind: str, when: ClockPoint, payload: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(kind, when.date, when.bar, self._trace_id(), payload)

    def _query_point(self, date: Any, bar: int | None) -> ClockPoint:
        """A clock point for read-only questions: `bar` defaults to the last bar seen."""
        if bar is None and self._now is not None:
            bar = self._now.bar
        return ClockPoint(to_datetime(date, "date"), bar)

    # --- decisions --------------------------------------------------------------------------

    def can_execute_action(
        self, request: ProtectionRequest, refusal: str | None = None
    ) -> ProtectionDecision:
        """Evaluate `request` with every enabled system and record the decision.

        An exempt request changes no state (no grace starts, ends or is consumed). `refusal`
        (a sentence) denies the request whatever the systems say, e.g. the child of a denied
        bracket parent; the systems are still evaluated for the record, and no state changes.
        """
        started = perf_counter_ns()
        if self._resume is not None and self._handled(request.current_date):
            return self._replayed_decision(request, started)
        now = self._advance(request.current_date, request.bar)
        decision, errors = self._decide(request, now, started, refusal)
        self._count(decision)
        if self.audit is not None:
            self.audit.record_decision(request, decision)
        if not (request.exempt or refusal):
            for protection in self._hooks["after_decision"]:
                try:
                    protection.after_decision(request, decision, now)
                except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
                    errors.append(self._error_text(protection, exc))
            self._ask_each_bar()
        for text in errors:
            self._record_error(now, {"asset": request.asset, "error": text})
        return decision

    def _decide(
        self,
        request: ProtectionRequest,
        now: ClockPoint,
        started: int,
        refusal: str | None = None,
    ) -> tuple[ProtectionDecision, list[str]]:
        errors: list[str] = []
        action = request.action
        results = self._evaluate(request, now, errors, self._protections)
        blocking = [r for r in results if not r.allowed]
        overridden: tuple[str, ...] = ()
        if blocking and self._overriders:
            blocking, overridden = self._lift(blocking, now)
        target = request.target_size
        lifted: tuple[str, ...] = ()
        if refusal is not None:
            approved, reason, blocking, target = False, refusal, [], request.current_size
        else:
            approved = not blocking or request.exempt or self._shadow
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
                target, limiting = self._clip(request, blocking)
                approved = limiting is not None
                reason = (
                    self._reason(request, blocking, overridden, results)
                    if limiting is None
                    else self._partial_reason(request, target, limiting)
                )
        decision = ProtectionDecision.from_values(
            approved,
            action,
            request.asset,
            now.date,
            reason,
            tuple([r.system for r in blocking]),
            tuple(results),
            bool(overridden),
            overridden,
            self._regime,
            request.exempt,
            bool(blocking) or bool(lifted),  # a risk exit was objected to
            "; ".join(errors) or None,
            self._trace_text or self._trace_id(),
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
            tuple(r.system for r in blocking if r.system in lifted),
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
            closing = {r.system for r in close_blocking}
            open_blocking = [
                r for r in blocking if r.system not in closing or r.system in self._open_judges
            ]
        else:
            close_blocking, open_blocking = blocking, []
        valve = None
        if close_blocking:
            valve = safety.valve(request)
            keeps = not safety.lifts_core and any(r.system == _CORE for r in close_blocking)
            if valve is None or keeps:
                return None
        lifted = tuple(r.system for r in close_blocking)
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
        blocking = [
            r for r in self._evaluate(close, now, errors, self._close_guards) if not r.allowed
        ]
        return self._lift(blocking, now)[0] if blocking and self._overriders else blocking

    def _evaluate(
        self,
        request: ProtectionRequest,
        now: ClockPoint,
        errors: list[str],
        protections: list[Protection],
    ) -> list[ProtectionResult]:
        """The result of each of `protections` for `request` (a failure follows `on_error`)."""
        results: list[ProtectionResult] = []
        action = request.action
        for protection in protections:
            try:
                if action in protection.guards:
                    result = protection.annotate(protection.check(request, now))
                else:
                    result = protection.not_guarded[action]
            except Exception as exc:  # noqa: BLE001 - on_error decides what a failure means
                text = self._error_text(protection, exc)
                errors.append(text)
                result = ProtectionResult(
                    protection.key,
                    protection.priority,
                    self._approve_on_error,
                    f"{text}; on_error={self.profile.on_error.value} "
                    + ("lets the order pass." if self._approve_on_error else "keeps the position."),
                    {"error": text},
                )
            results.append(result)
        return results

    @staticmethod
    def _clip(
        request: ProtectionRequest, blocking: list[ProtectionResult]
    ) -> tuple[float, ProtectionResult | None]:
        """The most restrictive allowed target of the blocking results (the first in priority
        order on ties) and the result that set it; (current size, None) when nothing may
        move."""
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

    @staticmethod
    def _partial_reason(
        request: ProtectionRequest, target: float, limiting: ProtectionResult
    ) -> str:
        return (
            f"Partly approved: {request.asset} may go from {request.current_size:g} to "
            f"{target:g} of the requested {request.target_size:g}; {limiting.system} clips "
            f"it: {limiting.reason}"
        )

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
            if self._shadow:
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

    @staticmethod
    def _error_text(protection: Protection, exc: Exception) -> str:
        return f"{protection.key} raised {type(exc).__name__}: {exc}"

    def _count(self, decision: ProtectionDecision) -> None:
        counts = self._counts
        n = counts["decisions_processed"]
        counts["decisions_processed"] = n + 1
        counts["approved" if decision.approved else "denied"] += 1
        if decision.partial:
            counts["partial"] += 1
        if decision.risk_exit:
            counts["risk_exits"] += 1
            for system in decision.lifted_systems:  # approved although it objected
                self._would_block[system] += 1
        if decision.exempt:
            counts["exempt"] += 1
        if decision.override_applied:
            counts["overrides_applied"] += 1
        # blocks count real denials; exempt and shadow decisions count as would-blocks
        tally = self._blocks if decision.partial or not decision.approved else self._would_block
        for system in decision.blocking_systems:
            tally[system] += 1
        nanos = int(decision.decision_time_us * 1000)
        self._latency[n % _LATENCY_SAMPLES] = nanos
        self._latency_total += nanos

    # --- events -----------------------------------------------------------------------------

    def on_fill(
        self,
        asset: str,
        date: Any,
        size_before: float,
        size_after: float,
        bar: int | None = None,
        price: float | None = None,
    ) -> None:
        """An execution moved the position of `asset` from `size_before` to `size_after`
        (at `price`, when given: what turnover budgets count)."""
        if not isinstance(asset, str) or not asset:
            raise ValueError(f"asset must be a non-empty string, not {asset!r}.")
        before, after = float(size_before), float(size_after)
        if not (math.isfinite(before) and math.isfinite(after)):
            raise ValueError(f"fill sizes of {asset} must be finite, not {before} -> {after}.")
        if before == after:
            raise ValueError(
                f"fill of {asset} changes nothing: size_before and size_after are {before:g}."
            )
        known = self._positions.get(asset)
        if known is None and before != 0:
            raise ValueError(
                f"unknown asset {asset}: its fill starts from {before:g}, but no position of "
                f"{asset} was ever reported."
            )
        if known is not None and not math.isclose(known, before, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                f"fill of {asset} starts from {before:g}, but the fills so far left {known:g}."
            )
        if self._resume is not None and self._handled(date):
            return
        now = self._advance(date, bar)
        self._positions[asset] = after
        if self._safety is not None:
            self._safety.on_fill(asset, before, after, price)
        for protection in self._hooks["on_fill"]:
            self._guarded(protection, "on_fill", now, asset, asset, now, before, after)
        if price is not None:
            traded = abs(after - before)
            for protection in self._hooks["on_trade"]:
                self._guarded(protection, "on_trade", now, asset, asset, now, traded, price)
        self._emit("fill", now, {"asset": asset, "size_before": before, "size_after": after})

    def on_regime(self, date: Any, regime: str, bar: int | None = None) -> None:
        """The confirmed regime label at the bar of `date`: at the first bar, then when it
        changes, and at every bar while `regime_each_bar` is true; between calls it stands."""
        if regime not in self._regimes:
            raise ValueError(
                f"unknown regime {regime!r}; profile {self.profile.name!r} knows "
                f"{', '.join(self._regimes)}."
            )
        if self._resume is not None and self._handled(date):
            return
        now = self._advance(date, bar)
        if regime != self._regime:
            if self._regime is not None:
                self._emit("regime_change", now, {"from": self._regime, "to": regime})
            self._regime = regime
        self._adapt()
        for protection in self._hooks["on_regime"]:
            self._guarded(protection, "on_regime", now, None, now, regime)
        self._ask_each_bar()

    def _ask_each_bar(self) -> None:
        """Refresh `regime_each_bar` (after the events that move a window: labels, decisions).
        A system that fails to answer is recorded and gets the label every bar."""
        wanted = False
        for protection in self._hooks["on_regime"]:
            try:
                wanted = wanted or protection.wants_each_bar()
            except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
                text = self._error_text(protection, exc)
                self._record_error(self._last_point(), {"hook": "wants_each_bar", "error": text})
                wanted = True
        self.regime_each_bar = wanted

    def on_volatility(self, date: Any, ratio: float | None, bar: int | None = None) -> None:
        """The watched market's realised volatility over its long-run median at the bar of
        `date` (None while it warms up): what volatility-scaled values follow."""
        if ratio is not None and not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError(f"volatility ratio must be a finite number >= 0, not {ratio!r}.")
        self._advance(date, bar)
        self._volatility = ratio
        self._adapt()

    def _adapt(self) -> None:
        """Put in force each adaptive system's values for the current regime and volatility."""
        for protection in self._adaptive:
            protection.adapt(self._regime, self._volatility)

    def on_portfolio(self, date: Any, value: float, bar: int | None = None) -> None:
        """The portfolio's value (the broker's, cash included) at the bar of `date`."""
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"portfolio value must be a finite number, not {value!r}.")
        hooked = self._hooks["on_portfolio"]
        safety = self._safety
        if hooked or (safety is not None and safety.needs_portfolio):
            if self._resume is not None and self._handled(date):
                return
            now = self._advance(date, bar)
            for protection in hooked:
                self._guarded(protection, "on_portfolio", now, None, now, number)
            if safety is not None:
                safety.on_portfolio(now, number)

    def on_scores(self, date: Any, scores: Mapping[str, float], bar: int | None = None) -> None:
        """A score report (one per rebalance); it starts a new trace."""
        clean: dict[str, float] = {}
        for asset, score in scores.items():
            value = float(score)
            if not math.isfinite(value):
                raise ValueError(f"score of {asset} must be a finite number, not {score!r}.")
            clean[str(asset)] = value
        if self._resume is not None and self._handled(date):
            return
        trace = self._trace
        now = self._advance(date, bar)
        if self._trace == trace or self.trace_each_bar:  # the bar itself started one
            self._new_trace()
        self._emit("scores", now, {"scores": dict(sorted(clean.items()))})
        for protection in self._hooks["on_scores"]:
            self._guarded(protection, "on_scores", now, None, now, clean)

    def _guarded(
        self,
        protection: Protection,
        hook: str,
        now: ClockPoint,
        asset: str | None,
        *args: Any,
    ) -> None:
        """Run the event hook `hook`; a failure is recorded and counted, and the run goes on."""
        try:
            getattr(protection, hook)(*args)
        except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
            text = self._error_text(protection, exc)
            self._record_error(now, {"asset": asset, "hook": hook, "error": text})

    def report_error(self, asset: str | None, text: str) -> None:
        """Count and audit a failure of the integration around the orchestrator (the run goes
        on), at the last event's time."""
        self._record_error(self._last_point(), {"asset": asset, "error": text})

    def _last_point(self) -> ClockPoint:
        """The clock of the last event (the epoch before any): where run-level records go."""
        return self._now or ClockPoint(to_datetime("1970-01-01"))

    def _record_error(self, now: ClockPoint, payload: dict[str, Any]) -> None:
        """Count a protection's failure, keep its text for the metrics and audit it."""
        self._counts["errors"] += 1
        self._recent_errors.append(payload["error"])
        self._emit("error", now, payload)

    # --- persisted state (docs/live.md) -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the decisions depend on, as plain data: each system's state, exit safety's,
        positions, the regime, the counters and the last event's time and bar. Decision timings
        (wall clock) are left out."""
        return {
            "now": self._now,
            "first": self._first,
            "trace": self._trace,
            "regime": self._regime,
            "volatility": self._volatility,
            "positions": self._positions,
            "counts": self._counts,
            "recent_errors": list(self._recent_errors),
            "blocks": self._blocks,
            "would_block": self._would_block,
            "protections": {p.key: p.state() for p in self._protections},
            "exit_safety": None if self._safety is None else self._safety.state(),
        }

    def restore(self, state: Mapping[str, Any], handled: datetime | None = None) -> None:
        """Take back a `state()` saved under the same profile. Events dated at or before
        `handled` (default: the last saved event), e.g. a live feed's backfill, change nothing
        again, and orders on them are denied."""
        saved = state["protections"]
        if set(saved) != set(self._by_key):
            raise ValueError(
                f"the saved state has systems {', '.join(sorted(saved))}, not "
                f"{', '.join(sorted(self._by_key))} of profile {self.profile.name!r}."
            )
        for key, value in saved.items():
            self._by_key[key].restore(value)
        if self._safety is not None and state["exit_safety"] is not None:
            self._safety.restore(state["exit_safety"])
        self._now, self._first = state["now"], state["first"]
        self._trace, self._regime = state["trace"], state["regime"]
        self._volatility = state["volatility"]
        self._adapt()  # the values in force at the saved regime and volatility
        self._positions = dict(state["positions"])
        self._counts.update(state["counts"])
        self._recent_errors.extend(state["recent_errors"])
        self._blocks.update(state["blocks"])
        self._would_block.update(state["would_block"])
        last = None if self._now is None else self._now.date
        marks = [d for d in (last, handled) if d is not None]
        self._resume = max(marks) if marks else None

    def _handled(self, date: Any) -> bool:
        """Whether an event dated `date` was handled before the restart (then it is ignored);
        the first later event ends the replay."""
        resume = self._resume
        assert resume is not None
        if to_datetime(date, "date") <= resume:
            return True
        self._resume = None
        return False

    def _replayed_decision(self, request: ProtectionRequest, started: int) -> ProtectionDecision:
        """The denial of an order on a bar handled before the restart: recorded, uncounted, and
        no state moves (the uninterrupted run decided that bar already)."""
        resume = self._resume
        assert resume is not None
        when = to_datetime(request.current_date, "date")
        refusal = (
            f"Denied: the bar of {when.date().isoformat()} was handled before the restart "
            f"(the state is saved through {resume.date().isoformat()}); an order on it is "
            "never sent twice."
        )
        decision, _ = self._decide(request, ClockPoint(when, request.bar), started, refusal)
        if self.audit is not None:
            self.audit.record_decision(request, decision, restart=True)
        return decision

    def reconcile(self, asset: str, size: float, date: Any, bar: int | None = None) -> bool:
        """Adopt the broker's position `size` of `asset` when it differs from the one the
        state holds: recorded as `state_reconciled` (both sizes), then booked as a fill at
        (date, bar), so a holding clock starts there. True when they differed."""
        saved = self._positions.get(asset, 0.0)
        if math.isclose(saved, size, rel_tol=1e-9, abs_tol=1e-9):
            return False
        if self._resume is not None and self._handled(date):
            raise ValueError(f"reconcile {asset} after the handled bars, not on {date}.")
        now = self._advance(date, bar)
        self._emit("state_reconciled", now, {"asset": asset, "saved": saved, "broker": size})
        self.on_fill(asset, date, saved, size, bar)
        return True

    # --- questions --------------------------------------------------------------------------

    def get_protection_status(
        self, asset: str, date: Any, bar: int | None = None
    ) -> dict[str, Any]:
        """Each system's view of `asset` at `date` (disabled systems say `enabled: False`)."""
        now = self._query_point(date, bar)
        protections: dict[str, Any] = {}
        for key, cls in registry().items():
            protection = self._by_key.get(key)
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
            "position": self._positions.get(asset, 0.0),
            "regime": self._regime,
            "protections": protections,
        }
        if self._safety is not None:
            status["exit_safety"] = self._safety.status(asset)
        return status

    def explain(self, asset: str, action: Action | str, date: Any, bar: int | None = None) -> str:
        """What would happen to `action` on `asset` now, which system decides, and until when."""
        now = self._query_point(date, bar)
        wanted = Action(action)
        held = self._positions.get(asset, 0.0) or 1.0
        sizes = {
            Action.OPEN: (0.0, 1.0),
            Action.CLOSE: (held, 0.0),
            Action.INCREASE: (held, 2 * held),
            Action.DECREASE: (held, held / 2),
            Action.REVERSE: (held, -held),
        }[wanted]
        request = ProtectionRequest(asset, now.date, *sizes, bar=now.bar)
        decision, _ = self._decide(request, now, perf_counter_ns())
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
            lines.append(
                f"Lifted by the regime override: {', '.join(decision.overridden_systems)}."
            )
        return "\n".join(lines)

    def get_performance_metrics(self) -> dict[str, Any]:
        """Counts of decisions, blocks by system, errors, and decision time (microseconds)."""
        counts: dict[str, Any] = dict(self._counts)
        n = counts["decisions_processed"]
        counts["approval_rate"] = counts["approved"] / n if n else 0.0
        counts["blocks_by_system"] = dict(self._blocks)
        counts["would_block_by_system"] = dict(self._would_block)
        counts["recent_errors"] = list(self._recent_errors)
        samples = sorted(self._latency[: min(n, _LATENCY_SAMPLES)])
        counts["decision_time_us"] = {
            "mean": self._latency_total / n / 1000.0 if n else 0.0,
            "p50": samples[len(samples) // 2] / 1000.0 if samples else 0.0,
            "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000.0
            if samples
            else 0.0,
        }
        return counts

    def fail(self, error: BaseException) -> None:
        """The run stopped with `error`: record it and close the audit, keeping every record."""
        if self.audit is not None and not self.audit.closed:
            self._emit(
                "run_failed", self._last_point(), {"error": f"{type(error).__name__}: {error}"}
            )
            self.audit.close()

    def close(self) -> None:
        """Record how the run ended (its date range and counts), then close the audit log."""
        if self.audit is None or self.audit.closed:
            return
        if self._now is not None and self._first is not None:
            counts = self._counts
            self._emit(
                "run_end",
                self._now,
                {
                    "first": self._first.date,
                    "last": self._now.date,
                    "decisions": counts["decisions_processed"],
                    "approved": counts["approved"],
                    "denied": counts["denied"],
                    "errors": counts["errors"],
                },
            )
        self.audit.close()


def _risk_reason(valve: str, lifted: list[ProtectionResult]) -> str:
    """`Risk exit: <valve and its numbers>; <system> would have denied: <its reason>`."""
    denials = "; ".join(f"{r.system} would have denied: {r.reason}" for r in lifted)
    return f"Risk exit: {valve}; {denials}"
