"""The six-scenario demonstration of the original system (`bt-protection demo`)."""

from __future__ import annotations

import pytest

from bt_protection.cli import main
from bt_protection.demo import demo_table, run_demo

EXPECTED = [
    ("Open a new position", "open", True, None),
    ("Close a core asset", "close", False, "core_asset_immunity"),
    ("Close an asset in grace", "close", False, "grace_period"),
    ("Open a whipsaw-blocked asset", "open", False, "whipsaw_protection"),
    ("Close a recent position", "close", False, "holding_period"),
    ("Increase a core position", "increase", True, None),
]


@pytest.fixture(scope="module")
def scenarios():
    return run_demo()


def test_demo_has_six_scenarios_with_the_right_outcomes(scenarios):
    got = [
        (
            s.title,
            s.decision.action.value,
            s.decision.approved,
            s.decision.blocking_systems[0] if s.decision.blocking_systems else None,
        )
        for s in scenarios
    ]
    assert got == EXPECTED


def test_demo_decisions_explain_themselves(scenarios):
    for scenario in scenarios:
        decision = scenario.decision
        assert decision.asset == scenario.request.asset
        assert len(decision.results) == 5
        assert decision.reason
        if not decision.approved:
            assert decision.reason == next(
                r.reason for r in decision.results if r.system == decision.blocking_systems[0]
            )
    grace = scenarios[2].decision
    assert "2 of 5 bars" in grace.reason
    holding = scenarios[4].decision
    assert "5 of 20 bars" in holding.reason


def test_demo_is_deterministic(scenarios):
    again = run_demo()
    strip = ("decision_time_us",)
    assert [{k: v for k, v in s.decision.to_dict().items() if k not in strip} for s in again] == [
        {k: v for k, v in s.decision.to_dict().items() if k not in strip} for s in scenarios
    ]


def test_demo_table_has_one_row_per_scenario(scenarios):
    table = demo_table(scenarios)
    outcomes = ["APPROVED", "DENIED", "DENIED", "DENIED", "DENIED", "APPROVED"]
    assert list(table["outcome"]) == outcomes
    assert list(table["decided by"]) == [
        "-",
        "core_asset_immunity",
        "grace_period",
        "whipsaw_protection",
        "holding_period",
        "-",
    ]


def test_cli_demo_prints_the_approval_rate(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "2 of 6 (33.3%)" in out
    for system in ("core_asset_immunity", "grace_period", "whipsaw_protection", "holding_period"):
        assert system in out
