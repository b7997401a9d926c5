"""`ProtectionMixin`: every order of a backtrader strategy asks the orchestrator first.

Every order-creating path of `bt.Strategy` (`buy`, `sell`, `close`, `order_target_*`,
brackets, `SignalStrategy`) ends in `Strategy.buy` / `Strategy.sell`; the mixin intercepts
there. A denied order comes back in `Rejected` status with the decision in
`order.info.protection` and reaches `notify_order` through the broker's notification queue,
without ever entering the broker's pending orders. A partly approved order (`decision.partial`)
is sent with the allowed size (`decision.approved_size`); the decision in `order.info.protection`
says what was requested and why the rest was clipped.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

import backtrader as bt

from bt_protection.errors import UserError
from bt_protection.fingerprint import run_fingerprint
from bt_protection.integration.audit_path import audit_file, claim, params_text
from bt_protection.integration.feeds import asset_name
from bt_protection.integration.gate import (
    ORDER_EXTRAS,
    OrderGate,
    RefusedParent,
    order_arguments,
    size_to_send,
)
from bt_protection.integration.rebalancer import ProtectionAwareRebalancer
from bt_protection.integration.regime import (
    ClockRegime,
    CompositeIndex,
    RegimeIndicator,
    label_of,
)
from bt_protection.integration.rejected import RejectedOrders
from bt_protection.integration.replay import Market, RecordedBar, RecordingMarket, RegimeReplay
from bt_protection.models import ProtectionDecision
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile
from bt_protection.regimes import RegimeSource, regime_source
from bt_protection.state import StateError, StateFile


def bar_datetime(number: float) -> datetime:
    """backtrader's date number as a naive datetime, equal to `bt.num2date(number)`; a bar
    at midnight (daily data) takes the short way, as the mixin converts one date a bar."""
    day = int(number)
    return datetime.fromordinal(day) if number == day else bt.num2date(number)


def _local_zone(data: Any) -> tzinfo | None:
    """The time zone of a feed's own calendar: its `tz`, else that of a pandas feed's
    timezone-aware index (backtrader keeps such times in UTC and forgets the zone)."""
    zone = getattr(data, "_tz", None)
    if zone is None:
        zone = getattr(getattr(getattr(data.p, "dataname", None), "index", None), "tz", None)
    return zone


def _unique_lines(cls: Any) -> None:
    """Give a strategy class its lines once each: backtrader adds the lines of every base
    after the first again, so `class S(ProtectionMixin, bt.Strategy)` would get `datetime`
    twice (and writers an extra column)."""
    names = cls.lines._getlines()
    if len(set(names)) < len(names):
        unique = tuple(dict.fromkeys(names))
        cls.lines = bt.Lines._derive(
            cls.__name__, unique, cls.lines._getlinesextra(), (), linesoverride=True
        )


def _refused(parent: Any) -> RefusedParent | None:
    """A bracket parent the protection denied, as the gate reads it (None: no such parent)."""
    if parent is None or parent.status != bt.Order.Rejected:
        return None
    decision = parent.info.get("protection")
    return RefusedParent(
        parent.size,
        parent.isbuy(),
        parent.info.get("protection_attempt"),
        decision.reason if decision is not None else None,
    )


def _derived(data: Any) -> bool:
    """Whether a feed is a resampled or replayed copy of another (`resampledata`/`replaydata`)."""
    return isinstance(data, bt.DataClone) or any(
        isinstance(f, (bt.resamplerfilter.Resampler, bt.resamplerfilter.Replayer))
        for f, _, _ in data._filters
    )


def _with_setup(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a strategy's `__init__` so the protection is set up before its first line."""

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "protection" not in self.__dict__:
            self._protection_setup()
        init(self, *args, **kwargs)

    return __init__


class ProtectionMixin(bt.Strategy):
    """Put the protection orchestrator between the strategy and the broker.

    Params: `protection` (profile file, mapping or `Profile`; required), `regime_data` (name of
    the feed the regime indicator watches; default the profile's `regime.data`, else the only
    feed, else the equal-weight composite of the feeds: docs/regime.md), `audit_path`
    (JSONL file; placeholders `{profile}`, `{strategy}`, `{params}`, `{run}`: see
    `audit_path.py`), `run_info` (a mapping added to the audit header, e.g. the data's
    date range) and `regime_replay` (a `RegimeReplay`: record the regime code and volatility
    ratio the orchestrator follows at each bar, or give it recorded ones; the tune's timing
    test, `bt_protection.integration.replay`).
    Order keywords: `protection_exempt=True` marks a safety exit, `protection_reason` and
    `protection_score` travel with the request.
    """

    params: Any = (  # backtrader turns it into the params class `self.p`
        ("protection", None),
        ("regime_data", None),
        ("audit_path", None),
        ("run_info", None),
        ("regime_replay", None),
        ("protection_state", None),
        ("protection_state_reset", False),
    )

    protection: ProtectionOrchestrator
    # Save the state before an approved order reaches the broker (a live broker acts on it at
    # once). A paper broker saved with the state in one transaction needs only the end of bar.
    _protection_save_before_order = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # No metaclass of our own (it would clash with bt.SignalStrategy's): each subclass's
        # own __init__ sets the protection up first, so it needs no super().__init__().
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _with_setup(init)  # type: ignore[method-assign]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # backtrader builds the instance's lines from `cls.lines` right after this
        if "_protection_lines" not in cls.__dict__:
            _unique_lines(cls)
            cls._protection_lines = True
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "protection" not in self.__dict__:
            self._protection_setup()
        super().__init__(*args, **kwargs)

    def _protection_setup(self) -> None:
        if self.p.protection is None:
            raise UserError(
                f"{type(self).__name__} needs the `protection` param: a profile file, a "
                "shipped profile's name, a mapping or a loaded Profile."
            )
        profile = load_profile(self.p.protection)
        self._protection_assets = self._feed_assets()
        self._check_core_assets(profile)
        if not callable(getattr(self.broker, "notify", None)):
            raise UserError(
                f"broker {type(self.broker).__name__} has no notify(order) method, so denied "
                "orders could not reach notify_order; use backtrader's BackBroker."
            )
        source = regime_source(  # refused at start when it names no feed
            self.p.regime_data or profile.regime.data, [asset_name(d) for d in self._markets()]
        )
        audit = None
        if self.p.audit_path or profile.audit.path:
            strategy = type(self).__name__
            values = {
                "profile": profile.name,
                "strategy": strategy,
                "params": params_text(self.p._getkwargs(), ProtectionMixin.params._getkeys()),
            }
            template = str(self.p.audit_path or profile.audit.path)
            path = audit_file(template, values, bool(self.env._dooptimize), strategy)
            claim(path, self)
            details = {
                "data": [asset_name(d) for d in self.datas],
                **(self.p.run_info or {}),
                "regime_data": source.label,
            }
            audit = self._protection_audit_log(path, run_fingerprint(profile, **details))
        self.protection = ProtectionOrchestrator(profile, audit)
        self._protection_regime: RegimeIndicator | None = None
        self._protection_regime_source = (source, profile.regime)
        self._protection_started = False
        self._protection_market: Market | None = None  # see _start
        self._protection_zone = _local_zone(self.datas[0])
        self._protection_bar = -1
        self._protection_number: float | None = None  # the date number _notify saw last
        self._protection_bar_clock: tuple[float, Any, int] | None = None  # see _bar_clock
        # the line read every bar, looked up at _start (backtrader's attribute access is slow)
        self._protection_dates: Any = None
        self._protection_code = -1  # the regime code last reported (none yet)
        self._protection_in_bar = False  # inside _next/_oncepost: the strategy moved already
        self._protection_attempts = 0
        self._protection_gate = OrderGate()  # the position orders act on, live ones in
        self._protection_prices = self.protection.uses_prices  # turnover values orders
        self._protection_listeners: list[Callable[[ProtectionDecision], None]] = []
        self._protection_hook = getattr(self, "notify_protection", None)
        self._protection_store: StateFile | None = None
        self._protection_resume: datetime | None = None  # the last bar handled before a restart
        self._protection_offset = 0  # bars keep counting from the saved bar (docs/live.md)
        if self.p.protection_state:
            self._protection_open_state(profile, self.p.protection_state)

    def _protection_open_state(self, profile: Any, path: Any) -> None:
        """Open the state file `path`, restore what it holds; reconcile at the first new bar."""
        assets = sorted(set(self._protection_assets.values()))
        store = StateFile.open(path, profile, assets, bool(self.p.protection_state_reset))
        self._protection_store = store
        saved = store.load()
        self._protection_saved_bar = -1
        if saved is not None:
            handled, bar = saved["bar"]
            try:
                self.protection.restore(saved["orchestrator"], handled)
            except (ValueError, KeyError) as error:
                store.close()
                raise StateError(
                    f"state file {store.path} does not fit profile {profile.name!r}: {error}"
                ) from None
            self._protection_resume, self._protection_saved_bar = handled, bar
            self._protection_attempts = saved["attempts"]
        self._protection_reconcile = True

    def _protection_audit_log(self, path: str, fingerprint: dict[str, Any]) -> Any:
        """The run's `AuditLog` (a hook: `bt-protection paper` appends to its own on resume)."""
        from bt_protection.audit import AuditLog

        return AuditLog(path, fingerprint)

    def _feed_assets(self) -> dict[int, str]:
        """The asset of each feed (by `id`): its name; a single unnamed feed is `data0`.

        Among several feeds an unnamed one is an error, unless it is a resampled or replayed
        copy: those need a name only when they are traded (see `_asset_of`).
        """
        datas = self.datas
        if len(datas) == 1:
            return {id(datas[0]): datas[0]._name or "data0"}
        for i, data in enumerate(datas):
            if not data._name and not _derived(data):
                raise UserError(
                    f"{type(self).__name__} has {len(datas)} data feeds and feed {i} has no "
                    "name; name every feed with cerebro.adddata(data, name='TICKER'), since "
                    "assets are feed names."
                )
        return {id(d): d._name for d in datas if d._name}

    def _check_core_assets(self, profile: Any) -> None:
        core = profile.protections.get("core_asset_immunity")
        if core is None or not core.enabled:
            return
        feeds = sorted(set(self._protection_assets.values()))
        for asset in sorted(core.assets):
            if asset not in feeds:
                close = [f for f in feeds if f.lower() == asset.lower()]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(
                    f"core asset {asset!r} (protections.core_asset_immunity.assets of profile "
                    f"{profile.name!r}) names no feed of this run{hint}; feeds: "
                    f"{', '.join(feeds)}."
                )

    def _asset_of(self, data: Any) -> str:
        asset = self._protection_assets.get(id(data))
        if asset is None:
            index = next(i for i, d in enumerate(self.datas) if d is data)
            raise UserError(
                f"an order was placed on feed {index}, a resampled or replayed feed without a "
                "name; name it, e.g. cerebro.resampledata(data, name='AAPL_W', ...) "
                "(or replaydata), since assets are feed names."
            )
        return asset

    def _markets(self) -> list[Any]:
        """The feeds a regime can watch: all but unnamed resampled or replayed copies."""
        return [d for d in self.datas if d._name or not _derived(d)]

    def _regime_feeds(self, source: RegimeSource) -> list[Any]:
        """The feed the regime watches, or the feeds of its composite: those of the finest
        time frame, resampled or replayed copies left out (they repeat a feed)."""
        if source.feed is not None:
            return [next(d for d in self._markets() if asset_name(d) == source.feed)]
        feeds = [d for d in self.datas if not _derived(d)] or list(self.datas)
        finest = min((d._timeframe, d._compression) for d in feeds)
        return [d for d in feeds if (d._timeframe, d._compression) == finest]

    def _regime_feed(self, source: RegimeSource) -> Any:
        """The feed the regime indicator watches, or the composite index of its feeds."""
        feeds = self._regime_feeds(source)
        return feeds[0] if source.feed is not None else CompositeIndex(*feeds)

    @property
    def regime(self) -> RegimeIndicator:
        """The `RegimeIndicator` on the regime feed.

        Built on first use, which must be in `__init__` (indicators are created there) for the
        strategy to read it later. The protection itself follows the same rules on the
        strategy's clock (`ClockRegime`), so it needs no indicator.
        """
        if self._protection_regime is None:
            if self._protection_started:
                raise UserError(
                    f"{type(self).__name__} reads self.regime after __init__, where backtrader "
                    "can no longer add an indicator; read self.regime once in __init__ to "
                    "build it."
                )
            self._protection_regime = self._build_regime()
        return self._protection_regime

    def _build_regime(self) -> RegimeIndicator:
        source, config = self._protection_regime_source
        try:
            return RegimeIndicator.from_config(self._regime_feed(source), config, self._markets())
        except ValueError as error:  # a credit feed not in the run
            raise UserError(str(error)) from None

    @property
    def protection_regime_record(self) -> tuple[RecordedBar, ...] | None:
        """What a recording `regime_replay` recorded: each bar's ISO datetime, regime code and
        volatility ratio; None when there is no recording (no replay, a replay, no regime)."""
        market = self._protection_market
        return tuple(market.recorded) if isinstance(market, RecordingMarket) else None

    @property
    def protection_date(self) -> Any:
        """The backtest date orders are decided at now (see `protection_bar`)."""
        return self._order_clock()[0]

    @property
    def protection_bar(self) -> int:
        """The bar index (0 = first bar) orders are decided at now.

        Usually the bar `next` runs on. Timers and `next_open` run before the strategy moves to
        a new bar while the feeds already have: their orders belong to that new bar, as do its
        fills.
        """
        return self._order_clock()[1]

    def _order_clock(self) -> tuple[Any, int]:
        if self._protection_in_bar:  # in next or a notification of it: the strategy's own bar
            return self._bar_clock()[1:]
        # The strategy's datetime is the newest of its feeds' once it moved to a bar.
        dates = [d.datetime[0] for d in self.datas if len(d)]
        if not dates:  # in start(): the first bar, if a preloaded feed tells its date
            dates = [d.datetime.array[0] for d in self.datas if len(d.datetime.array)]
            if not dates:
                raise UserError(
                    f"{type(self).__name__} placed an order before any bar was loaded (in "
                    "start(), with preload off); place it in next or prenext."
                )
            return self._local(min(dates)), 0
        newest = max(dates)
        return self._local(newest), self._bar_of(newest)

    def _bar_of(self, number: float) -> int:
        """The bar of an event dated `number` between two bars: the strategy's own when dated
        there (cheat-on-close) or when no feed has a new bar (a replayed bar updating in
        place), else the one it moves to next."""
        bar = len(self)
        if bar and (
            number <= self._protection_dates[0]
            or not any(len(d) > n for d, n in zip(self.datas, self._dlens, strict=True))
        ):
            return bar - 1 + self._protection_offset
        return bar + self._protection_offset

    def _local(self, number: float) -> datetime:
        """backtrader's date number as a naive datetime on the first feed's own calendar."""
        zone = self._protection_zone
        return bar_datetime(number) if zone is None else bt.num2date(number, zone)

    def _bar_clock(self) -> tuple[float, Any, int]:
        """The date number, date and index of the strategy's current bar, converted once per
        bar and again when a replayed bar updates in place."""
        number = self._protection_dates[0]
        clock = self._protection_bar_clock
        if clock is None or clock[0] != number:
            when = self._local(number)
            if self._protection_store is not None and self._protection_reconcile:
                self._protection_first_bar(when)
            bar = len(self) - 1 + self._protection_offset
            clock = self._protection_bar_clock = (number, when, bar)
        return clock

    def _protection_first_bar(self, when: datetime) -> None:
        """At the first bar after the ones handled before a restart: bars count on from the
        saved bar, and the broker's positions are compared with the saved ones and taken."""
        resume = self._protection_resume
        if resume is not None and when <= resume:
            return
        self._protection_reconcile = False
        self._protection_resume = None
        bar = len(self) - 1
        if resume is not None:
            self._protection_offset = self._protection_saved_bar + 1 - bar
        bar += self._protection_offset
        for data in self._markets_traded():
            self.protection.reconcile(
                self._asset_of(data), self.getposition(data).size, when, bar=bar
            )

    def _markets_traded(self) -> list[Any]:
        return [d for d in self.datas if id(d) in self._protection_assets]

    def _protection_save(self, when: datetime, bar: int) -> None:
        """Save the orchestrator's state, handled through the bar (when, bar), in one
        transaction."""
        store = self._protection_store
        assert store is not None
        rows = self.protection.state_rows("orchestrator")  # what changed since the last save
        rows.parts["bar"] = (when, bar)
        rows.parts["attempts"] = self._protection_attempts
        store.save(rows, self._protection_records())

    def _protection_records(self) -> Iterable[tuple[str, str]]:
        """What else to save in the same transaction as the state, as (key, text) records (a
        hook: `bt-protection paper` saves its paper broker)."""
        return ()

    # --- hooks ------------------------------------------------------------------------------

    def add_protection_listener(self, listener: Callable[[ProtectionDecision], None]) -> None:
        """Also send every decision to `listener` (the analyzer and rebalancer use this)."""
        self._protection_listeners.append(listener)

    def order_target_weights(
        self,
        targets: Mapping[str, float],
        reason: str = "rebalance",
        scores: Mapping[str, float] | None = None,
    ) -> Any:
        """Move to target weights (by feed name) through a `ProtectionAwareRebalancer`.

        The one-line replacement for a loop of `order_target_percent` calls: sells go first,
        and the weight a denied sell keeps is taken from the buys, so no buy fails for cash.
        Returns the `RebalanceResult`.
        """
        rebalancer = self.__dict__.get("_protection_rebalancer")
        if rebalancer is None:
            rebalancer = self._protection_rebalancer = ProtectionAwareRebalancer(self)
        return rebalancer.rebalance(targets, reason=reason, scores=scores)

    # --- the clock and fills (backtrader internals, kept to the calls that carry them) ------

    def _start(self) -> None:
        self._check_shared_feeds()
        self._protection_started = True
        self._protection_values = self.protection.uses_portfolio
        self._protection_dates = self.lines.datetime
        if self.protection.uses_regime or self._protection_regime is not None:
            # the label the orchestrator follows, on the strategy's clock (docs/regime.md)
            source, config = self._protection_regime_source
            markets = {asset_name(d): d for d in self._markets()}
            try:
                self._protection_market = ClockRegime(self._regime_feeds(source), config, markets)
            except UserError as error:  # a credit feed not in the run
                self.protection.fail(error)  # the audit says why, and frees its file
                raise
            if self.p.regime_replay is not None:
                clock = self._bar_clock
                replay: RegimeReplay = self.p.regime_replay
                self._protection_market = replay.market(self._protection_market, lambda: clock()[1])
            self.protection.trace_each_bar = True  # the label goes on change, traces count bars
        self._protection_volatility = self.protection.uses_volatility
        # backtrader's own steps of a bar, looked up once rather than by super() at every bar
        self._protection_next = super()._next
        self._protection_oncepost = super()._oncepost
        self._protection_notify = super()._notify
        if self._protection_market is not None or self._protection_values:
            self._notify = self._notify_each_bar  # else backtrader's own _notify, untouched
        super()._start()

    def _check_shared_feeds(self) -> None:
        """Refuse a second protected strategy trading a feed of this broker when either may
        deny: each would judge orders on the broker's position, moved by the other's fills."""
        for other in self.env.runningstrats:
            if other is self or not isinstance(other, ProtectionMixin):
                continue
            if not (self.protection.can_deny or other.protection.can_deny):
                continue
            shared = [d for d in self.datas if any(d is o for o in other.datas)]
            if shared:
                error = UserError(
                    f"strategies {type(self).__name__} and {type(other).__name__} are both "
                    f"protected and both trade feed {asset_name(shared[0])} of one broker; "
                    "each would judge orders on a position the other moves. Run them in "
                    "separate cerebros, or protect one of them."
                )
                self.protection.fail(error)  # the audit says why, and frees its file
                raise error

    def _notify_each_bar(
        self,
        qorders: list[Any] = [],  # noqa: B006 - backtrader's signature
        qtrades: list[Any] = [],  # noqa: B006
    ) -> None:
        # Once a bar, after the clock moved and indicators ran, before next/prenext: the regime
        # label at the first bar and when it changes (each bar while a system asks for it), and
        # the broker's value, for the systems that follow them. This runs at every bar: the
        # bar's date is converted only when an event goes out (most bars send none).
        if self._protection_store is not None:
            self._bar_clock()  # the first bar after a restart reconciles the positions first
        dates = self._protection_dates
        number = dates.array[dates._idx]  # dates[0] without the call
        if number != self._protection_number:  # a new bar, or a replayed one updating in place
            self._protection_number = number
            bar = dates.lencount - 1 + self._protection_offset  # len(self): as _bar_clock
            if bar != self._protection_bar:
                self._protection_bar = bar
                protection = self.protection
                market = self._protection_market
                if market is not None:
                    code = market.update()
                    if code != self._protection_code or protection.regime_each_bar:
                        self._protection_code = code
                        protection.on_regime(self._bar_clock()[1], label_of(code), bar=bar)
                    if self._protection_volatility:
                        protection.on_volatility(self._bar_clock()[1], market.vol_ratio, bar=bar)
                if self._protection_values:
                    value = self.broker.getvalue()
                    # a NaN close makes it NaN: the last value stands
                    if (
                        self._protection_store is not None or not protection.hold_portfolio(value)
                    ) and math.isfinite(value):
                        protection.on_portfolio(self._bar_clock()[1], value, bar=bar)
        self._protection_notify(qorders, qtrades)

    def _addnotification(self, order: Any, quicknotify: bool = False) -> None:
        # Executions reach the orchestrator here, whether or not notify_order calls super().
        # The size moved is what the broker executed (bit.size); the position it started from
        # is the one the fills so far left: a reversal whose opening leg the broker could not
        # pay is executed as its close only, and reported as such.
        for bit in order.executed.iterpending():
            if bit.size:
                self._protection_fill(order.data, bit.dt, bit.size, bit.price)
        super()._addnotification(order, quicknotify)

    def _protection_fill(self, data: Any, dt: float, size: float, price: float) -> None:
        asset = self._protection_assets.get(id(data)) or asset_name(data)
        protection = self.protection
        before = protection.position(asset)
        try:
            protection.on_fill(
                asset, self._local(dt), before, before + size, bar=self._bar_of(dt), price=price
            )
        except ValueError as error:  # the protection layer never ends a run backtrader finishes
            self._protection_catch_up()
            protection.report_error(asset, f"fill of {asset} not booked: {error}")

    def _protection_catch_up(self) -> None:
        """Move the orchestrator's clock to the strategy's bar before a run-level record (an
        error, a failure, the run's end): the regime label, which moved it every bar, now
        comes only on change."""
        if self._protection_market is not None and len(self):
            _, when, bar = self._bar_clock()
            with contextlib.suppress(ValueError):  # the clock is past it already
                self.protection.advance(when, bar)

    def _next(self) -> None:
        self._protection_in_bar = True
        try:
            self._protection_next()
            if self._protection_store is not None:
                self._protection_end_of_bar()
        except BaseException as error:
            self._protection_catch_up()
            self.protection.fail(error)
            raise
        finally:
            self._protection_in_bar = False

    def _oncepost(self, dt: float) -> None:
        self._protection_in_bar = True
        try:
            self._protection_oncepost(dt)
            if self._protection_store is not None:
                self._protection_end_of_bar()
        except BaseException as error:
            self._protection_catch_up()
            self.protection.fail(error)
            raise
        finally:
            self._protection_in_bar = False

    def _protection_end_of_bar(self) -> None:
        _, when, bar = self._bar_clock()
        if self._protection_resume is None:  # bars handled before a restart stay as saved
            self._protection_save(when, bar)

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            self._protection_catch_up()
            self.protection.close()
            if self._protection_store is not None:
                self._protection_store.close()

    def getwriterinfo(self) -> Any:
        """backtrader's writer summary, without the mixin's own params: a writer's output is
        the same as without the mixin."""
        info = super().getwriterinfo()
        mine = ProtectionMixin.params._getkeys()
        info["Params"] = type(info["Params"])(
            (k, v) for k, v in info["Params"].items() if k not in mine
        )
        return info

    # --- orders -----------------------------------------------------------------------------

    def buy(self, data: Any = None, size: float | None = None, *args: Any, **kwargs: Any) -> Any:
        """`bt.Strategy.buy`, asking the orchestrator first (same arguments)."""
        return self._protected_order(True, data, size, order_arguments(args, kwargs), kwargs)

    def sell(self, data: Any = None, size: float | None = None, *args: Any, **kwargs: Any) -> Any:
        """`bt.Strategy.sell`, asking the orchestrator first (same arguments)."""
        return self._protected_order(False, data, size, order_arguments(args, kwargs), kwargs)

    def _protected_order(
        self,
        isbuy: bool,
        data: Any,
        size: float | None,
        args: dict[str, Any],
        extra: dict[str, Any],
    ) -> Any:
        if isinstance(data, str):
            data = self.getdatabyname(data)
        data = data if data is not None else self.datas[0]
        size = size if size is not None else self.getsizing(data, isbuy=isbuy)
        if not size:
            return None  # as bt.Strategy does: nothing to order
        exempt, reason, score = map(extra.pop, ORDER_EXTRAS, (None, None, None))
        asset = self._asset_of(data)
        parent = args["parent"]
        position = self.getposition(data).size
        when, bar = self._order_clock()
        if self._protection_resume is None:  # orders on bars handled before a restart: uncounted
            self._protection_attempts += 1
        attempt = self._protection_attempts
        close = data.lines.close[0] if self._protection_prices else None
        gated = self._protection_gate.request(
            asset,
            when,
            bar,
            isbuy,
            size,
            position,
            exectype=args["exectype"],
            has_parent=parent is not None,
            refused_parent=_refused(parent),
            exempt=exempt,
            reason=reason,
            score=score,
            metadata={"attempt": attempt}
            if close is None
            else {"attempt": attempt, "price": close},
        )
        decision = self.protection.can_execute_action(gated.request, gated.refusal)
        audit = self.protection.audit
        if audit is not None:  # on disk before anything else runs: a crash anywhere keeps it
            audit.flush()  # (timers and the broker run outside next, where no flush follows)
        if self._protection_hook is not None:
            self._protection_hook(decision)
        for listener in self._protection_listeners:
            listener(decision)
        info = dict(extra, protection=decision, protection_attempt=attempt)
        if not decision.approved:
            return self._rejected(isbuy, data, abs(size), args, info, close)
        oco = args["oco"]
        if oco is not None and oco.status == bt.Order.Rejected and "protection" in oco.info:
            args["oco"] = None  # its partner was denied and never reached the broker
        if self._protection_store is not None and self._protection_save_before_order:
            self._protection_save(when, bar)  # on disk before the broker sees the order
        submit = super().buy if isbuy else super().sell
        # a partly approved order sends the allowed part; the decision says what was clipped
        order = submit(data=data, size=size_to_send(decision), **args, **info)
        self._protection_gate.sent(gated, order)
        return order

    def _rejected(
        self,
        isbuy: bool,
        data: Any,
        size: float,
        args: dict[str, Any],
        info: dict[str, Any],
        close: float | None,
    ) -> Any:
        """A denied order: created, marked Rejected and queued as a notification only
        (`close`: the feed's close, when read already)."""
        orders = self.__dict__.get("_protection_rejected")
        if orders is None:
            orders = self._protection_rejected = RejectedOrders(self)
        order = orders.build(isbuy, data, size, args, info, close)
        orders.notify(self.broker, order)
        return order
