"""`ProtectionMixin`: every order of a backtrader strategy asks the orchestrator first.

Every order-creating path of `bt.Strategy` (`buy`, `sell`, `close`, `order_target_*`,
brackets, `SignalStrategy`) ends in `Strategy.buy` / `Strategy.sell`; the mixin intercepts
there. A denied order comes back in `Rejected` status with the decision in
`order.info.protection` and reaches `notify_order` through the broker's notification queue,
without ever entering the broker's pending orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import backtrader as bt

from bt_protection.errors import UserError
from bt_protection.fingerprint import run_fingerprint
from bt_protection.integration.regime import CompositeIndex, RegimeIndicator, label_of
from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile
from bt_protection.regimes import RegimeSource, regime_source

# Stop orders protect a position that exists: they are safety exits, never held back.
_SAFETY_EXECTYPES = frozenset(
    {bt.Order.Stop, bt.Order.StopLimit, bt.Order.StopTrail, bt.Order.StopTrailLimit}
)
_ORDER_EXTRAS = ("protection_exempt", "protection_reason", "protection_score")


# The arguments of bt.Strategy.buy/sell after `data` and `size`, in order, with their defaults.
_ORDER_DEFAULTS: dict[str, Any] = {
    "price": None,
    "plimit": None,
    "exectype": None,
    "valid": None,
    "tradeid": 0,
    "oco": None,
    "trailamount": None,
    "trailpercent": None,
    "parent": None,
    "transmit": True,
}


def _order_arguments(positional: tuple[Any, ...], keywords: dict[str, Any]) -> dict[str, Any]:
    """Bind backtrader's order arguments as `Strategy.buy` would; they leave `keywords`."""
    if len(positional) > len(_ORDER_DEFAULTS):
        raise TypeError(
            f"buy/sell take at most {len(_ORDER_DEFAULTS) + 2} positional arguments after self."
        )
    bound = dict(_ORDER_DEFAULTS)
    for name, value in zip(_ORDER_DEFAULTS, positional, strict=False):
        if name in keywords:
            raise TypeError(f"buy/sell got multiple values for argument {name!r}.")
        bound[name] = value
    for name in _ORDER_DEFAULTS:
        if name in keywords:
            bound[name] = keywords.pop(name)
    return bound


def asset_name(data: Any) -> str:
    """The asset a feed trades: its name (a single unnamed feed is `data0`)."""
    return data._name or "data0"


class _MetaProtection(type(bt.Strategy)):  # type: ignore[misc]
    """Sets up the protection before the user's `__init__`, so it needs no `super().__init__()`."""

    def dopreinit(cls, _obj: Any, *args: Any, **kwargs: Any) -> Any:
        _obj, args, kwargs = super().dopreinit(_obj, *args, **kwargs)
        _obj._protection_setup()
        return _obj, args, kwargs


class ProtectionMixin(bt.Strategy, metaclass=_MetaProtection):
    """Put the protection orchestrator between the strategy and the broker.

    Params: `protection` (profile file, mapping or `Profile`; required), `regime_data` (name of
    the feed the regime indicator watches; default the profile's `regime.data`, else the only
    feed, else the equal-weight composite of every feed: `CompositeIndex`), `audit_path`
    (JSONL file; `{profile}` is replaced by the profile name) and `run_info` (a mapping added
    to the audit header, e.g. the data's date range).
    Order keywords: `protection_exempt=True` marks a safety exit, `protection_reason` and
    `protection_score` travel with the request.
    """

    params: Any = (  # backtrader turns it into the params class `self.p`
        ("protection", None),
        ("regime_data", None),
        ("audit_path", None),
        ("run_info", None),
    )

    protection: ProtectionOrchestrator
    regime: RegimeIndicator

    def _protection_setup(self) -> None:
        if self.p.protection is None:
            raise UserError(
                f"{type(self).__name__} needs the `protection` param: a profile file, "
                "a mapping or a loaded Profile."
            )
        profile = load_profile(self.p.protection)
        names = [d._name for d in self.datas]
        if len(names) > 1 and not all(names):
            raise UserError(
                f"{type(self).__name__} has {len(names)} data feeds and feed "
                f"{names.index('')} has no name; name every feed with "
                "cerebro.adddata(data, name='TICKER'), since assets are feed names."
            )
        if not callable(getattr(self.broker, "notify", None)):
            raise UserError(
                f"broker {type(self.broker).__name__} has no notify(order) method, so denied "
                "orders could not reach notify_order; use backtrader's BackBroker."
            )
        source = regime_source(
            self.p.regime_data or profile.regime.data, [asset_name(d) for d in self.datas]
        )
        self.regime = RegimeIndicator.from_config(self._regime_feed(source), profile.regime)
        audit = None
        if self.p.audit_path or profile.audit.path:
            from bt_protection.audit import AuditLog

            path = str(self.p.audit_path or profile.audit.path).format(profile=profile.name)
            details = {
                "data": [asset_name(d) for d in self.datas],
                **(self.p.run_info or {}),
                "regime_data": source.label,
            }
            audit = AuditLog(path, run_fingerprint(profile, **details))
        self.protection = ProtectionOrchestrator(profile, audit)
        self._protection_bar = -1
        self._protection_date: Any = None
        self._protection_in_bar = False
        self._protection_attempts = 0
        self._protection_listeners: list[Callable[[ProtectionDecision], None]] = []

    def _regime_feed(self, source: RegimeSource) -> Any:
        """The feed the regime indicator watches, or the composite index of every feed."""
        if source.feed is None:
            return CompositeIndex(*self.datas)
        return next(d for d in self.datas if asset_name(d) == source.feed)

    @property
    def protection_date(self) -> Any:
        """The backtest date orders are decided at now (see `protection_bar`)."""
        return self._order_clock()[0]

    @property
    def protection_bar(self) -> int:
        """The bar index (0 = first bar) orders are decided at now.

        Usually the bar `next` runs on. Timers run before the strategy moves to a new bar while
        the feeds already have: their orders belong to that new bar, as do its fills.
        """
        return self._order_clock()[1]

    def _order_clock(self) -> tuple[Any, int]:
        if self._protection_in_bar:  # inside the bar `_notify` opened: the common case
            return self._protection_date, self._protection_bar
        newest = max(d.datetime[0] for d in self.datas if len(d))
        if len(self) == 0 or newest > self.lines.datetime[0]:
            return bt.num2date(newest), len(self)
        return self._protection_date, self._protection_bar

    # --- hooks ------------------------------------------------------------------------------

    def notify_protection(self, decision: ProtectionDecision) -> None:
        """Called with every decision the orchestrator makes for this strategy."""

    def add_protection_listener(self, listener: Callable[[ProtectionDecision], None]) -> None:
        """Also send every decision to `listener` (the analyzer and rebalancer use this)."""
        self._protection_listeners.append(listener)

    # --- the clock and fills (backtrader internals, kept to the two calls that carry them) ----

    def _notify(self, qorders: list[Any] = [], qtrades: list[Any] = []) -> None:  # noqa: B006
        # Called once a bar, after the clock moved and indicators ran, before next/prenext.
        bar = len(self) - 1
        if bar != self._protection_bar:
            self._protection_bar = bar
            self._protection_date = self.datetime.datetime(0)
            label = label_of(self.regime.regime[0])
            self.protection.on_regime(self._protection_date, label, bar=bar)
            self._protection_in_bar = True  # until next/prenext returns
        super()._notify(qorders, qtrades)

    def _addnotification(self, order: Any, quicknotify: bool = False) -> None:
        # Executions reach the orchestrator here, whether or not notify_order calls super().
        for bit in order.executed.iterpending():
            if bit.size:
                self.protection.on_fill(
                    asset_name(order.data),
                    bt.num2date(bit.dt),
                    bit.psize - bit.size,
                    bit.psize,
                    bar=len(self),  # the strategy has not moved to the executing bar yet
                )
        super()._addnotification(order, quicknotify)

    def _next(self) -> None:
        try:
            super()._next()
        except BaseException as error:
            self.protection.fail(error)
            raise
        finally:
            self._protection_in_bar = False  # timers and open-cheats come before the next bar

    def _oncepost(self, dt: float) -> None:
        try:
            super()._oncepost(dt)
        except BaseException as error:
            self.protection.fail(error)
            raise
        finally:
            self._protection_in_bar = False  # timers and open-cheats come before the next bar

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:
            self.protection.close()

    # --- orders -----------------------------------------------------------------------------

    def buy(self, data: Any = None, size: float | None = None, *args: Any, **kwargs: Any) -> Any:
        """`bt.Strategy.buy`, asking the orchestrator first (same arguments)."""
        return self._protected_order(True, data, size, _order_arguments(args, kwargs), kwargs)

    def sell(self, data: Any = None, size: float | None = None, *args: Any, **kwargs: Any) -> Any:
        """`bt.Strategy.sell`, asking the orchestrator first (same arguments)."""
        return self._protected_order(False, data, size, _order_arguments(args, kwargs), kwargs)

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
        exempt, reason, score = (extra.pop(k, None) for k in _ORDER_EXTRAS)
        parent = args["parent"]
        current = self.getposition(data).size
        if parent is not None:  # a bracket child acts on the position its parent leaves
            current += parent.size - parent.executed.size
        signed = abs(size) if isbuy else -abs(size)
        self._protection_attempts += 1
        attempt = self._protection_attempts
        when, bar = self._order_clock()
        request = ProtectionRequest(
            asset_name(data),
            when,
            current,
            current + signed,
            reason=reason or "",
            score=score,
            bar=bar,
            exempt=bool(exempt) or parent is not None or args["exectype"] in _SAFETY_EXECTYPES,
            metadata={"attempt": attempt},
        )
        decision = self.protection.can_execute_action(request)
        audit = self.protection.audit
        if audit is not None:  # on disk before anything else runs: a crash anywhere keeps it
            audit.flush()  # (timers and the broker run outside next, where no flush follows)
        self.notify_protection(decision)
        for listener in self._protection_listeners:
            listener(decision)
        info = dict(extra, protection=decision, protection_attempt=attempt)
        if decision.approved:
            submit = super().buy if isbuy else super().sell
            return submit(data=data, size=abs(size), **args, **info)
        return self._rejected(isbuy, data, abs(size), args, info)

    def _rejected(
        self, isbuy: bool, data: Any, size: float, args: dict[str, Any], info: dict[str, Any]
    ) -> Any:
        """A denied order: created, marked Rejected and queued as a notification only."""
        order_class = bt.BuyOrder if isbuy else bt.SellOrder
        order = order_class(
            owner=self,
            data=data,
            size=size,
            price=args["price"],
            pricelimit=args["plimit"],
            exectype=args["exectype"],
            valid=args["valid"],
            tradeid=args["tradeid"],
            trailamount=args["trailamount"],
            trailpercent=args["trailpercent"],
            parent=args["parent"],
            transmit=args["transmit"],
        )
        order.addinfo(**info)
        order.reject()
        self.broker.notify(order)
        return order
