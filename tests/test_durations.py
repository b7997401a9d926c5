"""Durations with units and the "elapsed at exactly s + D" rule (docs/profiles.md, "Durations")."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bt_protection.durations import ClockPoint, Duration, DurationUnit

S = datetime(2024, 1, 1)


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("10 bars", 10, DurationUnit.BARS),
        ("1 bar", 1, DurationUnit.BARS),
        ("0 bars", 0, DurationUnit.BARS),
        ("14 days", 14, DurationUnit.DAYS),
        ("1 day", 1, DurationUnit.DAYS),
        ("2 weeks", 14, DurationUnit.DAYS),
        ("1 week", 7, DurationUnit.DAYS),
        ("  5  Bars ", 5, DurationUnit.BARS),
        ("3 decisions", 3, DurationUnit.DECISIONS),
        ("1 decision", 1, DurationUnit.DECISIONS),
    ],
)
def test_parse_durations_with_units(text, amount, unit):
    duration = Duration.parse(text)
    assert (duration.amount, duration.unit) == (amount, unit)
    assert duration.uses_bars is (unit is DurationUnit.BARS)


def test_decisions_are_no_clock_time():
    decisions = Duration.parse("3 decisions")
    assert decisions.counts_decisions and not decisions.uses_bars
    start, now = ClockPoint(S, 0), ClockPoint(S + timedelta(days=9), 9)
    with pytest.raises(ValueError, match="3 decisions counts decisions, not time"):
        decisions.elapsed(start, now)
    assert decisions.ends(start) == "after 3 decisions from 2024-01-01 (bar 0)"


def test_two_weeks_equals_fourteen_days():
    two_weeks, fourteen = Duration.parse("2 weeks"), Duration.parse("14 days")
    start, now = ClockPoint(S), ClockPoint(S + timedelta(days=14))
    assert two_weeks.amount == fourteen.amount == 14
    assert two_weeks.elapsed(start, now) and fourteen.elapsed(start, now)
    assert str(two_weeks) == "2 weeks"  # reasons keep the profile's spelling
    assert two_weeks == fourteen and hash(two_weeks) == hash(fourteen)
    assert two_weeks != Duration.parse("14 bars") and two_weeks != Duration.parse("15 days")
    assert two_weeks.canonical == fourteen.canonical == "14 days"


def test_equal_durations_give_equal_profiles_and_hashes():
    from bt_protection.profile import Profile, load_profile

    def hold(text: str) -> Profile:
        return load_profile({"name": "p", "protections": {"holding_period": {"min_hold": text}}})

    assert hold("2 weeks") == hold("14 days") and hold("2 weeks").hash == hold("14 days").hash
    assert hold("2 weeks").to_dict()["protections"]["holding_period"]["min_hold"] == "14 days"
    assert hold("2 weeks").hash != hold("14 bars").hash


def test_parse_returns_a_duration_unchanged():
    duration = Duration.parse("3 bars")
    assert Duration.parse(duration) is duration


@pytest.mark.parametrize("value", [10, 10.0, 2.5, "10", "2.5", " 7 ", True])
def test_bare_numbers_are_refused_with_the_hint(value):
    with pytest.raises(ValueError, match="bare number") as info:
        Duration.parse(value)
    message = str(info.value)
    assert '"10 bars"' in message and '"14 days"' in message


@pytest.mark.parametrize("value", ["-5 bars", "-3 days", "-10", -5])
def test_negative_durations_are_refused(value):
    with pytest.raises(ValueError, match="negative|bare number"):
        Duration.parse(value)


@pytest.mark.parametrize(
    "value", ["soon", "10 minutes", "bars", "1.5 bars", "10 bars 2 days", "", None, [10]]
)
def test_junk_is_refused_with_the_hint(value):
    with pytest.raises(ValueError, match="not a duration") as info:
        Duration.parse(value)
    assert '"10 bars"' in str(info.value) and '"14 days"' in str(info.value)


# --- elapsed: denied one bar/day before, allowed exactly at D ---------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 20])
def test_bars_elapse_exactly_at_start_plus_n(n):
    duration = Duration.parse(f"{n} bars")
    start = ClockPoint(S, bar=100)

    def at(bar: int) -> ClockPoint:
        return ClockPoint(S + timedelta(days=bar - 100), bar=bar)

    if n:
        assert not duration.elapsed(start, at(100 + n - 1))
    assert duration.elapsed(start, at(100 + n))
    assert duration.elapsed(start, at(100 + n + 1))


def test_bars_ignore_the_calendar():
    duration = Duration.parse("3 bars")
    start = ClockPoint(S, bar=0)
    assert not duration.elapsed(start, ClockPoint(S + timedelta(days=30), bar=2))
    assert duration.elapsed(start, ClockPoint(S + timedelta(days=3), bar=3))


@pytest.mark.parametrize("text", ["1 day", "14 days", "2 weeks"])
def test_days_elapse_exactly_at_start_plus_d(text):
    duration = Duration.parse(text)
    start = ClockPoint(S, bar=0)
    end = S + timedelta(days=duration.amount)
    assert not duration.elapsed(start, ClockPoint(end - timedelta(days=1), bar=1))
    assert not duration.elapsed(start, ClockPoint(end - timedelta(seconds=1)))
    assert duration.elapsed(start, ClockPoint(end, bar=1))
    assert duration.elapsed(start, ClockPoint(end + timedelta(days=1)))


def test_days_ignore_bar_indexes_and_need_none():
    duration = Duration.parse("10 days")
    assert duration.elapsed(ClockPoint(S), ClockPoint(S + timedelta(days=10)))
    assert not duration.elapsed(ClockPoint(S, bar=0), ClockPoint(S + timedelta(days=9), bar=500))


def test_bars_without_bar_index_raise_naming_bar():
    duration = Duration.parse("5 bars")
    with pytest.raises(ValueError, match="bar is required"):
        duration.elapsed(ClockPoint(S), ClockPoint(S + timedelta(days=9), bar=3))
    with pytest.raises(ValueError, match="bar is required"):
        duration.elapsed(ClockPoint(S, bar=1), ClockPoint(S + timedelta(days=9)))


def test_progress_and_descriptions():
    bars = Duration.parse("10 bars")
    start = ClockPoint(datetime(2020, 3, 2), bar=7)
    now = ClockPoint(datetime(2020, 3, 5), bar=10)
    assert bars.progress(start, now) == 3
    assert bars.describe_progress(start, now) == "3 of 10 bars since 2020-03-02 (bar 7)"
    assert bars.ends(start) == "bar 17"
    days = Duration.parse("2 weeks")
    assert days.describe_progress(ClockPoint(datetime(2020, 3, 2)), now) == (
        "3 of 14 days since 2020-03-02"
    )
    assert days.ends(ClockPoint(datetime(2020, 3, 2))) == "2020-03-16"
