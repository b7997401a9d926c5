"""The protection orchestrator: every request runs through every enabled system, in priority order.

State moves only with events carrying the backtest clock (`on_fill`, `on_regime`, `on_scores`,
and decisions). Nothing here reads the wall clock except to time a decision. The parts live in
`bt_protection.orchestration`: the clock, the position ledger, the systems and their hooks, the
decision pipeline, the observers (metrics, audit) and the read-only queries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from bt_protection.audit import AuditLog
from bt_protection.durations import ClockPoint
from bt_protection.exit_safety import ExitSafety
from bt_protection.fingerprint import run_fingerprint
from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, to_datetime
from bt_protection.orchestration import queries
from bt_protection.orchestration.clock import Clock
from bt_protection.orchestration.events import EventRouter
from bt_protection.orchestration.ledger import PositionLedger
from bt_protection.orchestration.observers import AuditTrail, Metrics
from bt_protection.orchestration.persisted import PersistedState, replay_refusal
from bt_protection.orchestration.pipeline import DecisionPipeline
from bt_protection.orchestration.systems import Systems
from bt_protection.profile import Profile, load_profile
from bt_protection.state_rows import StateRows


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
        self._clock = Clock(self.profile.name, self.profile.uses_bars, audit)
        self._ledger = PositionLedger()
        self._metrics = Metrics(self.profile.enabled_systems)
        self._trail = AuditTrail(audit, self._clock)
        self._systems = Systems(self.profile, self._ledger.view, self._metrics, self._trail)
        safety = self.profile.exit_safety
        self._safety = None if safety is None else ExitSafety(safety, self._trail.emit)
        systems = self._systems.all
        self._pipeline = DecisionPipeline(self.profile, systems, self._safety, self._clock)
        self._events = EventRouter(
            self.profile, self._clock, self._ledger, self._systems, self._safety, self._trail
        )
        self._saved = PersistedState(
            self.profile.name, self._clock, self._ledger, self._metrics, self._systems, self._safety
        )
        holder = self._safety  # when exit safety alone follows the portfolio: hold_portfolio
        if holder is None or not holder.needs_portfolio or self._systems.hooks["on_portfolio"]:
            holder = None
        self._portfolio_holder = holder
        self.regime_each_bar = False
        """Whether a system wants `on_regime` at the next bar even if the label stays."""

    @classmethod
    def from_profile(
        cls,
        source: Profile | str | os.PathLike[str] | Mapping[str, Any],
        audit: AuditLog | str | os.PathLike[str] | None = None,
    ) -> ProtectionOrchestrator:
        """Shortcut for `ProtectionOrchestrator(load_profile(source), audit)`."""
        return cls(load_profile(source), audit)

    @property
    def trace_each_bar(self) -> bool:
        """True: each bar index passed starts a trace, as if an event came at every bar (set by
        the backtrader mixin, which reports the regime at the first bar and on change only)."""
        return self._clock.trace_each_bar

    @trace_each_bar.setter
    def trace_each_bar(self, value: bool) -> None:
        self._clock.trace_each_bar = value

    @property
    def regime(self) -> str | None:
        return self._systems.regime

    @property
    def positions(self) -> Mapping[str, float]:
        """Positions as the fills reported them."""
        return dict(self._ledger.view)

    def position(self, asset: str) -> float:
        """The position of `asset` as the fills reported it (0 when none was)."""
        return self._ledger.get(asset)

    @property
    def can_deny(self) -> bool:
        """Whether a decision may deny: the profile enforces and enables a system."""
        return not self._pipeline.shadow and bool(self._systems.all)

    @property
    def uses_portfolio(self) -> bool:
        """Whether an enabled system (or exit safety's drawdown valve) follows the portfolio's
        value (`on_portfolio`)."""
        return self._events.uses_portfolio

    @property
    def uses_prices(self) -> bool:
        """Whether an enabled system (or exit safety's position-loss valve) values orders
        (fill prices, `metadata["price"]`: the bar's close)."""
        safety = self._safety
        return bool(self._systems.hooks["on_trade"]) or (safety is not None and safety.needs_prices)

    @property
    def uses_regime(self) -> bool:
        """Whether an enabled system follows the regime label (`on_regime`) or has values by
        regime."""
        return bool(self._systems.hooks["on_regime"] or self._systems.adaptive)

    @property
    def uses_volatility(self) -> bool:
        """Whether a system has a value scaled by volatility (`on_volatility`)."""
        return self._systems.uses_volatility

    def advance(self, date: Any, bar: int | None = None) -> None:
        """Move the clock to the bar at `date` without an event (an adapter that reports the
        regime only on change calls it where a record may follow: a failure, the run's end)."""
        self._clock.advance(date, bar)

    # --- decisions and events ---------------------------------------------------------------

    def can_execute_action(
        self, request: ProtectionRequest, refusal: str | None = None
    ) -> ProtectionDecision:
        """Evaluate `request` with every enabled system and record the decision.

        An exempt request changes no state (no grace starts, ends or is consumed). `refusal`
        (a sentence) denies the request whatever the systems say, e.g. the child of a denied
        bracket parent; the systems are still evaluated for the record, and no state changes.
        """
        started = perf_counter_ns()
        clock = self._clock
        if clock.resume is not None and clock.replaying(request.current_date):  # audited, uncounted
            when = to_datetime(request.current_date, "date")
            refusal = replay_refusal(when, clock.resume)
            now = ClockPoint(when, request.bar)
            decision = self._pipeline.decide(request, now, started, self.regime, refusal)[0]
            self._trail.decision(request, decision, restart=True)
            return decision
        now = clock.advance(request.current_date, request.bar)
        systems = self._systems
        decision, errors = self._pipeline.decide(request, now, started, systems.regime, refusal)
        self._metrics.count(decision)
        self._trail.decision(request, decision)
        if not (request.exempt or refusal):
            errors += systems.after_decision(request, decision, now)
            self.regime_each_bar = systems.wants_each_bar(clock.last_point)
        for text in errors:
            systems.record_error(now, {"asset": request.asset, "error": text})
        return decision

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
        self._events.fill(asset, date, size_before, size_after, bar, price)

    def on_regime(self, date: Any, regime: str, bar: int | None = None) -> None:
        """The confirmed regime label at the bar of `date`: at the first bar, then when it
        changes, and at every bar while `regime_each_bar` is true; between calls it stands."""
        if self._events.regime(date, regime, bar):
            self.regime_each_bar = self._systems.wants_each_bar(self._clock.last_point)

    def on_volatility(self, date: Any, ratio: float | None, bar: int | None = None) -> None:
        """The watched market's realised volatility over its long-run median at the bar of
        `date` (None while it warms up): what volatility-scaled values follow."""
        self._events.volatility(date, ratio, bar)

    def on_portfolio(self, date: Any, value: float, bar: int | None = None) -> None:
        """The portfolio's value (the broker's, cash included) at the bar of `date`."""
        self._events.portfolio(date, value, bar)

    def hold_portfolio(self, value: float) -> bool:
        """Take the portfolio's `value` at a new bar without an event, when it moves nothing a
        decision reads: True (then `on_portfolio` must not follow). That is when exit safety's
        drawdown valve alone follows the value and the value stays under its peak and above
        the trip level (`DrawdownWatch.hold`), while each bar passed numbers a trace anyway
        (`trace_each_bar`) and no restart replays: the next event moves the clock over the bar
        and its trace as the skipped `on_portfolio` would have; what the bars before wrote to
        the audit is flushed, as the new trace would have. False: call `on_portfolio`."""
        holder, clock = self._portfolio_holder, self._clock
        if (
            holder is None
            or not clock.trace_each_bar
            or clock.resume is not None
            or not holder.hold_portfolio(value)
        ):
            return False
        audit = self.audit
        if audit is not None and audit.unflushed:
            audit.flush()
        return True

    def on_scores(self, date: Any, scores: Mapping[str, float], bar: int | None = None) -> None:
        """A score report (one per rebalance); it starts a new trace."""
        self._events.scores(date, scores, bar)

    def report_error(self, asset: str | None, text: str) -> None:
        """Count and audit a failure of the integration around the orchestrator (the run goes
        on), at the last event's time."""
        self._systems.record_error(self._clock.last_point(), {"asset": asset, "error": text})

    def reconcile(self, asset: str, size: float, date: Any, bar: int | None = None) -> bool:
        """Adopt the broker's position `size` of `asset` when it differs from the one the
        state holds: recorded as `state_reconciled` (both sizes), then booked as a fill at
        (date, bar), so a holding clock starts there. True when they differed."""
        return self._events.reconcile(asset, size, date, bar)

    # --- persisted state (docs/live.md) -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the decisions depend on, as plain data (see `PersistedState.state`)."""
        return self._saved.state()

    def state_rows(self, under: str) -> StateRows:
        """What changed since the last call, as a state file's rows under the path `under`
        (see `PersistedState.rows`); `StateRows.join` gives `state()` back."""
        return self._saved.rows(under)

    def restore(self, state: Mapping[str, Any], handled: datetime | None = None) -> None:
        """Take back a `state()` saved under the same profile. Events dated at or before
        `handled` (default: the last saved event), e.g. a live feed's backfill, change nothing
        again, and orders on them are denied."""
        self._saved.restore(state, handled)

    # --- questions and the run's end --------------------------------------------------------

    def get_protection_status(
        self, asset: str, date: Any, bar: int | None = None
    ) -> dict[str, Any]:
        """Each system's view of `asset` at `date` (disabled systems say `enabled: False`)."""
        now, by_key = self._clock.query_point(date, bar), self._systems.by_key
        position = self._ledger.get(asset)
        return queries.protection_status(asset, now, by_key, position, self.regime, self._safety)

    def explain(self, asset: str, action: Action | str, date: Any, bar: int | None = None) -> str:
        """What would happen to `action` on `asset` now, which system decides, and until when."""
        now, position = self._clock.query_point(date, bar), self._ledger.get(asset)
        return queries.explain(self._pipeline, asset, action, now, position, self.regime)

    def get_performance_metrics(self) -> dict[str, Any]:
        """Counts of decisions, blocks by system, errors, and decision time (microseconds)."""
        return self._metrics.report()

    def fail(self, error: BaseException) -> None:
        """The run stopped with `error`: record it and close the audit, keeping every record."""
        self._trail.fail(error)

    def close(self) -> None:
        """Record how the run ended (its date range and counts), then close the audit log."""
        self._trail.close(self._metrics.counts)
