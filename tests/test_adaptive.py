"""Values by regime (SPEC 16): mapped values decide as the fixed value of the regime in force,
plugins get them for free, the value in force is named, and every bad form is refused."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt_protection.durations import ClockPoint
from bt_protection.errors import ProfileError
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile
from bt_protection.protections import Protection, ProtectionConfig, register
from bt_protection.protections import base as protections_base
from bt_protection.regimes import REGIME_LABELS
from bt_protection.tune.space import check_candidates, load_space
from tests.helpers import Clock, profile

HOLD = {"bull": 6, "neutral": 3, "bear": 2, "crisis": 1}
REENTRY = {"bull": 1, "crisis": 4}
CYCLES = {"bear": 1, "crisis": 2}
DEFAULTS = {"reentry": 2, "cycles": 2}


def _by_regime(values: dict[str, int], default: int | None = None) -> dict[str, str]:
    mapping = {label: f"{n} bars" for label, n in values.items()}
    return mapping if default is None else {**mapping, "default": f"{default} bars"}


def _blocks(label: str | None) -> dict[str, dict[str, Any]]:
    """The holding and whipsaw blocks by regime (label None) or fixed at `label`'s values."""
    if label is None:
        cycles: Any = {**CYCLES, "default": DEFAULTS["cycles"]}
        return {
            "holding_period": {"min_hold": _by_regime(HOLD)},
            "whipsaw_protection": {
                "min_reentry": _by_regime(REENTRY, DEFAULTS["reentry"]),
                "max_cycles": cycles,
                "window": {"bull": "3 bars", "crisis": "12 bars", "default": "6 bars"},
            },
        }
    window = {"bull": 3, "crisis": 12}.get(label, 6)
    return {
        "holding_period": {"min_hold": f"{HOLD[label]} bars"},
        "whipsaw_protection": {
            "min_reentry": f"{REENTRY.get(label, DEFAULTS['reentry'])} bars",
            "max_cycles": CYCLES.get(label, DEFAULTS["cycles"]),
            "window": f"{window} bars",
        },
    }


@dataclass(frozen=True)
class Step:
    regime: str
    fill_to: float | None  # the position after a fill at this bar, or no fill
    target: float  # the request asked at this bar


STEPS = st.builds(
    Step,
    st.sampled_from(REGIME_LABELS),
    st.one_of(st.none(), st.sampled_from([0.0, 10.0, 20.0, -10.0])),
    st.sampled_from([0.0, 5.0, 10.0, 20.0, -10.0]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEPS, min_size=1, max_size=60))
def test_values_by_regime_decide_as_the_fixed_values_of_the_regime_at_each_bar(
    steps: list[Step],
) -> None:
    mapped = Clock(ProtectionOrchestrator(profile(**_blocks(None))), bars=True)
    fixed = {
        label: Clock(ProtectionOrchestrator(profile(**_blocks(label))), bars=True)
        for label in REGIME_LABELS
    }
    clocks = [mapped, *fixed.values()]
    position = 0.0
    for bar, step in enumerate(steps):
        for c in clocks:
            c.regime(bar, step.regime)
        if step.fill_to is not None and step.fill_to != position:
            for c in clocks:
                c.fill("A", bar, position, step.fill_to)
            position = step.fill_to
        if step.target == position:
            continue
        got = mapped.ask("A", bar, position, step.target)
        want = fixed[step.regime].ask("A", bar, position, step.target)
        assert (got.approved, got.blocking_systems, got.approved_target) == (
            want.approved,
            want.blocking_systems,
            want.approved_target,
        ), f"bar {bar} in {step.regime}: {got.reason} / {want.reason}"


@pytest.mark.parametrize("label", REGIME_LABELS)
def test_a_hold_by_regime_frees_the_close_exactly_at_the_value_of_that_regime(label: str) -> None:
    clock = Clock(ProtectionOrchestrator(profile(**_blocks(None))), bars=True)
    clock.regime(0, label)
    clock.fill("A", 0, 0, 10)
    hold = HOLD[label]
    if hold > 1:
        clock.regime(hold - 1, label)
        early = clock.ask("A", hold - 1, 10, 0)
        assert not early.approved
        assert f"{hold - 1} of {hold} bars" in early.reason
        assert f"(min_hold in {label}: {hold} bars)" in early.reason
        assert early.results[0].details["in_force"]["min_hold"] == f"{hold} bars"
    clock.regime(hold, label)
    assert clock.ask("A", hold, 10, 0).approved


def test_a_window_that_grows_with_the_regime_still_counts_exits_a_shorter_one_dropped() -> None:
    clock = Clock(ProtectionOrchestrator(profile(**_blocks(None))), bars=True)
    clock.regime(0, "crisis")
    clock.fill("A", 0, 0, 10)
    clock.fill("A", 1, 10, 0)  # round trip 1, in crisis (window 12 bars)
    clock.regime(5, "bull")  # window 3 bars: the exit at bar 1 is outside it here
    clock.fill("A", 5, 0, 10)
    clock.fill("A", 6, 10, 0)  # round trip 2
    clock.regime(9, "crisis")  # window 12 bars again, max_cycles 2: both exits count
    denied = clock.ask("A", 9, 0, 10)
    assert not denied.approved and "2 round trips within 12 bars" in denied.reason


def test_the_value_in_force_is_in_the_status_and_explain() -> None:
    clock = Clock(ProtectionOrchestrator(profile(**_blocks(None))), bars=True)
    clock.regime(0, "crisis")
    clock.fill("A", 0, 0, 10)
    clock.regime(1, "bull")
    status = clock.orch.get_protection_status("A", clock.point(1)[0], bar=1)
    holding = status["protections"]["holding_period"]
    assert holding["min_hold"] == "6 bars"
    assert holding["in_force"] == {"min_hold": "min_hold in bull: 6 bars"}
    text = clock.orch.explain("A", "close", clock.point(1)[0], bar=1)
    assert "held 1 of 6 bars" in text and "(min_hold in bull: 6 bars)" in text


def test_the_default_stands_before_the_first_regime_and_for_unlisted_labels() -> None:
    clock = Clock(
        ProtectionOrchestrator(
            profile(holding_period={"min_hold": {"crisis": "1 bars", "default": "4 bars"}})
        ),
        bars=True,
    )
    clock.fill("A", 0, 0, 10)
    before = clock.ask("A", 2, 10, 0)
    assert not before.approved and "min_hold before the first regime: 4 bars" in before.reason
    clock.regime(2, "bear")
    assert "min_hold default in bear: 4 bars" in clock.ask("A", 2, 10, 0).reason
    clock.regime(3, "crisis")
    assert clock.ask("A", 3, 10, 0).approved


def test_a_profile_with_values_by_regime_round_trips_through_its_plain_form_and_pickle() -> None:
    loaded = profile(**_blocks(None))
    plain = loaded.to_dict()["protections"]["holding_period"]["min_hold"]
    assert plain == {label: f"{n} bars" for label, n in HOLD.items()}
    assert load_profile(loaded.to_dict()).hash == loaded.hash
    again = pickle.loads(pickle.dumps(loaded))
    assert (
        again.protections["holding_period"].adaptive
        == loaded.protections["holding_period"].adaptive
    )
    assert loaded.hash != profile(**_blocks("bull")).hash


# --- a plugin's threshold by regime ---------------------------------------------------------


@dataclass(frozen=True)
class SizeCapConfig(ProtectionConfig):
    max_size: float = 100.0


class SizeCap(Protection):
    """A plugin: opens and increases above `max_size` units are denied."""

    key = "size_cap_test"
    priority = 71
    config_class = SizeCapConfig
    config: SizeCapConfig
    guards = frozenset({Action.OPEN, Action.INCREASE})

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        size, cap = abs(request.target_size), self.config.max_size
        if size > cap:
            return self.deny(f"{size:g} units is above {cap:g}.", cap=cap)
        return self.allow(f"{size:g} units is within {cap:g}.", cap=cap)


@pytest.fixture
def size_cap() -> Iterator[None]:
    register(SizeCap)
    try:
        yield
    finally:
        protections_base._REGISTRY.pop(SizeCap.key)


@pytest.mark.usefixtures("size_cap")
def test_a_plugin_threshold_given_by_regime_decides_with_the_regime_at_each_bar() -> None:
    clock = Clock(
        ProtectionOrchestrator(profile(size_cap_test={"max_size": {"crisis": 5, "default": 50}})),
        bars=True,
    )
    clock.regime(0, "bull")
    assert clock.ask("A", 0, 0, 10).approved
    clock.regime(1, "crisis")
    denied = clock.ask("A", 1, 0, 10)
    assert not denied.approved
    assert denied.reason.endswith("10 units is above 5 (max_size in crisis: 5).")
    assert clock.ask("A", 1, 0, 5).approved
    clock.regime(2, "neutral")
    assert clock.ask("A", 2, 0, 50).approved and not clock.ask("A", 2, 0, 51).approved


# --- validation -------------------------------------------------------------------------------

BAD_FORMS = {
    "unknown label": (
        "holding_period:\n    min_hold: {bul: '5 bars', default: '20 bars'}",
        "protections.holding_period.min_hold.bul: unknown regime label 'bul'; did you mean 'bull'?",
    ),
    "missing default": (
        "holding_period:\n    min_hold: {bull: '30 bars', crisis: '5 bars'}",
        "protections.holding_period.min_hold: no value for neutral, bear and no default",
    ),
    "bare number": (
        "holding_period:\n    min_hold: {crisis: 5, default: '20 bars'}",
        "protections.holding_period.min_hold.crisis: 5 is a bare number",
    ),
    "mixed units": (
        "holding_period:\n    min_hold: {crisis: '5 days', default: '20 bars'}",
        "protections.holding_period.min_hold: values by regime mix bars and days",
    ),
    "decisions outside the override window": (
        "holding_period:\n    min_hold: {crisis: '3 decisions', default: '5 decisions'}",
        "protections.holding_period.min_hold: '5 decisions' counts decisions",
    ),
    "a value the block refuses": (
        "drawdown_guard:\n    max_drawdown: {crisis: 1.5, default: 0.2}",
        "protections.drawdown_guard.max_drawdown.crisis: max_drawdown is a fraction",
    ),
    "a mapping per label": (
        "holding_period:\n    min_hold: {crisis: {bull: '1 bars'}, default: '20 bars'}",
        "protections.holding_period.min_hold.crisis: a value by regime holds one value",
    ),
    "nested block": (
        "drawdown_guard:\n    resume: {after: {crisis: '5 bars', default: '20 bars'}}",
        "protections.drawdown_guard.resume.after: values by regime or scaled by volatility",
    ),
    "volatility without max": (
        "holding_period:\n    min_hold: {base: '20 bars', scale: volatility, min: '5 bars'}",
        "protections.holding_period.min_hold: a value scaled by volatility needs base, scale, "
        "min, max; max is missing.",
    ),
    "volatility bad scale": (
        "holding_period:\n    min_hold: {base: '20 bars', scale: vol, min: '5 bars', "
        "max: '60 bars'}",
        "protections.holding_period.min_hold.scale: unknown value 'vol'",
    ),
    "volatility out of order": (
        "holding_period:\n    min_hold: {base: '2 bars', scale: volatility, min: '5 bars', "
        "max: '60 bars'}",
        "protections.holding_period.min_hold: min (5 bars), base (2 bars) and max (60 bars)",
    ),
    "volatility mixed units": (
        "holding_period:\n    min_hold: {base: '20 bars', scale: volatility, min: '5 days', "
        "max: '60 bars'}",
        "protections.holding_period.min_hold.min: min (5 days) is in days",
    ),
    "volatility unknown key": (
        "holding_period:\n    min_hold: {base: '20 bars', scale: volatility, min: '5 bars', "
        "max: '60 bars', floor: '1 bars'}",
        "protections.holding_period.min_hold.floor: unknown key 'floor'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FORMS), ids=list(BAD_FORMS))
def test_each_bad_form_is_refused_with_file_line_and_key(case: str, tmp_path: Path) -> None:
    block, message = BAD_FORMS[case]
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nprotections:\n  {block}\n", encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:4: ") or text.startswith(f"{path}:5: "), text
    assert message in text, text


def test_tune_searches_one_regime_value_of_a_key_the_base_gives_as_one_value() -> None:
    space = load_space({"protections.holding_period.min_hold.crisis": ["5 bars", "10 bars"]})
    candidates = check_candidates(space, load_profile("balanced"), space.grid())
    holds = [c.to_dict()["protections"]["holding_period"]["min_hold"] for c in candidates]
    assert holds == [
        {"crisis": "5 bars", "default": "20 bars"},
        {"crisis": "10 bars", "default": "20 bars"},
    ]
    with pytest.raises(
        ProfileError, match="did you mean 'protections.holding_period.min_hold.crisis'"
    ):
        load_space({"protections.holding_period.min_hold.crisi": ["5 bars"]})
