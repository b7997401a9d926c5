"""Profiles: the shipped configs, `extends`, every error sentence, and `bt-protection validate`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bt_protection.cli import main
from bt_protection.durations import Duration
from bt_protection.errors import ProfileError
from bt_protection.models import Action, Severity
from bt_protection.profile import Mode, OnError, Profile, load_profile
from bt_protection.protections.base import registry
from bt_protection.shipped import PROFILES

SHIPPED = sorted(PROFILES.glob("*.yaml"))
SYSTEMS = tuple(registry())
LIFTABLE = "grace_period, holding_period, whipsaw_protection, drawdown_guard, turnover_budget"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- shipped profiles ---------------------------------------------------------------------------


def test_the_five_profiles_of_the_spec_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"off", "conservative", "balanced", "aggressive", "shadow"} <= names


def test_a_shipped_profile_loads_by_name_and_an_existing_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_profile("balanced") == load_profile(PROFILES / "balanced.yaml")
    write(tmp_path, "balanced", "name: mine\nmode: shadow\n")  # a file of that very name
    assert load_profile("balanced").name == "mine"
    shipped = ", ".join(p.stem for p in SHIPPED)
    with pytest.raises(ProfileError) as raised:
        load_profile("balancd")
    assert str(raised.value) == (
        f"balancd: no such file, and no shipped profile has that name; shipped profiles: "
        f"{shipped}."
    )
    with pytest.raises(ProfileError, match=r"^balanced\.yaml: no such file\.$"):
        load_profile("balanced.yaml")  # a file name is a path, never a name
    assert main(["validate", "off", "portfolio_guard"]) == 0
    assert capsys.readouterr().out.startswith("ok  off (off: no protection enabled)")
    assert main(["validate", "balancd"]) == 2
    assert "shipped profiles: " in capsys.readouterr().err


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_profile_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.source == str(path)
    dumped = write(tmp_path, "dump.yaml", yaml.safe_dump(profile.to_dict(), sort_keys=False))
    again = load_profile(dumped)
    assert again == profile
    assert again.hash == profile.hash
    assert load_profile(profile.to_dict()) == profile


def test_shipped_profiles_behave_differently() -> None:
    profiles = {p.stem: load_profile(p) for p in SHIPPED}
    assert profiles["off"].enabled_systems == ()
    assert profiles["balanced"].enabled_systems == SYSTEMS[:5]  # the portfolio brakes are off
    assert len({profiles[n].hash for n in ("off", "conservative", "balanced", "aggressive")}) == 4
    holds = [
        profiles[n].protections["holding_period"].min_hold.amount
        for n in ("aggressive", "balanced", "conservative")
    ]
    assert holds == sorted(holds) and len(set(holds)) == 3


def test_shadow_is_balanced_in_shadow_mode() -> None:
    shadow = load_profile(PROFILES / "shadow.yaml")
    balanced = load_profile(PROFILES / "balanced.yaml")
    assert shadow.mode is Mode.SHADOW
    assert shadow.protections == balanced.protections
    assert shadow.regime == balanced.regime
    assert shadow.description != balanced.description


def test_balanced_values_are_typed() -> None:
    profile = load_profile(PROFILES / "balanced.yaml")
    core = profile.protections["core_asset_immunity"]
    override = profile.protections["regime_override"]
    assert core.protect == frozenset({Action.CLOSE, Action.DECREASE, Action.REVERSE})
    assert core.dynamic is not None and core.dynamic.duration == Duration.parse("60 bars")
    assert override.severity == {"neutral->bear": Severity.HIGH}
    assert override.can_override[Severity.HIGH] == frozenset({"grace_period", "whipsaw_protection"})
    assert override.window == Duration.parse("2 decisions") and override.window.counts_decisions
    assert profile.on_error is OnError.DENY
    assert profile.regime.data is None and profile.regime.confirm_bars == 8


# --- loading rules ------------------------------------------------------------------------------


def test_a_profile_passes_through() -> None:
    profile = Profile(name="x")
    assert load_profile(profile) is profile


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, "mine.yaml", "mode: shadow\n")).name == "mine"
    assert load_profile({"mode": "shadow"}).name == "custom"


def test_block_without_enabled_is_on_and_enabled_false_is_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        'protections:\n  holding_period: {min_hold: "3 bars"}\n'
        "  whipsaw_protection: {enabled: false, max_cycles: 9}\n",
    )
    profile = load_profile(path)
    assert profile.enabled_systems == ("holding_period",)
    assert profile.protections["holding_period"].min_hold == Duration.parse("3 bars")
    whipsaw = profile.protections["whipsaw_protection"]
    assert whipsaw == type(whipsaw)(enabled=False)


def test_ints_are_accepted_as_floats() -> None:
    profile = load_profile({"regime": {"vol_crisis": 1}})
    assert profile.regime.vol_crisis == 1.0 and isinstance(profile.regime.vol_crisis, float)


def test_extends_deep_merges_and_child_wins(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub",
        "base.yaml",
        "name: base\ndescription: the base\non_error: approve\n"
        "protections:\n"
        '  holding_period: {min_hold: "20 bars", protect: [close, decrease, reverse]}\n'
        "  whipsaw_protection: {max_cycles: 2}\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "extends: sub/base.yaml\nprotections:\n  holding_period: {protect: [close]}\n",
    )
    profile = load_profile(child)
    holding = profile.protections["holding_period"]
    assert profile.name == "child" and profile.description == ""
    assert profile.on_error is OnError.APPROVE
    assert holding.min_hold == Duration.parse("20 bars")
    assert holding.protect == frozenset({Action.CLOSE})
    assert profile.enabled_systems == ("holding_period", "whipsaw_protection")


def test_errors_point_at_the_file_that_wrote_the_value(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "protections:\n  whipsaw_protection:\n    max_cycles: x\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nmode: shadow\n")
    with pytest.raises(ProfileError) as error:
        load_profile(child)
    assert str(error.value) == (
        f"{base}:3: protections.whipsaw_protection.max_cycles: "
        "expected a whole number (0 or more), not text ('x')."
    )


def test_mapping_extends_a_file_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "base.yaml", "on_error: approve\n")
    monkeypatch.chdir(tmp_path)
    profile = load_profile({"extends": "base.yaml", "mode": "shadow"})
    assert (profile.name, profile.mode, profile.on_error) == (
        "custom",
        Mode.SHADOW,
        OnError.APPROVE,
    )
    assert profile.source is None


def test_mapping_errors_name_the_mapping() -> None:
    with pytest.raises(ProfileError) as error:
        load_profile({"protections": {"whipsaw_protection": {"max_cycles": -1}}})
    assert str(error.value) == (
        "<mapping>: protections.whipsaw_protection.max_cycles: "
        "expected a whole number (0 or more), not -1."
    )


# --- bad profiles: one exact sentence each ------------------------------------------------------

BAD = {
    "bare-number-duration": (
        "protections:\n  holding_period:\n    min_hold: 20\n",
        "{f}:3: protections.holding_period.min_hold: 20 is a bare number; durations carry a unit: "
        'write "10 bars" (trading sessions) or "14 days" (calendar time).',
    ),
    "negative-duration": (
        'protections:\n  whipsaw_protection:\n    min_reentry: "-5 bars"\n',
        "{f}:3: protections.whipsaw_protection.min_reentry: '-5 bars' is negative; "
        'write zero or more with a unit, such as "10 bars" (trading sessions) or "14 days" '
        "(calendar time).",
    ),
    "unknown-top-level-key": (
        "name: x\nprotection: {}\n",
        "{f}:2: unknown key 'protection'; did you mean 'protections'? Valid keys: name, "
        "description, extends, mode, on_error, protections, regime, audit, exit_safety.",
    ),
    "unknown-system": (
        "protections:\n  holding_perod: {}\n",
        "{f}:2: protections: unknown system 'holding_perod'; did you mean 'holding_period'? "
        f"Valid systems: {', '.join(SYSTEMS)}.",
    ),
    "unknown-parameter": (
        'protections:\n  holding_period:\n    enabled: true\n    min_hlod: "20 bars"\n',
        "{f}:4: protections.holding_period: unknown key 'min_hlod'; did you mean 'min_hold'? "
        "Valid keys: min_hold, protect, lots, partial, enabled.",
    ),
    "string-for-int": (
        "protections:\n  whipsaw_protection:\n    max_cycles: three\n",
        "{f}:3: protections.whipsaw_protection.max_cycles: expected a whole number (0 or more), "
        "not text ('three').",
    ),
    "bool-for-int": (
        "protections:\n  whipsaw_protection:\n    max_cycles: true\n",
        "{f}:3: protections.whipsaw_protection.max_cycles: expected a whole number (0 or more), "
        "not a boolean (true).",
    ),
    "negative-count": (
        "protections:\n  core_asset_immunity:\n    dynamic: {top_n: -2}\n",
        "{f}:3: protections.core_asset_immunity.dynamic.top_n: expected a whole number "
        "(0 or more), not -2.",
    ),
    "count-below-minimum": (
        "protections:\n  core_asset_immunity:\n    dynamic:\n      top_n: 0\n",
        "{f}:4: protections.core_asset_immunity.dynamic.top_n: top_n must be at least 1, not 0.",
    ),
    "bad-mode": (
        "mode: enforced\n",
        "{f}:1: mode: unknown value 'enforced'; did you mean 'enforce'? "
        "Valid values: enforce, shadow.",
    ),
    "bad-on-error": (
        "on_error: ignore\n",
        "{f}:1: on_error: unknown value 'ignore'; valid values: deny, approve.",
    ),
    "unknown-action": (
        "protections:\n  holding_period:\n    protect: [close, sell]\n",
        "{f}:3: protections.holding_period.protect[1]: unknown value 'sell'; "
        "valid values: open, close, increase, decrease, reverse.",
    ),
    "action-not-guarded": (
        "protections:\n  holding_period:\n    protect: [close, open]\n",
        "{f}:3: protections.holding_period.protect: holding period can protect close, decrease "
        "and reverse, not open.",
    ),
    "unknown-severity-in-can-override": (
        "protections:\n  regime_override:\n    can_override:\n      severe: [holding_period]\n",
        "{f}:4: protections.regime_override.can_override.severe: unknown value 'severe'; "
        "valid values: low, medium, high, critical.",
    ),
    "unknown-system-in-can-override": (
        "protections:\n  regime_override:\n    can_override:\n      high: [holding]\n",
        "{f}:4: protections.regime_override.can_override.high: unknown system 'holding'; "
        f"a window can lift {LIFTABLE}.",
    ),
    "core-asset-immunity-in-can-override": (
        "protections:\n  regime_override:\n    can_override:\n"
        "      critical: [core_asset_immunity]\n",
        "{f}:4: protections.regime_override.can_override.critical: core_asset_immunity is never "
        f"bypassed by a regime override; a window can lift {LIFTABLE}.",
    ),
    "unknown-regime-in-severity-table": (
        'protections:\n  regime_override:\n    severity:\n      "bull->crash": critical\n',
        "{f}:4: protections.regime_override.severity.bull->crash: unknown regime 'crash' in "
        "'bull->crash'; regimes are bull, neutral, bear, crisis.",
    ),
    "unknown-severity-in-severity-table": (
        'protections:\n  regime_override:\n    severity: {"bull->bear": extreme}\n',
        "{f}:3: protections.regime_override.severity.bull->bear: unknown value 'extreme'; "
        "valid values: low, medium, high, critical.",
    ),
    "regime-fast-not-below-slow": (
        "regime:\n  slow_period: 200\n  fast_period: 300\n",
        "{f}:3: regime.fast_period: fast_period (300) must be below slow_period (200).",
    ),
    "regime-zero-period": (
        "regime:\n  vol_period: 0\n",
        "{f}:2: regime.vol_period: vol_period must be a whole number of at least 2, not 0.",
    ),
    "regime-zero-confirmation": (
        "regime:\n  confirm_bars: 0\n",
        "{f}:2: regime.confirm_bars: confirm_bars must be a whole number of at least 1, not 0.",
    ),
    "regime-vol-crisis-not-above-vol-high": (
        "regime:\n  vol_high: 0.5\n  vol_crisis: 0.45\n",
        "{f}:3: regime.vol_crisis: vol_crisis (0.45) must be above vol_high (0.5).",
    ),
    "regime-drawdown-crisis-not-above-drawdown-bear": (
        "regime:\n  drawdown_crisis: 0.1\n",
        "{f}:2: regime.drawdown_crisis: drawdown_crisis (0.1) must be above drawdown_bear (0.1).",
    ),
    "regime-drawdown-crisis-total-loss": (
        "regime:\n  drawdown_crisis: 1\n",
        "{f}:2: regime.drawdown_crisis: drawdown_crisis (1) must be below 1 (a 100% loss).",
    ),
    "regime-labels-the-indicator-cannot-give": (
        "protections:\n  regime_override:\n    regimes: [calm, stress]\n",
        "{f}:3: protections.regime_override.regimes: regimes must be [bull, neutral, bear, "
        "crisis], the labels RegimeIndicator gives from calm to stressed, not [calm, stress].",
    ),
    "decisions-outside-the-override-window": (
        "protections:\n  holding_period:\n    min_hold: 3 decisions\n",
        "{f}:3: protections.holding_period.min_hold: '3 decisions' counts decisions, which only "
        'regime_override.window can; write bars or days here, such as "10 bars" or "14 days".',
    ),
    "severity-wildcard-target": (
        'protections:\n  regime_override:\n    severity: {"bull->*": low}\n',
        "{f}:3: protections.regime_override.severity.bull->*: 'bull->*' is not a transition; "
        'write "from->to", e.g. "bull->bear", or "*->to" for every change into a regime, '
        'e.g. "*->crisis".',
    ),
    "disabled-block-still-checked": (
        "protections:\n  whipsaw_protection:\n    enabled: false\n    max_cycle: 3\n",
        "{f}:4: protections.whipsaw_protection: unknown key 'max_cycle'; did you mean "
        "'max_cycles'? Valid keys: max_cycles, window, min_reentry, enabled.",
    ),
    "yaml-boolean-for-text": (
        "protections:\n  core_asset_immunity:\n    assets: [AAPL, ON]\n",
        "{f}:3: protections.core_asset_immunity.assets[1]: expected text, not a boolean (true); "
        "put it in quotes to keep it as text.",
    ),
    "block-without-mapping": (
        "protections:\n  holding_period:\n",
        "{f}:2: protections.holding_period: expected a mapping (keys: min_hold, protect, "
        "lots, partial, enabled), not null.",
    ),
    "extends-missing-file": (
        "extends: nope.yaml\n",
        "{f}:1: extends: {d}/nope.yaml does not exist (extends is relative to the file that "
        "names it).",
    ),
    "not-a-mapping": (
        "- name\n- mode\n",
        "{f}:1: a profile is a mapping of keys such as name, mode and protections, not a list.",
    ),
    "empty-file": (
        "",
        "{f}:1: a profile is a mapping of keys such as name, mode and protections, "
        "not an empty file.",
    ),
    "invalid-yaml-syntax": (
        "name: x\nmode: enforce\n  on_error: deny\n",
        "{f}:3: invalid YAML: mapping values are not allowed here (column 11).",
    ),
    "duplicate-key": (
        "name: x\nmode: shadow\nname: y\n",
        "{f}:3: duplicate key 'name' (first written at line 1); "
        "each key may appear once in a mapping.",
    ),
    "too-deeply-nested": (
        "name: x\nregime: " + "[" * 25 + "]" * 25 + "\n",
        "{f}:2: values are nested more than 20 levels deep.",
    ),
    "alias-bomb": (
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, k in zip("abcde", "bcdef", strict=True)
        ),
        "{f}: the profile expands to more than 100,000 values (anchors and aliases repeat values).",
    ),
    "unsafe-tag": (
        "name: !!python/object/apply:os.system ['touch {d}/pwned']\n",
        "{f}:1: the tag !!python/object/apply:os.system is not allowed; a profile holds plain "
        "values (text, numbers, true/false, lists and mappings).",
    ),
}


@pytest.mark.parametrize(("text", "message"), BAD.values(), ids=BAD.keys())
def test_bad_profile_gives_one_exact_sentence(text: str, message: str, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", text.replace("{d}", str(tmp_path)))
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert str(error.value) == message.format(f=path, d=tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_extends_cycle_names_the_chain(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    with pytest.raises(ProfileError) as error:
        load_profile(a)
    assert str(error.value) == (
        f"{b}:2: extends: profiles extend each other in a cycle: {a} -> {b} -> {a}."
    )


def test_a_profile_file_read_again_the_same_is_not_parsed_again(tmp_path: Path) -> None:
    """A file (and its extends chain) that reads the same gives back the same immutable
    `Profile`; a change in any file of the chain, even of the same size within one clock
    tick, or a file gone, is read anew."""
    assert load_profile("balanced") is load_profile("balanced")
    base = write(tmp_path, "base.yaml", "protections:\n  grace_period: {duration: 5 bars}\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nmode: shadow\n")
    first = load_profile(child)
    assert load_profile(child) is first and load_profile(str(child)) is first
    write(tmp_path, "base.yaml", "protections:\n  grace_period: {duration: 7 bars}\n")
    second = load_profile(child)
    assert second.protections["grace_period"].duration == Duration.parse("7 bars")
    assert first.protections["grace_period"].duration == Duration.parse("5 bars")
    write(tmp_path, "child.yaml", "extends: base.yaml\nmode: enforc\n")
    with pytest.raises(ProfileError, match="unknown value 'enforc'"):
        load_profile(child)
    base.unlink()
    write(tmp_path, "child.yaml", "extends: base.yaml\nmode: shadow\n")
    with pytest.raises(ProfileError, match="base.yaml does not exist"):
        load_profile(child)


def test_file_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", "name: big\n" + "#" * 1_000_000 + "\n")
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert str(error.value) == (
        f"{path}: the file is 1,000,011 bytes; a profile may be at most 1 MB (1,000,000 bytes)."
    )


def test_a_new_config_field_type_needs_no_loader_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads the schema from the config dataclass: a new field is accepted as is."""
    holding = registry()["holding_period"]

    @dataclasses.dataclass(frozen=True)
    class Extended(holding.config_class):  # type: ignore[name-defined,misc]
        cap: float | None = None
        tags: frozenset[str] = frozenset()

    monkeypatch.setattr(holding, "config_class", Extended)
    profile = load_profile({"protections": {"holding_period": {"cap": 2, "tags": ["a"]}}})
    config = profile.protections["holding_period"]
    assert isinstance(config, Extended) and config.cap == 2.0 and config.tags == {"a"}


# --- bt-protection validate ----------------------------------------------------------------------


def test_validate_accepts_the_shipped_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, SHIPPED)]) == 0
    out = capsys.readouterr().out
    balanced = PROFILES / "balanced.yaml"
    assert f"ok  {balanced} (balanced: {', '.join(SYSTEMS[:5])})" in out.splitlines()
    assert f"ok  {PROFILES / 'off.yaml'} (off: no protection enabled)" in out.splitlines()


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(PROFILES / "balanced.yaml")
    bad = write(tmp_path, "bad.yaml", "mode: enforced\n")
    missing = str(tmp_path / "missing.yaml")

    assert main(["validate", good, str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1] == (
        f"{bad}:1: mode: unknown value 'enforced'; did you mean 'enforce'? "
        "Valid values: enforce, shadow."
    )

    assert main(["validate", str(bad), missing, good]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"{missing}: no such file.\n"
    assert "Traceback" not in captured.out + captured.err


REGIME_CASES = {k: v for k, v in BAD.items() if k.startswith("regime")}


@pytest.mark.parametrize(("text", "message"), REGIME_CASES.values(), ids=REGIME_CASES.keys())
def test_validate_refuses_what_the_regime_indicator_cannot_run(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out == message.format(f=path) + "\n"
