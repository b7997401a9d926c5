"""Exit safety (SPEC 5, issue 16) at the orchestrator: the valves, the reversal's close leg,
core keep|lift, the REDUCING state, records, validation and the `validate` warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.errors import ProfileError
from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile

HOLD = {
    "holding_period": {
        "enabled": True,
        "min_hold": "10 bars",
        "protect": ["close", "decrease", "reverse"],
    }
}
WHIPSAW = {
    "whipsaw_protection": {
        "enabled": True,
        "max_cycles": 5,
        "window": "60 days",
        "min_reentry": "10 bars",
    }
}


def make(
    protections: dict[str, Any], safety: dict[str, Any] | None, audit: Path | None = None
) -> ProtectionOrchestrator:
    data: dict[str, Any] = {"name": "t", "protections": protections}
    if safety is not None:
        data["exit_safety"] = safety
    return ProtectionOrchestrator(load_profile(data), audit)


def ask(
    orch: ProtectionOrchestrator, bar: int, current: float, target: float, price: float | None
) -> ProtectionDecision:
    metadata = None if price is None else {"price": price}
    return orch.can_execute_action(
        ProtectionRequest("IBM", day(bar), current, target, bar=bar, metadata=metadata)
    )


def fill(orch: ProtectionOrchestrator, bar: int, before: float, after: float, price: float) -> None:
    orch.on_fill("IBM", day(bar), before, after, bar=bar, price=price)


def test_a_close_at_the_loss_limit_is_a_risk_exit_with_its_numbers(tmp_path: Path) -> None:
    orch = make(HOLD, {"max_position_loss": 0.2}, tmp_path / "audit.jsonl")
    fill(orch, 0, 0, 100, 50.0)
    fill(orch, 1, 100, 200, 70.0)  # average entry 60
    held = ask(orch, 3, 200, 0, 48.5)  # 19.2% under 60: below the limit
    assert not held.approved and not held.risk_exit
    out = ask(orch, 3, 200, 0, 48.0)  # 20% under 60
    assert out.approved and out.risk_exit and out.would_block and not out.partial
    assert out.lifted_systems == ("holding_period",) and out.blocking_systems == ()
    assert out.reason.startswith(
        "Risk exit: IBM is 20.0% under its average entry 60.00 at 48.00 (max_position_loss 20%); "
        "holding_period would have denied: IBM held 3 of 10 bars"
    )
    metrics = orch.get_performance_metrics()
    assert metrics["risk_exits"] == 1 and metrics["denied"] == 1
    status = orch.get_protection_status("IBM", day(3), bar=3)["exit_safety"]
    assert status == {"average_entry": 60.0, "reducing": False}
    assert metrics["would_block_by_system"]["holding_period"] == 1
    orch.close()
    records = [r for r in read_audit(tmp_path / "audit.jsonl") if r["kind"] == "decision"]
    assert "risk_exit" not in records[0]
    assert records[1]["risk_exit"] is True and records[1]["lifted_systems"] == ["holding_period"]


def test_average_entry_across_increases_decreases_and_reversals() -> None:
    orch = make(HOLD, {"max_position_loss": 0.1})
    fill(orch, 0, 0, -100, 100.0)  # short at 100
    fill(orch, 1, -100, -40, 120.0)  # a decrease keeps the average
    fill(orch, 2, -40, -80, 80.0)  # average (40 * 100 + 40 * 80) / 80 = 90
    assert not ask(orch, 3, -80, -40, 98.9).approved  # 9.9% over 90
    out = ask(orch, 3, -80, -40, 99.0)  # 10% over 90
    assert out.risk_exit and "IBM (short) is 10.0% over its average entry 90.00" in out.reason
    fill(orch, 4, -80, 50, 100.0)  # a reversal starts a new entry at its fill
    assert not ask(orch, 5, 50, 0, 91.0).approved  # 9% under 100
    assert ask(orch, 5, 50, 0, 90.0).risk_exit


def test_without_a_price_the_loss_valve_stays_shut() -> None:
    orch = make(HOLD, {"max_position_loss": 0.1})
    orch.on_fill("IBM", day(0), 0, 100, bar=0)  # no fill price: no average entry
    assert not ask(orch, 1, 100, 0, 10.0).approved
    fill(orch, 2, 100, 0, 10.0)
    fill(orch, 12, 0, 100, 50.0)
    assert not ask(orch, 13, 100, 0, None).approved  # no bar close in the request


@pytest.mark.parametrize(("core", "approved"), [("keep", False), ("lift", True)])
def test_core_keep_or_lift(core: str, approved: bool) -> None:
    protections = {**HOLD, "core_asset_immunity": {"enabled": True, "assets": ["IBM"]}}
    orch = make(protections, {"max_position_loss": 0.1, "core": core})
    fill(orch, 0, 0, 100, 100.0)
    out = ask(orch, 1, 100, 0, 80.0)
    assert out.approved is approved and out.risk_exit is approved
    if approved:
        assert out.lifted_systems == ("core_asset_immunity", "holding_period")
    else:
        assert out.blocking_systems == ("core_asset_immunity", "holding_period")


def test_a_reversal_with_a_denied_open_leg_is_approved_as_the_close() -> None:
    orch = make(WHIPSAW, {})
    fill(orch, 0, 0, 10, 100.0)
    fill(orch, 1, 10, 0, 100.0)
    fill(orch, 2, 0, 10, 100.0)
    out = ask(orch, 3, 10, -10, 100.0)  # the open leg re-enters 2 bars after an exit
    assert out.approved and out.partial and not out.risk_exit
    assert out.approved_target == 0 and out.approved_size == -10
    assert out.blocking_systems == ("whipsaw_protection",)
    assert out.reason.startswith("Approved as the close alone (exit_safety reversal: close_leg)")
    deny = make(WHIPSAW, {"reversal": "deny"})
    deny.on_fill("IBM", day(0), 0, 10, bar=0, price=100.0)
    deny.on_fill("IBM", day(1), 10, 0, bar=1, price=100.0)
    deny.on_fill("IBM", day(2), 0, 10, bar=2, price=100.0)
    assert not ask(deny, 3, 10, -10, 100.0).approved


def test_a_reversal_whose_close_leg_is_a_risk_exit() -> None:
    orch = make({**HOLD, **WHIPSAW}, {"max_position_loss": 0.1})
    fill(orch, 0, 0, 10, 100.0)
    fill(orch, 1, 10, 0, 100.0)
    fill(orch, 2, 0, 10, 100.0)
    held = ask(orch, 3, 10, -10, 95.0)  # both legs denied, 5% loss: stays denied
    assert not held.approved
    assert held.blocking_systems == ("holding_period", "whipsaw_protection")
    out = ask(orch, 3, 10, -10, 85.0)  # 15% loss: the close leg goes, the open leg not
    assert out.approved and out.partial and out.risk_exit and out.approved_target == 0
    assert out.lifted_systems == ("holding_period",)
    assert out.blocking_systems == ("whipsaw_protection",)
    assert "the open leg is denied by whipsaw_protection" in out.reason
    full = make(HOLD, {"max_position_loss": 0.1})  # no entry rule: the whole reversal goes
    full.on_fill("IBM", day(0), 0, 10, bar=0, price=100.0)
    whole = ask(full, 1, 10, -10, 85.0)
    assert whole.approved and whole.risk_exit and not whole.partial


def test_a_reversal_the_holding_period_lets_close_but_not_reverse() -> None:
    """holding_period protecting only reversals: the reversal is denied, its close leg is not."""
    hold = {"holding_period": {"enabled": True, "min_hold": "10 bars", "protect": ["reverse"]}}
    orch = make(hold, {})
    fill(orch, 0, 0, 10, 100.0)
    out = ask(orch, 1, 10, -10, 100.0)
    assert out.approved and out.approved_target == 0 and not out.risk_exit


def test_reducing_state_in_a_portfolio_drawdown(tmp_path: Path) -> None:
    safety = {"max_portfolio_drawdown": 0.25, "resume": {"after": "5 bars", "recover": 0.5}}
    orch = make({**HOLD, **WHIPSAW}, safety, tmp_path / "audit.jsonl")
    assert orch.uses_portfolio and not orch.uses_prices
    fill(orch, 0, 0, 10, 100.0)
    orch.on_portfolio(day(1), 100_000.0, bar=1)
    orch.on_portfolio(day(2), 80_000.0, bar=2)
    assert not ask(orch, 2, 10, 5, 100.0).approved  # 20% under the peak
    orch.on_portfolio(day(3), 74_000.0, bar=3)  # 26%: REDUCING
    out = ask(orch, 3, 10, 5, 100.0)
    assert out.approved and out.risk_exit
    assert out.reason.startswith(
        "Risk exit: the portfolio is 26.0% under its peak 100,000 (max_portfolio_drawdown 25%)"
    )
    increase = ask(orch, 3, 10, 20, 100.0)  # judged as ever (nothing here guards it)
    assert increase.approved and not increase.risk_exit
    orch.on_portfolio(day(4), 88_000.0, bar=4)  # half of the drawdown won back: resume
    assert not ask(orch, 4, 10, 5, 100.0).approved
    orch.close()
    kinds = [r for r in read_audit(tmp_path / "audit.jsonl") if r["kind"].startswith("reducing")]
    assert [(r["kind"], r["bar"]) for r in kinds] == [
        ("reducing_started", 3),
        ("reducing_ended", 4),
    ]
    assert kinds[0]["peak"] == 100_000.0 and kinds[1]["by"] == "recover"


def test_a_profile_without_the_block_decides_as_before() -> None:
    """The same requests with and without an empty-valved block differ only on reversals."""
    plain, safe = make(HOLD, None), make(HOLD, {"reversal": "deny"})
    for orch in (plain, safe):
        fill(orch, 0, 0, 10, 100.0)
    for target, price in ((0, 50.0), (5, 10.0), (-10, 1.0)):
        a, b = ask(plain, 1, 10, target, price), ask(safe, 1, 10, target, price)
        assert (a.approved, a.reason, a.blocking_systems) == (
            b.approved,
            b.reason,
            b.blocking_systems,
        )
    assert not plain.uses_prices and not plain.uses_portfolio


BAD = {
    "unknown key": (
        "exit_safety:\n  max_position_los: 0.2\n",
        "{f}:2: exit_safety: unknown key 'max_position_los'; did you mean 'max_position_loss'? "
        "Valid keys: max_position_loss, max_portfolio_drawdown, resume, reversal, core.",
    ),
    "range": (
        "exit_safety:\n  max_portfolio_drawdown: 1.2\n",
        "{f}:2: exit_safety.max_portfolio_drawdown: max_portfolio_drawdown is a fraction of the "
        "peak value; 0.25 means a 25% drawdown (above 0, below 1), not 1.2.",
    ),
    "reversal": (
        "exit_safety:\n  reversal: close\n",
        "{f}:2: exit_safety.reversal: unknown value 'close'; did you mean 'close_leg'? "
        "Valid values: close_leg, deny.",
    ),
    "resume": (
        "exit_safety:\n  max_portfolio_drawdown: 0.3\n  resume:\n    after: 20\n",
        "{f}:4: exit_safety.resume.after: 20 is a bare number; durations carry a unit: write "
        '"10 bars" (trading sessions) or "14 days" (calendar time).',
    ),
    "top level": (
        "exit_saftey: {}\n",
        "{f}:1: unknown key 'exit_saftey'; did you mean 'exit_safety'? Valid keys: "
        "name, description, extends, mode, on_error, protections, regime, audit, exit_safety.",
    ),
}


@pytest.mark.parametrize(("text", "message"), BAD.values(), ids=BAD.keys())
def test_bad_blocks_name_file_line_and_key(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert str(error.value) == message.format(f=path)


def test_validate_warns_about_a_profile_that_can_deny_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text("protections:\n  holding_period: {min_hold: 10 bars}\n")
    safe = tmp_path / "safe.yaml"
    safe.write_text(bare.read_text() + "exit_safety: {max_position_loss: 0.2}\n")
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text(bare.read_text() + "mode: shadow\n")
    assert main(["validate", str(bare), str(safe), str(shadow)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"warning: {bare}: holding_period can deny exits and the profile has no exit_safety "
        "block, so nothing limits what a denied exit can cost; add one (max_position_loss, "
        "max_portfolio_drawdown: docs/profiles.md).\n"
    )
    assert len(captured.out.splitlines()) == 3


def test_every_shipped_profile_that_can_deny_exits_has_the_block() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    for file in sorted(configs.glob("*.yaml")):
        profile = load_profile(file)
        assert not profile.exit_deniers or profile.exit_safety is not None, file.name


# --- random order streams (hypothesis) -----------------------------------------------------------


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_streams_never_deny_an_exit_at_the_loss_limit(data: st.DataObject) -> None:
    """Random orders at random prices under a random holding period, whipsaw, core asset and
    exit_safety block: after a denied close or decrease the position's loss (by hand, from the
    fills and the request's price) is under max_position_loss; a reversal under
    `reversal: close_leg` whose close leg was allowed (held `min_hold`, by hand, of a non-core
    asset, or at the loss limit) never leaves the old position open."""
    limit = data.draw(st.floats(0.02, 0.5), label="max_position_loss")
    reversal = data.draw(st.sampled_from(["close_leg", "deny"]), label="reversal")
    hold = data.draw(st.integers(1, 12), label="min_hold")
    core = data.draw(st.booleans(), label="core asset")
    protections: dict[str, Any] = {
        "holding_period": {
            "min_hold": f"{hold} bars",
            "protect": data.draw(
                st.sampled_from([["close", "reverse"], ["close", "decrease", "reverse"]])
            ),
        },
        "whipsaw_protection": {
            "max_cycles": data.draw(st.integers(1, 3)),
            "window": "30 days",
            "min_reentry": f"{data.draw(st.integers(0, 10))} bars",
        },
    }
    if core:
        protections["core_asset_immunity"] = {"assets": ["IBM"]}
    safety = {"max_position_loss": limit, "reversal": reversal, "core": "lift"}
    orch = make({k: {"enabled": True, **v} for k, v in protections.items()}, safety)
    price, position, entry, opened = 100.0, 0.0, 0.0, 0
    for bar in range(data.draw(st.integers(5, 40), label="bars")):
        price *= 1 + data.draw(st.floats(-0.3, 0.3), label="move")
        target = float(data.draw(st.integers(-20, 20), label="target"))
        if target == position:
            continue
        decision = ask(orch, bar, position, target, price)
        action = decision.action.value
        loss = 0.0
        if position:
            move = (price - entry) / entry
            loss = -move if position > 0 else move
        if not decision.approved and action in ("close", "decrease"):
            assert loss < limit, decision.reason
        if action == "reverse" and reversal == "close_leg":
            close_allowed = (bar - opened >= hold and not core) or loss >= limit
            if close_allowed:
                assert decision.approved and decision.approved_target * position <= 0
        if decision.approved:
            after = decision.approved_target
            fill(orch, bar, position, after, price)
            if after == 0:
                entry = 0.0
            elif position == 0 or (position > 0) != (after > 0):
                entry, opened = price, bar
            elif abs(after) > abs(position):
                entry = (entry * abs(position) + price * (abs(after) - abs(position))) / abs(after)
            position = after
