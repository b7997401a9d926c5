"""The sections of a tune report, from the files `bt-protection tune` writes (docs/tune.md):
the verdict, the stitched out-of-sample curves, the folds and their chosen parameters, the
bootstrap distribution with its interval, and the stability of the choices."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_protection.report import charts
from bt_protection.report.page import Chart, Format, Section, Table, Text
from bt_protection.tune.result import ARMS, daily_returns
from bt_protection.tune.stats import BLOCK_DAYS, RESAMPLES, paired_bootstrap, sharpe

BINS = 40


def tune_title(folder: Path) -> tuple[str, str]:
    """(title, subtitle) of the page."""
    fingerprint = _json(folder / "fingerprint.json")
    data = " ".join(fingerprint.get("data", []))
    return (
        f"Tune: {fingerprint.get('strategy')} on {fingerprint.get('base_profile')}",
        f"{data}, {fingerprint.get('start')} to {fingerprint.get('end')}; train "
        f"{fingerprint.get('train')}, test {fingerprint.get('test')}, objective "
        f"{fingerprint.get('objective')}, {fingerprint.get('candidates')} candidates "
        f"({fingerprint.get('sampler')}).",
    )


def tune_sections(folder: Path) -> list[Section]:
    fingerprint = _json(folder / "fingerprint.json")
    verdict = _json(folder / "verdict.json")
    folds = pd.read_csv(folder / "folds.csv", dtype={"chosen": str})
    equity = pd.read_csv(folder / "oos_equity.csv", dtype={"date": str})
    keys = [k for k in fingerprint.get("space", {}) if k in folds]
    arms = pd.DataFrame(verdict["arms"]).T.reindex(list(ARMS)).rename_axis("arm").reset_index()
    return [
        Section(
            "Verdict",
            (
                Text(f"{verdict['verdict'][:1].upper()}{verdict['verdict'][1:]}."),
                Table(
                    arms,
                    {
                        c: Format.PERCENT
                        for c in ("cagr", "total_return", "max_drawdown", "volatility")
                    },
                    name="arms",
                ),
            ),
        ),
        Section(
            "Stitched out-of-sample curves",
            (
                Text(
                    "Each arm's test windows joined end to end; dotted rules mark where each "
                    "fold's test window starts."
                ),
                Chart("chart-oos", _curves(equity, folds)),
            ),
        ),
        Section("Folds and chosen parameters", _folds(folds, keys)),
        Section("Bootstrap of the Sharpe difference", _bootstrap(equity, verdict, fingerprint)),
        Section("Parameter stability", _stability(verdict)),
    ]


def _json(file: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def _curves(equity: pd.DataFrame, folds: pd.DataFrame) -> dict[str, Any]:
    shown = equity.rename(columns={"arm": "profile"})
    starts = pd.DataFrame({"fold": folds["fold"].astype(str), "date": folds["test_start"]})
    return charts.arm_curves(shown, starts, ARMS)


def _folds(folds: pd.DataFrame, keys: list[str]) -> tuple[Text | Table | Chart, ...]:
    tests = [f"test_{arm}_sharpe" for arm in ARMS]
    shown = folds[
        ["fold", "train_start", "train_end", "test_start", "test_end", "chosen", *keys, *tests]
    ]
    parts: list[Text | Table | Chart] = [Table(shown, name="folds")]
    if keys:
        chosen = folds.melt(id_vars="fold", value_vars=keys, var_name="key", value_name="value")
        chosen["value"] = chosen["value"].astype(str)
        parts.append(Text("The value each fold's training window chose for each key."))
        parts.append(Chart("chart-chosen", charts.chosen_by_fold(chosen)))
    return tuple(parts)


def _bootstrap(
    equity: pd.DataFrame, verdict: dict[str, Any], fingerprint: dict[str, Any]
) -> tuple[Text | Chart, ...]:
    """The resampled differences again (same seed, same draws as the verdict's), binned."""
    off = daily_returns(equity, "off")
    rows = []
    sentences = []
    for arm in ("tuned", "base"):
        name = f"{arm}_vs_off"
        result = verdict["bootstrap"][name]
        diffs = paired_bootstrap(
            daily_returns(equity, arm),
            off,
            sharpe,
            seed=int(fingerprint.get("seed", 0)),
            block=float(result.get("block_days", BLOCK_DAYS)),
            resamples=int(result.get("resamples", RESAMPLES)),
        ).differences
        label = f"{arm} minus off"
        if len(diffs):
            counts, edges = np.histogram(diffs, bins=BINS)
            rows += [
                {"comparison": label, "what": "bin", "low": lo, "high": hi, "resamples": int(n)}
                for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
            ]
        low, high = result["ci"]
        rows += [
            {"comparison": label, "what": "estimate", "value": result["estimate"]},
            {"comparison": label, "what": "interval", "value": low},
            {"comparison": label, "what": "interval", "value": high},
        ]
        sentences.append(
            f"{label}: Sharpe difference {_signed(result['estimate'])}, "
            f"{result['confidence']:.0%} interval {_signed(low)} to {_signed(high)}, "
            f"{_share(result['p_positive'])} of {result['resamples']} resamples above 0"
        )
    return (
        Text("; ".join(sentences) + f" (stationary block bootstrap, {BLOCK_DAYS}-day blocks)."),
        Chart("chart-bootstrap", charts.bootstrap(pd.DataFrame(rows))),
    )


def _stability(verdict: dict[str, Any]) -> tuple[Text | Chart, ...]:
    keys = verdict.get("stability", {}).get("keys", {})
    if not keys:
        return (Text("No parameter was tuned."),)
    rows = pd.DataFrame(
        [{"key": k, "share": v["share"], "mode": str(v["mode"])} for k, v in keys.items()]
    )
    overall = verdict["stability"]["overall"]
    deflated = verdict.get("deflated_sharpe", {})
    return (
        Text(
            f"Overall stability {_share(overall)}: the mean share of folds that chose each "
            f"key's most frequent value (labelled). Deflated Sharpe "
            f"{_signed(deflated.get('deflated_sharpe')).lstrip('+')} for "
            f"{deflated.get('trials')} trials."
        ),
        Chart("chart-stability", charts.stability(rows)),
    )


def _known(value: Any) -> bool:
    """A number (verdict.json writes an unknown one as null)."""
    return isinstance(value, int | float) and math.isfinite(value)


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if _known(value) else "n/a"


def _share(value: Any) -> str:
    return f"{value:.0%}" if _known(value) else "n/a"
