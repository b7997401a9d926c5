"""Protections from other packages: the example plugin examples/event_blackout/ installed
through its entry point (tests/plugin_site.py), then listed, validated, run and compared; and
the contract every protection class is held to when it registers.

The plugin runs in subprocesses only: registering it in this process would add a system (and a
comparison column) to every later test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT, SAMPLE_DATA
from plugin_site import environment, install

from bt_protection.config_types import SCALAR_TYPES
from bt_protection.errors import PluginError
from bt_protection.models import ProtectionRequest, ProtectionResult
from bt_protection.profile import loader
from bt_protection.protections import Protection, ProtectionConfig, register, registry
from bt_protection.shipped import PROFILES

EXAMPLE = PROJECT_ROOT / "examples" / "event_blackout"
WINDOW = ["--data", str(SAMPLE_DATA), "--start", "2019-01-01", "--end", "2019-12-31"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    assert install(EXAMPLE, folder) == "bt-protection-event-blackout"
    return folder


def cli(site: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bt_protection", *argv],
        capture_output=True,
        text=True,
        env=environment(site),
        timeout=300,
    )


def test_the_plugin_is_listed_and_validated_like_a_built_in(site: Path, tmp_path: Path) -> None:
    listed = cli(site, "systems")
    assert listed.returncode == 0, listed.stderr
    rows = [re.split(r"\s{2,}", line) for line in listed.stdout.splitlines()]
    assert rows[-1] == [
        "10",
        "event_blackout",
        "yes",
        "bt-protection-event-blackout 0.1.0 (plugin)",
        "events, before, after, protect",
    ]
    assert [row[1] for row in rows[1:-1]] == list(registry())
    bad = {
        "typo.yaml": (
            "event_blackout: {befor: 3 days}",
            "unknown key 'befor'; did you mean 'before'?",
        ),
        "bare.yaml": ("event_blackout: {before: 3}", "3 is a bare number; durations carry a unit"),
        "bars.yaml": (
            "event_blackout: {after: 2 bars}",
            'events are dates, so after counts calendar days: write "3 days".',
        ),
        "date.yaml": (
            "event_blackout: {events: {AAPL: [2019-13-01]}}",
            "invalid YAML: a value cannot be read",
        ),
        "close.yaml": ("event_blackout: {protect: [close]}", "event blackout can protect"),
    }
    for name, (block, _) in bad.items():
        (tmp_path / name).write_text(f"name: x\nprotections:\n  {block}\n")
    checked = cli(
        site, "validate", str(EXAMPLE / "blackout.yaml"), *(str(tmp_path / n) for n in bad)
    )
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert lines[0].startswith(f"ok  {EXAMPLE / 'blackout.yaml'} (blackout: holding_period, ")
    assert lines[0].endswith("event_blackout)")
    for line, (name, (_, message)) in zip(lines[1:], bad.items(), strict=True):
        assert line.startswith(f"{tmp_path / name}:") and message in line, line
    # without the plugin the same block is an unknown system, not silently ignored
    plain = subprocess.run(
        [sys.executable, "-m", "bt_protection", "validate", str(EXAMPLE / "blackout.yaml")],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 1 and "unknown system 'event_blackout'" in plain.stdout


def first_opens(folder: Path) -> pd.Series:
    """The day of each asset's first order (an open: every position starts flat), by asset."""
    orders = pd.read_csv(folder / "orders.csv", keep_default_na=False)
    assert (orders["protection"] == "approved").all()
    return orders.groupby("asset")["created"].first()


def test_the_plugin_denies_in_a_run_and_a_comparison(site: Path, tmp_path: Path) -> None:
    off = tmp_path / "off"
    done = cli(
        site,
        "run",
        "--strategy",
        "sma_crossover",
        "--profile",
        str(PROFILES / "off.yaml"),
        *WINDOW,
        "--out",
        str(off),
    )
    assert done.returncode == 0, done.stderr
    events = first_opens(off)  # events on the days the unprotected run opened positions
    assert len(events) >= 4
    profile = {
        "name": "blackout",
        "protections": {
            "event_blackout": {"events": {a: [d] for a, d in events.items()}, "before": "2 days"}
        },
    }
    (tmp_path / "blackout.yaml").write_text(yaml.safe_dump(profile))

    out = tmp_path / "cmp"
    profiles = [str(PROFILES / "off.yaml"), str(tmp_path / "blackout.yaml")]
    done = cli(
        site,
        "compare",
        "--strategy",
        "sma_crossover",
        "--profiles",
        *profiles,
        "--jobs",
        "2",
        *WINDOW,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "comparison.csv", index_col="run")
    assert table.loc["off", "denied_event_blackout"] == 0
    denied_count = table.loc["blackout", "denied_event_blackout"]

    orders = pd.read_csv(out / "blackout" / "orders.csv", keep_default_na=False)
    denied = orders[orders["blocking_systems"].str.contains("event_blackout")]
    assert len(denied) == denied_count == len(events)  # each first open, once: then retried
    for _, row in denied.iterrows():  # on the event day itself, which the window covers
        assert row["created"] == events[row["asset"]] and row["protection"] == "denied"
        assert f"around its event on {events[row['asset']]}" in row["reason"]
        assert row["status"] == "Rejected" and row["filled"] == 0
    summary = json.loads((out / "blackout" / "summary.json").read_text())
    assert summary["denials_by_system"]["event_blackout"] == denied_count
    audit = [json.loads(line) for line in (out / "blackout" / "audit.jsonl").open()]
    results = [r for rec in audit if rec["kind"] == "decision" for r in rec["results"]]
    assert {r["system"] for r in results} == {"event_blackout"}
    assert sum(not r["allowed"] for r in results) == denied_count
    assert "event_blackout" in (out / "comparison.md").read_text()

    # metrics, status and explain of the orchestrator know the plugin too
    script = textwrap.dedent(
        f"""
        from bt_protection.models import ProtectionRequest
        from bt_protection.orchestrator import ProtectionOrchestrator
        orch = ProtectionOrchestrator({str(tmp_path / "blackout.yaml")!r})
        asset, day = {events.index[0]!r}, {events.iloc[0]!r}
        print(orch.explain(asset, "open", day, bar=0))
        print(orch.get_protection_status(asset, day, bar=0)["protections"]["event_blackout"])
        orch.can_execute_action(ProtectionRequest(asset, day, 0, 10, bar=0))
        print(orch.get_performance_metrics()["blocks_by_system"])
        from datetime import date, timedelta
        event = date.fromisoformat(day)
        for offset in range(-3, 3):  # before: 2 days, after: 1 day, both ends included
            when = (event + timedelta(days=offset)).isoformat()
            status = orch.get_protection_status(asset, when)["protections"]["event_blackout"]
            print(offset, status["in_blackout"], status["clear_from"])
        """
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment(site)
    )
    assert shown.returncode == 0, shown.stderr
    explained, status, blocks, *window = shown.stdout.splitlines()
    assert explained.startswith(f"open of {events.index[0]} on {events.iloc[0]}")
    assert "denied by event_blackout" in explained
    assert "'in_blackout': True" in status
    assert blocks == "{'event_blackout': 1}"
    event = pd.Timestamp(events.iloc[0])
    clear = (event + pd.Timedelta(days=2)).date().isoformat()
    expected = [
        f"{offset} {-2 <= offset <= 1} {clear if -2 <= offset <= 1 else day.date().isoformat()}"
        for offset in range(-3, 3)
        for day in [event + pd.Timedelta(days=offset)]
    ]
    assert window == expected


def test_a_broken_plugin_stops_every_command_with_one_sentence(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "broken_plugin").mkdir(parents=True)
    (source / "broken_plugin" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from bt_protection.protections import Protection, ProtectionConfig

            @dataclass(frozen=True)
            class Config(ProtectionConfig):
                pass

            class NoCheck(Protection):
                key = "no_check"
                priority = 7
                config_class = Config
            """
        )
    )
    (source / "pyproject.toml").write_text(
        '[project]\nname = "broken-plugin"\nversion = "1.0"\n'
        '[project.entry-points."bt_protection.protections"]\nno_check = "broken_plugin:NoCheck"\n'
        '[tool.setuptools]\npackages = ["broken_plugin"]\n'
    )
    install(source, tmp_path / "site")
    for argv in (["systems"], ["validate", str(PROFILES / "off.yaml")]):
        done = cli(tmp_path / "site", *argv)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr == (
            f"bt-protection {argv[0]}: error: protection broken_plugin.NoCheck has no `check` "
            "method; without one every guarded order would fail, and be denied under "
            "on_error: deny.\n"
        )


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class GoodConfig(ProtectionConfig):
    limit: int = 3


class UndecoratedConfig(ProtectionConfig):  # @dataclass(frozen=True) forgotten
    limit: int = 3


@dataclass(frozen=True, kw_only=True)
class RequiredConfig(ProtectionConfig):
    limit: int


@dataclass(frozen=True)
class UnreadableConfig(ProtectionConfig):
    assets: list[str] | None = None


def _check(self: Any, request: ProtectionRequest, now: Any) -> ProtectionResult:
    return self.allow("fine")


def protection(name: str = "Plugged", **attributes: Any) -> type[Protection]:
    body = {"key": "plugged", "priority": 60, "config_class": GoodConfig, "check": _check}
    return type(name, (Protection,), {**body, **attributes})


CONTRACT = {
    "no check": (
        {"check": Protection.check},
        "has no `check` method; without one every guarded order would fail, and be denied "
        "under on_error: deny.",
    ),
    "no key": ({"key": None}, "needs a class attribute `key`"),
    "key with capitals": ({"key": "My Key"}, "not 'My Key'"),
    "no priority": (
        {"priority": "high"},
        "needs an integer class attribute `priority`, not 'high'.",
    ),
    "priority taken": (
        {"priority": 4},
        "takes priority 4, which bt_protection.protections.holding_period.HoldingPeriod has",
    ),
    "key taken": ({"key": "grace_period"}, "takes key 'grace_period', which bt_protection"),
    "config not a dataclass": (
        {"config_class": UndecoratedConfig},
        "UndecoratedConfig, which is not a frozen dataclass",
    ),
    "not a config": (
        {"config_class": dict},
        "needs `config_class`, a subclass of ProtectionConfig",
    ),
    "field without default": ({"config_class": RequiredConfig}, "fields limit have no default"),
    "unreadable field": (
        {"config_class": UnreadableConfig},
        "fields assets of a type profiles cannot hold",
    ),
}


@pytest.mark.parametrize("case", list(CONTRACT), ids=list(CONTRACT))
def test_register_refuses_a_class_that_breaks_the_contract(case: str) -> None:
    before = dict(registry())
    changes, message = CONTRACT[case]
    with pytest.raises(PluginError) as caught:
        register(protection(**changes))
    assert str(caught.value).startswith(f"protection {__name__}.Plugged ")
    assert message in str(caught.value)
    assert registry() == before


def test_register_refuses_what_is_not_a_protection() -> None:
    with pytest.raises(PluginError, match="GoodConfig is not a subclass of bt_protection"):
        register(GoodConfig)  # type: ignore[arg-type]


def test_a_good_plugin_class_passes_the_contract_checks() -> None:
    from bt_protection.protections.base import _check_contract

    _check_contract(protection())  # checked, not registered: the registry stays as it is


def test_the_loader_reads_every_type_the_contract_allows() -> None:
    assert set(loader._SCALARS) == SCALAR_TYPES
