"""Requests, actions and decisions (`bt_protection.models`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from datetime import date, datetime

import pytest
from helpers import clock

from bt_protection.models import (
    Action,
    ProtectionDecision,
    ProtectionRequest,
    ProtectionResult,
    derive_action,
)

D = datetime(2024, 3, 1)


@pytest.mark.parametrize(
    ("current", "target", "action"),
    [
        (0, 10, Action.OPEN),
        (0, -10, Action.OPEN),
        (10, 0, Action.CLOSE),
        (-10, 0, Action.CLOSE),
        (10, 15, Action.INCREASE),
        (-10, -15, Action.INCREASE),
        (10, 5, Action.DECREASE),
        (-10, -5, Action.DECREASE),
        (10, -5, Action.REVERSE),
        (-10, 5, Action.REVERSE),
        (0.25, -0.25, Action.REVERSE),
    ],
)
def test_action_is_derived_from_signed_sizes(current, target, action):
    assert derive_action(current, target) is action
    request = ProtectionRequest("AAPL", D, current, target)
    assert request.action is action


@pytest.mark.parametrize(
    ("current", "target", "action"),
    [(0, 10, "open"), (10, 0, Action.CLOSE), (10, -10, "reverse"), (10, 4, "decrease")],
)
def test_explicit_action_that_agrees_with_the_sizes_is_kept(current, target, action):
    request = ProtectionRequest("AAPL", D, current, target, action=action)
    assert request.action is Action(action)


@pytest.mark.parametrize(
    ("kwargs", "field", "pattern"),
    [
        ({"asset": ""}, "asset", "non-empty"),
        ({"asset": None}, "asset", "non-empty"),
        ({"current_size": 5, "target_size": 5}, "current_size and target_size", "change"),
        ({"current_date": None}, "current_date", "required"),
        ({"current_size": math.nan}, "current_size", "finite"),
        ({"target_size": math.inf}, "target_size", "finite"),
        ({"target_size": -math.inf}, "target_size", "finite"),
        ({"current_size": "ten"}, "current_size", "number"),
        ({"action": "close"}, "action", "contradicts"),
        ({"current_size": 10, "target_size": -10, "action": "close"}, "action", "contradicts"),
        ({"action": "sell"}, "action", "must be one of"),
        ({"score": math.nan}, "score", "finite"),
        ({"current_date": "not a date"}, "current_date", "ISO"),
    ],
)
def test_invalid_request_raises_value_error_naming_the_field(kwargs, field, pattern):
    fields = {"asset": "AAPL", "current_date": D, "current_size": 0, "target_size": 10, **kwargs}
    with pytest.raises(ValueError, match=pattern) as info:
        ProtectionRequest(**fields)
    assert field in str(info.value)


def test_contradicting_action_message_names_the_derived_action():
    with pytest.raises(ValueError, match=r"'increase'.*contradicts.*'decrease'"):
        ProtectionRequest("AAPL", D, 10, 5, action="increase")


@pytest.mark.parametrize("value", [date(2024, 3, 1), "2024-03-01", datetime(2024, 3, 1)])
def test_current_date_is_normalised_to_a_datetime(value):
    assert ProtectionRequest("AAPL", value, 0, 1).current_date == datetime(2024, 3, 1)


def test_request_metadata_is_a_copy():
    meta = {"order": 1}
    request = ProtectionRequest("AAPL", D, 0, 1, metadata=meta)
    meta["order"] = 2
    assert request.metadata["order"] == 1


def _denied_decision() -> ProtectionDecision:
    """A real decision with datetimes in its details: a close denied by the holding period."""
    c = clock(True, holding_period={"min_hold": "10 bars"})
    c.fill("AAPL", 0, 0, 100)
    decision = c.ask("AAPL", 3, 100, 0)
    assert not decision.approved
    return decision


def test_decision_is_immutable():
    decision = _denied_decision()
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.approved = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.blocking_systems = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.results[0].allowed = True  # type: ignore[misc]
    assert isinstance(decision.results, tuple)
    assert isinstance(decision.blocking_systems, tuple)


def test_decision_time_takes_no_part_in_equality():
    decision = _denied_decision()
    timed = dataclasses.replace(decision, decision_time_us=decision.decision_time_us + 123.0)
    assert timed == decision and timed.to_dict()["decision_time_us"] != 0
    assert dataclasses.replace(decision, reason="other") != decision


def test_request_is_immutable():
    request = ProtectionRequest("AAPL", D, 0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.target_size = 2  # type: ignore[misc]


def test_changing_a_decisions_details_cannot_change_later_decisions():
    """Decisions are immutable all the way down: results (and their details) may be cached."""
    c = clock(True, holding_period={"min_hold": "10 bars"}, whipsaw_protection={})
    first = c.ask("AAPL", 0, 0, 100)
    for result in first.results:
        with contextlib.suppress(TypeError):  # read-only details: the best outcome
            result.details["tampered"] = True  # type: ignore[index]
    second = c.ask("MSFT", 0, 0, 100)
    assert all("tampered" not in r.details for r in second.results)


def test_decision_to_dict_is_plain_json_with_iso_dates():
    decision = _denied_decision()
    data = decision.to_dict()
    text = json.dumps(data)  # no default=: only plain JSON types
    assert json.loads(text) == data
    assert data["date"] == "2024-01-04T00:00:00"
    assert data["action"] == "close"
    assert data["approved"] is False
    assert data["blocking_systems"] == ["holding_period"]
    holding = next(r for r in data["results"] if r["system"] == "holding_period")
    assert holding["details"]["opened"] == "2024-01-01T00:00:00"
    assert holding["allowed"] is False


def test_result_to_dict_converts_enums_sets_and_dates():
    result = ProtectionResult(
        "x", 9, False, "r", {"when": date(2024, 1, 2), "acts": {Action.OPEN}, "a": Action.CLOSE}
    )
    data = result.to_dict()
    json.dumps(data)
    assert data["details"] == {"when": "2024-01-02", "acts": ["open"], "a": "close"}
