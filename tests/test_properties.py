"""Property-based tests: random profiles and random backtest streams (hypothesis).

A stream is a list of bars. Each bar moves the date on by 1-3 calendar days (so bars and days
differ) and carries, in this order: the fills of the requests approved on the previous bar, an
optional regime label, an optional score report, and at most one request per asset. Sizes of
requests come from the positions the fills left, so the orchestrator always sees a consistent
history (the approved target of a partial approval is what fills). Each bar also reports a
portfolio value (a random walk), and fills carry a price, for `drawdown_guard` and
`turnover_budget`. The checks use their own clock arithmetic, not `Duration`, and their own
models of holding lots, core floors and the drawdown guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from helpers import LIFTABLE, spec_lots, spec_reduce_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_protection.models import Action, ProtectionDecision, ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator

ASSETS = ("AAA", "BBB", "CCC", "SPY")
REGIMES = ("bull", "neutral", "bear", "crisis")
SEVERITIES = ("low", "medium", "high", "critical")
GUARDABLE = ("close", "decrease", "reverse")
KINDS = ("open_long", "open_short", "close", "increase", "decrease", "reverse")
START = datetime(2024, 1, 1)
PRICE = 10.0

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ------------------------------------------------------------------------------

durations = st.one_of(
    st.builds("{} bars".format, st.integers(0, 6)),
    st.builds("{} days".format, st.integers(0, 9)),
    st.sampled_from(["1 week", "2 weeks", "1 bar", "1 day"]),
)


def maybe(block: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.one_of(st.none(), block)


core_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "assets": st.lists(st.sampled_from(ASSETS), max_size=2, unique=True),
        "protect": st.lists(st.sampled_from(GUARDABLE), min_size=1, unique=True),
    },
    optional={
        "keep": st.sampled_from([0.0, 0.5, 0.75, 1.0]),
        "partial": st.booleans(),
        "dynamic": st.fixed_dictionaries(
            {
                "top_n": st.integers(1, 2),
                "min_streak": st.integers(1, 3),
                "duration": durations,
                "max_core": st.integers(1, 2),
            }
        ),
    },
)

regime_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "window": durations,
        "cooldown": durations,
        "can_override": st.dictionaries(
            st.sampled_from(SEVERITIES),
            st.lists(st.sampled_from(LIFTABLE), min_size=1, unique=True),
        ),
    },
    optional={
        "severity": st.lists(
            st.tuples(
                st.sampled_from(REGIMES), st.sampled_from(REGIMES), st.sampled_from(SEVERITIES)
            )
            .filter(lambda t: t[0] != t[1])
            .map(lambda t: (f"{t[0]}->{t[1]}", t[2])),
            max_size=2,
        ).map(dict)
    },
)

scores = st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0])

grace_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "trigger": st.sampled_from(["close", "score"]),
        "threshold": st.sampled_from([0.3, 0.5]),
        "duration": durations,
    },
    optional={"recovery_score": st.sampled_from([0.5, 0.7])},
)

holding_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "min_hold": durations,
        "protect": st.lists(st.sampled_from(GUARDABLE), min_size=1, unique=True),
    },
    optional={"lots": st.just("fifo"), "partial": st.booleans()},
)

whipsaw_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "max_cycles": st.integers(1, 3),
        "window": durations,
        "min_reentry": durations,
    }
)


drawdown_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "max_drawdown": st.sampled_from([0.1, 0.2, 0.3]),
        "resume": st.fixed_dictionaries(
            {"after": durations}, optional={"recover": st.sampled_from([0.5, 1.0])}
        ),
    },
    optional={"partial": st.booleans()},
)

turnover_blocks = st.fixed_dictionaries(
    {
        "enabled": st.just(True),
        "window": durations,
        "max_trades": st.integers(1, 4),
    },
    optional={"max_turnover": st.sampled_from([0.5, 2.0]), "partial": st.booleans()},
)


@st.composite
def profiles(draw: st.DrawFn, mode: st.SearchStrategy[str] | None = None) -> dict[str, Any]:
    blocks = {
        "core_asset_immunity": draw(maybe(core_blocks)),
        "regime_override": draw(maybe(regime_blocks)),
        "grace_period": draw(maybe(grace_blocks)),
        "holding_period": draw(maybe(holding_blocks)),
        "whipsaw_protection": draw(maybe(whipsaw_blocks)),
        "drawdown_guard": draw(maybe(drawdown_blocks)),
        "turnover_budget": draw(maybe(turnover_blocks)),
    }
    return {
        "name": "random",
        "mode": draw(mode if mode is not None else st.sampled_from(["enforce"] * 4 + ["shadow"])),
        "on_error": draw(st.sampled_from(["deny", "approve"])),
        "protections": {k: v for k, v in blocks.items() if v is not None},
    }


@dataclass(frozen=True)
class Step:
    gap: int
    change: float  # the portfolio value moves by this factor on the bar
    regime: str | None
    scores: dict[str, float] | None
    intents: tuple[tuple[str, str, bool, float | None], ...]


steps = st.builds(
    Step,
    gap=st.integers(1, 3),
    change=st.sampled_from([0.7, 0.85, 1.0, 1.1, 1.3]),
    regime=st.one_of(st.none(), st.sampled_from(REGIMES)),
    scores=st.one_of(st.none(), st.dictionaries(st.sampled_from(ASSETS), scores, min_size=1)),
    intents=st.lists(
        st.tuples(
            st.sampled_from(ASSETS),
            st.sampled_from(KINDS),
            st.integers(0, 9).map(lambda n: n == 0),  # exempt about one time in ten
            st.one_of(st.none(), scores),
        ),
        max_size=4,
        unique_by=lambda intent: intent[0],
    ).map(tuple),
)

streams = st.lists(steps, min_size=1, max_size=30)


# --- replay and an independent model of the clock ---------------------------------------------

Point = tuple[datetime, int]


def elapsed(duration: str, start: Point, now: Point) -> bool:
    """`now - start >= duration`, by hand: bars by index, days/weeks by calendar."""
    amount, unit = duration.split()
    n = int(amount)
    if unit.startswith("bar"):
        return now[1] - start[1] >= n
    days = n * 7 if unit.startswith("week") else n
    return now[0] - start[0] >= timedelta(days=days)


def target_of(current: float, kind: str) -> float:
    if current == 0:
        return -100.0 if kind == "open_short" else 100.0
    sign = 1.0 if current > 0 else -1.0
    return {
        "open_long": current + 50 * sign,
        "open_short": current + 50 * sign,
        "increase": current + 50 * sign,
        "decrease": current / 2,
        "close": 0.0,
        "reverse": -current,
    }[kind]


@dataclass(frozen=True)
class Seen:
    """One decision with the model's view of the asset when it was made."""

    request: ProtectionRequest
    decision: ProtectionDecision
    now: Point
    opened: Point | None
    exits: tuple[Point, ...]
    lots: tuple[tuple[float, Point], ...]  # (units, fill) oldest first, from the fills
    peak: float  # the largest |position| the fills left so far
    values: tuple[tuple[Point, float], ...]  # portfolio values reported so far
    fills: tuple[Point, ...]  # every fill so far, any asset


def replay(profile: dict[str, Any], stream: list[Step]) -> tuple[list[Seen], dict[str, Any], int]:
    orch = ProtectionOrchestrator.from_profile(profile)
    positions: dict[str, float] = {}
    opened: dict[str, Point] = {}
    exits: dict[str, list[Point]] = {}
    lots: dict[str, list[list[Any]]] = {}
    peaks: dict[str, float] = {}
    values: list[tuple[Point, float]] = []
    fills: list[Point] = []
    pending: list[tuple[str, float, float]] = []
    seen: list[Seen] = []
    requests = 0
    date = START
    value = 1000.0
    for bar, step in enumerate(stream):
        date += timedelta(days=step.gap)
        now = (date, bar)
        for asset, before, after in pending:  # approved on the previous bar, filled now
            orch.on_fill(asset, date, before, after, bar=bar, price=PRICE)
            positions[asset] = after
            fills.append(now)
            peaks[asset] = max(peaks.get(asset, 0.0), abs(after))
            spec_lots(lots.setdefault(asset, []), before, after, now)
            if after == 0:
                opened.pop(asset, None)
                exits.setdefault(asset, []).append(now)
            elif before == 0:
                opened[asset] = now
            elif (before > 0) != (after > 0):
                opened[asset] = now
                exits.setdefault(asset, []).append(now)
        pending = []
        value *= step.change
        orch.on_portfolio(date, value, bar=bar)
        values.append((now, value))
        if step.regime is not None:
            orch.on_regime(date, step.regime, bar=bar)
        if step.scores is not None:
            orch.on_scores(date, step.scores, bar=bar)
        for asset, kind, exempt, score in step.intents:
            current = positions.get(asset, 0.0)
            target = target_of(current, kind)
            request = ProtectionRequest(
                asset,
                date,
                current,
                target,
                bar=bar,
                exempt=exempt,
                score=score,
                metadata={"price": PRICE},
            )
            requests += 1
            decision = orch.can_execute_action(request)
            seen.append(
                Seen(
                    request,
                    decision,
                    now,
                    opened.get(asset),
                    tuple(exits.get(asset, ())),
                    tuple((size, point) for size, point in lots.get(asset, [])),
                    peaks.get(asset, 0.0),
                    tuple(values),
                    tuple(fills),
                )
            )
            if decision.approved:
                pending.append((asset, current, decision.approved_target))
    return seen, orch.get_performance_metrics(), requests


def sold(d: ProtectionDecision) -> float:
    """Units of the current side the approved part sells."""
    current, target = d.current_size, d.approved_target
    if target == 0 or (target > 0) != (current > 0):
        return abs(current)
    return max(0.0, abs(current) - abs(target))


def free_pass(profile: dict[str, Any], seen: Seen, system: str) -> bool:
    """Approved for a reason other than `system` agreeing: exempt, shadow or lifted."""
    d = seen.decision
    return d.exempt or profile["mode"] == "shadow" or system in d.overridden_systems


def block(profile: dict[str, Any], key: str) -> dict[str, Any] | None:
    return profile["protections"].get(key)


# --- properties -------------------------------------------------------------------------------


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_core_asset_exit_is_never_approved_unless_exempt_or_shadow(profile, stream):
    core = block(profile, "core_asset_immunity")
    seen, _, _ = replay(profile, stream)
    for s in seen:
        d = s.decision
        assert "core_asset_immunity" not in d.overridden_systems
        if core and s.request.asset in core["assets"] and d.action.value in core["protect"]:
            free = d.exempt or profile["mode"] == "shadow"
            if "keep" not in core:
                assert not d.approved or free, d
                assert "core_asset_immunity" in d.blocking_systems
            elif d.approved and not free:  # never below the floor, never to the other side
                floor = core["keep"] * max(s.peak, abs(d.current_size))
                target = d.approved_target
                assert target != 0 or floor == 0, d
                assert target == 0 or (target > 0) == (d.current_size > 0), d
                assert abs(target) >= floor - 1e-9, (floor, d)


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_no_approved_exit_before_min_hold(profile, stream):
    holding = block(profile, "holding_period")
    seen, _, _ = replay(profile, stream)
    if holding is None:
        return
    for s in seen:
        d = s.decision
        if not d.approved or d.action.value not in holding["protect"] or s.opened is None:
            continue
        if free_pass(profile, s, "holding_period"):
            continue
        if "lots" in holding:  # never more than the lots held min_hold
            ripe = sum(
                size for size, filled in s.lots if elapsed(holding["min_hold"], filled, s.now)
            )
            assert sold(d) <= ripe + 1e-9, (s.lots, s.now, d)
        else:
            assert elapsed(holding["min_hold"], s.opened, s.now), (s.opened, s.now, d)


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_no_approved_entry_breaks_whipsaw_rules(profile, stream):
    whipsaw = block(profile, "whipsaw_protection")
    seen, _, _ = replay(profile, stream)
    if whipsaw is None:
        return
    for s in seen:
        d = s.decision
        if not d.approved or d.action not in (Action.OPEN, Action.REVERSE):
            continue
        if free_pass(profile, s, "whipsaw_protection"):
            continue
        in_window = [e for e in s.exits if not elapsed(whipsaw["window"], e, s.now)]
        cycles = len(in_window)  # completed round trips: a reverse's own close is not one yet
        assert cycles < whipsaw["max_cycles"], (s.exits, s.now, d)
        if s.exits:
            assert elapsed(whipsaw["min_reentry"], s.exits[-1], s.now), (s.exits, s.now, d)


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_portfolio_brakes_hold(profile, stream):
    guard = block(profile, "drawdown_guard")
    budget = block(profile, "turnover_budget")
    seen, _, _ = replay(profile, stream)
    for s in seen:
        d = s.decision
        if not d.approved or d.exempt or profile["mode"] == "shadow":
            continue
        if (
            guard
            and "drawdown_guard" not in d.overridden_systems
            and spec_reduce_only(guard, s.values, elapsed)
        ):
            assert d.action not in (Action.OPEN, Action.INCREASE), d
            assert d.action is not Action.REVERSE or d.approved_target == 0, d
        if budget and "turnover_budget" not in d.overridden_systems:
            inside = [f for f in s.fills if not elapsed(budget["window"], f, s.now)]
            assert len(inside) < budget["max_trades"], (s.fills, s.now, d)


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_the_approved_target_lies_between_the_current_and_the_requested_size(profile, stream):
    seen, _, _ = replay(profile, stream)
    for s in seen:
        d = s.decision
        current, target, allowed = d.current_size, d.target_size, d.approved_target
        if not d.approved:
            assert allowed == current and not d.partial, d
            continue
        assert d.partial == (allowed != target), d
        if d.partial:
            assert min(current, target) <= allowed <= max(current, target), d
            assert allowed != current and d.blocking_systems, d
            assert d.reason.startswith("Partly approved: "), d
            assert not (d.exempt or profile["mode"] == "shadow"), d


def _plain(seen: list[Seen]) -> list[dict[str, Any]]:
    out = []
    for s in seen:
        data = s.decision.to_dict()
        del data["decision_time_us"]
        out.append(data)
    return out


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_the_same_stream_gives_the_same_decisions(profile, stream):
    first, metrics_a, _ = replay(profile, stream)
    second, metrics_b, _ = replay(profile, stream)
    assert _plain(first) == _plain(second)
    for metrics in (metrics_a, metrics_b):
        del metrics["decision_time_us"]
    assert metrics_a == metrics_b


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_every_request_gets_one_decision_and_metrics_count_them(profile, stream):
    seen, metrics, requests = replay(profile, stream)
    decisions = [s.decision for s in seen]
    assert len(decisions) == requests
    assert all(s.decision.asset == s.request.asset for s in seen)
    assert all(s.decision.action is s.request.action for s in seen)
    assert metrics["decisions_processed"] == requests
    assert metrics["approved"] == sum(d.approved for d in decisions)
    assert metrics["denied"] == sum(not d.approved for d in decisions)
    assert metrics["exempt"] == sum(d.exempt for d in decisions)
    assert metrics["overrides_applied"] == sum(d.override_applied for d in decisions)
    assert metrics["errors"] == 0
    assert metrics["partial"] == sum(d.partial for d in decisions)
    assert sum(metrics["blocks_by_system"].values()) == sum(
        len(d.blocking_systems) for d in decisions if not d.approved or d.partial
    )
    assert sum(metrics["would_block_by_system"].values()) == sum(
        len(d.blocking_systems) for d in decisions if d.approved and not d.partial
    )
    if requests:
        assert metrics["approval_rate"] == metrics["approved"] / requests


@PROPERTY
@given(profile=profiles(), stream=streams)
def test_decisions_are_internally_consistent(profile, stream):
    seen, _, _ = replay(profile, stream)
    order = list(profile["protections"])  # the strategy lists blocks in priority order
    shadow = profile["mode"] == "shadow"
    for s in seen:
        d = s.decision
        assert [r.system for r in d.results] == order
        denied = {r.system for r in d.results if not r.allowed}
        assert set(d.blocking_systems) | set(d.overridden_systems) == denied
        assert not set(d.blocking_systems) & set(d.overridden_systems)
        assert list(d.blocking_systems) == [s for s in order if s in d.blocking_systems]
        assert d.would_block == bool(d.blocking_systems)
        assert d.override_applied == bool(d.overridden_systems)
        assert d.approved == (not d.blocking_systems or d.exempt or shadow or d.partial)
        if d.blocking_systems and not d.approved:
            first = next(r for r in d.results if r.system == d.blocking_systems[0])
            assert d.reason == first.reason
