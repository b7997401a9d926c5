"""Vega-Lite specs of the report's charts, each from a small tidy table (aggregated before it
gets here: a chart inlines its data). Dates are ISO strings read on a UTC time scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bt_protection.report.page import records

Spec = dict[str, Any]
WIDTH = 900
REGIME_COLOURS = {
    "bull": "#2ca02c",
    "neutral": "#bbbbbb",
    "bear": "#d62728",
    "crisis": "#7b1010",
}
PROFILE_PALETTE = "tableau10"


def _time(field: str = "date", title: str | None = None) -> Spec:
    return {
        "field": field,
        "type": "temporal",
        "scale": {"type": "utc"},
        "title": title,
        "axis": {"format": "%b %Y", "labelOverlap": True},
    }


def _day(field: str = "date", title: str | None = None) -> Spec:
    """A date in a tooltip, as YYYY-MM-DD in UTC (the field is parsed as a date)."""
    return {
        "field": field,
        "type": "temporal",
        "timeUnit": "utcyearmonthdate",
        "format": "%Y-%m-%d",
        "title": title or field,
    }


def _lane(profiles: int, most: int, least: int) -> int:
    """Pixels per profile within a band: fewer profiles, wider lanes."""
    return max(least, most - 3 * profiles)


def _profiles(names: Sequence[str], title: str = "profile") -> Spec:
    return {
        "field": "profile",
        "type": "nominal",
        "title": title,
        "sort": list(names),
        "scale": {"domain": list(names), "scheme": PROFILE_PALETTE},
    }


def _regime_layer(regimes: pd.DataFrame, legend: bool) -> Spec:
    """Background bands, one per regime period (`start`, `end`, `regime`)."""
    known = [r for r in REGIME_COLOURS if r in set(regimes["regime"])]
    others = sorted(set(regimes["regime"]) - set(known))
    domain = known + others
    colours = [REGIME_COLOURS.get(r, "#9467bd") for r in domain]
    return {
        "data": {"values": records(regimes)},
        "mark": {"type": "rect", "opacity": 0.13},
        "encoding": {
            "x": _time("start"),
            "x2": {"field": "end"},
            "color": {
                "field": "regime",
                "type": "nominal",
                "scale": {"domain": domain, "range": colours},
                "legend": {"title": "regime (bands)", "symbolOpacity": 0.4} if legend else None,
            },
            "tooltip": [
                {"field": "regime", "type": "nominal"},
                _day("start", "from"),
                _day("end", "to"),
            ],
        },
    }


def _with_bands(line: Spec, regimes: pd.DataFrame, legend: bool = True) -> Spec:
    if regimes.empty:
        return line
    return {
        "layer": [_regime_layer(regimes, legend), line],
        "resolve": {"scale": {"color": "independent"}},
    }


def equity_drawdown(curves: pd.DataFrame, regimes: pd.DataFrame, names: Sequence[str]) -> Spec:
    """Equity (log scale) above drawdown, one line per profile, regime bands behind both.
    `curves`: date, profile, value, drawdown."""
    pick = {"name": "pick", "select": {"type": "point", "fields": ["profile"]}, "bind": "legend"}
    opacity = {"condition": {"param": "pick", "value": 1}, "value": 0.15}
    tooltip = [
        _day(),
        {"field": "profile", "type": "nominal"},
        {"field": "value", "type": "quantitative", "format": ",.0f"},
        {"field": "drawdown", "type": "quantitative", "format": ".1%"},
    ]

    def panel(field: str, axis: Spec, height: int, top: bool) -> Spec:
        """The top panel has the legends and the legend-bound selection."""
        line: Spec = {
            "data": {"name": "curves"},
            "mark": {"type": "line", "strokeWidth": 1.4, "tooltip": True},
            "encoding": {
                "x": _time(),
                "y": {"field": field, "type": "quantitative", **axis},
                "color": _profiles(names) | ({} if top else {"legend": None}),
                "opacity": opacity,
                "tooltip": tooltip,
            },
        }
        if top:
            line["params"] = [pick]
        return {"width": WIDTH, "height": height, **_with_bands(line, regimes, top)}

    return {
        "datasets": {"curves": records(curves)},
        "vconcat": [
            panel(
                "value",
                {"title": "value (log)", "scale": {"type": "log", "nice": False}},
                280,
                True,
            ),
            panel("drawdown", {"title": "drawdown", "axis": {"format": "%"}}, 150, False),
        ],
        "resolve": {"scale": {"color": "shared"}},
    }


def denial_timeline(denied: pd.DataFrame, names: Sequence[str]) -> Spec:
    """One point per denial: x the date, one row per asset (a lane per profile), colour the
    profile, shape the system; hovering shows date, profile, system, reason and the moves.
    `denied`: date, profile, asset, system, action, side, reason, partial, move_5/20/60."""
    assets = sorted(set(denied["asset"]))
    moves = [
        {
            "field": f"move_{h}",
            "type": "quantitative",
            "format": "+.1%",
            "title": f"move {h} bars after",
        }
        for h in (5, 20, 60)
    ]
    return {
        "width": WIDTH,
        "height": {"step": _lane(len(names), 24, 10)},  # with yOffset: a profile's lane
        "data": {"values": records(denied)},
        "name": "denials",
        "mark": {"type": "point", "filled": True, "size": 60, "opacity": 0.85},
        "encoding": {
            "x": _time(),
            "y": {"field": "asset", "type": "nominal", "sort": assets, "title": None},
            "yOffset": {"field": "profile", "type": "nominal", "sort": list(names)},
            "color": _profiles(names),
            "shape": {"field": "system", "type": "nominal", "title": "blocking system"},
            "tooltip": [
                _day(),
                {"field": "profile", "type": "nominal"},
                {"field": "system", "type": "nominal"},
                {"field": "asset", "type": "nominal"},
                {"field": "action", "type": "nominal", "title": "blocked"},
                {"field": "partial", "type": "nominal", "title": "partial approval"},
                {"field": "reason", "type": "nominal"},
                *moves,
            ],
        },
    }


def effectiveness(summary: pd.DataFrame, names: Sequence[str], systems: Sequence[str]) -> Spec:
    """Per system and profile: denials, share right, mean move after and value saved (20
    bars), side by side. `summary`: profile, system, count, right_20, mean_fwd_20, saved_20."""
    panels = (
        ("count", "denials", ",d"),
        ("right_20", "blocking was right (20 bars)", ".0%"),
        ("mean_fwd_20", "mean move 20 bars after", "+.1%"),
        ("saved_20", "value saved (+) or lost (-), 20 bars", ",.0f"),
    )
    return {
        "data": {"values": records(summary)},
        "hconcat": [
            {
                "width": 190,
                "height": {"step": _lane(len(names), 20, 8)},
                "title": {"text": title, "fontSize": 12},
                "mark": {"type": "bar", "tooltip": True},
                "encoding": {
                    "y": {
                        "field": "system",
                        "type": "nominal",
                        "sort": list(systems),
                        "title": None,
                        "axis": None if i else {},
                    },
                    "yOffset": {"field": "profile", "type": "nominal", "sort": list(names)},
                    "x": {
                        "field": field,
                        "type": "quantitative",
                        "title": None,
                        "axis": {"format": "~s" if field == "saved_20" else form, "tickCount": 4},
                    },
                    "color": _profiles(names),
                    "tooltip": [
                        {"field": "profile", "type": "nominal"},
                        {"field": "system", "type": "nominal"},
                        {"field": field, "type": "quantitative", "format": form, "title": title},
                    ],
                },
            }
            for i, (field, title, form) in enumerate(panels)
        ],
    }


def decisions_by_regime(
    counts: pd.DataFrame, names: Sequence[str], outcomes: Sequence[str]
) -> Spec:
    """A grid per profile: regime by outcome (approved, exempt or the blocking system),
    shaded and labelled by the number of decisions. `counts`: profile, regime, outcome, count."""
    return {
        "data": {"values": records(counts)},
        "facet": {"field": "profile", "type": "nominal", "sort": list(names), "title": None},
        "columns": 2,
        "spec": {
            "width": {"step": 64},
            "height": {"step": 24},
            "encoding": {
                "x": {
                    "field": "outcome",
                    "type": "nominal",
                    "sort": list(outcomes),
                    "title": None,
                    "axis": {"labelAngle": -35},
                },
                "y": {"field": "regime", "type": "nominal", "title": None},
            },
            "layer": [
                {
                    "mark": {"type": "rect", "tooltip": True},
                    "encoding": {
                        "color": {
                            "field": "count",
                            "type": "quantitative",
                            "scale": {"type": "log", "scheme": "blues"},
                            "title": "decisions",
                        },
                    },
                },
                {
                    "mark": {"type": "text", "fontSize": 10},
                    "encoding": {"text": {"field": "count", "type": "quantitative"}},
                },
            ],
        },
    }


def cost_curves(costs: pd.DataFrame, names: Sequence[str], crossings: pd.DataFrame) -> Spec:
    """Sharpe by cost per profile, and the gap to off's Sharpe with its zero line and a
    dashed rule at each break-even. `costs`: costs.csv; `crossings`: profile,
    breakeven_cost_bps (known ones only)."""

    def panel(field: str, title: str, gap: bool) -> Spec:
        line: Spec = {
            "mark": {"type": "line", "point": True, "tooltip": True},
            "encoding": {
                "x": {"field": "cost_bps", "type": "quantitative", "title": "cost (bps per trade)"},
                "y": {"field": field, "type": "quantitative", "title": title},
                "color": _profiles(names),
            },
        }
        layers = [line]
        if gap:
            layers.append(
                {"mark": {"type": "rule", "strokeDash": [4, 3]}, "encoding": {"y": {"datum": 0}}}
            )
        if gap and not crossings.empty:
            layers.append(
                {
                    "data": {"values": records(crossings)},
                    "mark": {"type": "rule", "strokeDash": [2, 2], "tooltip": True},
                    "encoding": {
                        "x": {"field": "breakeven_cost_bps", "type": "quantitative"},
                        "color": _profiles(names),
                        "tooltip": [
                            {"field": "profile", "type": "nominal"},
                            {
                                "field": "breakeven_cost_bps",
                                "type": "quantitative",
                                "format": ".1f",
                                "title": "break-even (bps)",
                            },
                        ],
                    },
                }
            )
        return {"width": 420, "height": 240, "layer": layers}

    return {
        "data": {"values": records(costs)},
        "hconcat": [
            panel("sharpe", "Sharpe", False),
            panel("sharpe_vs_off", "Sharpe minus off's", True),
        ],
    }


def arm_curves(curves: pd.DataFrame, fold_starts: pd.DataFrame, arms: Sequence[str]) -> Spec:
    """Stitched out-of-sample value of each arm, a dotted rule where each test window starts.
    `curves`: date, profile (the arm), value; `fold_starts`: fold, date."""
    return {
        "width": WIDTH,
        "height": 300,
        "layer": [
            {
                "data": {"values": records(fold_starts)},
                "mark": {"type": "rule", "strokeDash": [2, 3], "color": "#888"},
                "encoding": {
                    "x": _time(),
                    "tooltip": [{"field": "fold", "type": "nominal"}, _day("date", "test starts")],
                },
            },
            {
                "data": {"values": records(curves)},
                "mark": {"type": "line", "strokeWidth": 1.5, "tooltip": True},
                "encoding": {
                    "x": _time(),
                    "y": {
                        "field": "value",
                        "type": "quantitative",
                        "scale": {"zero": False},
                        "title": "out-of-sample value",
                    },
                    "color": _profiles(arms, "arm"),
                },
            },
        ],
    }


def chosen_by_fold(chosen: pd.DataFrame) -> Spec:
    """The value each fold chose for each tuned key. `chosen`: fold, key, value (text)."""
    return {
        "data": {"values": records(chosen)},
        "facet": {
            "row": {
                "field": "key",
                "type": "nominal",
                "title": None,
                "header": {"labelAngle": 0, "labelAlign": "left", "labelLimit": 320},
            }
        },
        "spec": {
            "width": 520,
            "height": {"step": 22},
            "mark": {"type": "point", "filled": True, "size": 90, "tooltip": True},
            "encoding": {
                "x": {
                    "field": "fold",
                    "type": "ordinal",
                    "title": "fold",
                    "axis": {"labelAngle": 0},
                },
                "y": {"field": "value", "type": "nominal", "title": None},
                "color": {"field": "value", "type": "nominal", "legend": None},
            },
        },
        "resolve": {"scale": {"y": "independent", "color": "independent"}},
    }


def bootstrap(distribution: pd.DataFrame) -> Spec:
    """Histogram of the bootstrap's Sharpe differences per comparison, with the estimate
    (solid) and the interval's ends (dashed). `distribution`: comparison, what (`bin`,
    `estimate` or `interval`), low, high, resamples (bins), value (the rules)."""
    return {
        "data": {"values": records(distribution)},
        "facet": {"row": {"field": "comparison", "type": "nominal", "title": None, "sort": None}},
        "spec": {
            "width": 620,
            "height": 120,
            "layer": [
                {
                    "transform": [{"filter": "datum.what === 'bin'"}],
                    "mark": {
                        "type": "rect",
                        "color": "#4c78a8",
                        "stroke": "white",
                        "strokeWidth": 0.5,
                        "tooltip": True,
                    },
                    "encoding": {
                        "x": {
                            "field": "low",
                            "type": "quantitative",
                            "title": "Sharpe difference (resampled)",
                        },
                        "x2": {"field": "high"},
                        "y": {"field": "resamples", "type": "quantitative"},
                        "y2": {"datum": 0},
                    },
                },
                {
                    "transform": [{"filter": "datum.what !== 'bin'"}],
                    "mark": {"type": "rule", "strokeWidth": 2, "color": "#d62728"},
                    "encoding": {
                        "x": {"field": "value", "type": "quantitative"},
                        "strokeDash": {
                            "field": "what",
                            "type": "nominal",
                            "title": None,
                            "scale": {
                                "domain": ["estimate", "interval"],
                                "range": [[1, 0], [5, 3]],
                            },
                        },
                        "tooltip": [
                            {"field": "what", "type": "nominal"},
                            {"field": "value", "type": "quantitative", "format": "+.2f"},
                        ],
                    },
                },
            ],
        },
    }


def stability(keys: pd.DataFrame) -> Spec:
    """Share of folds that chose each key's most frequent value. `keys`: key, share, mode."""
    return {
        "width": 420,
        "height": {"step": 24},
        "data": {"values": records(keys)},
        "layer": [
            {
                "mark": {"type": "bar", "color": "#72b7b2", "tooltip": True},
                "encoding": {
                    "y": {
                        "field": "key",
                        "type": "nominal",
                        "title": None,
                        "axis": {"labelLimit": 320},
                    },
                    "x": {
                        "field": "share",
                        "type": "quantitative",
                        "title": "share of folds",
                        "scale": {"domain": [0, 1]},
                        "axis": {"format": "%"},
                    },
                },
            },
            {
                "mark": {"type": "text", "align": "left", "dx": 4},
                "encoding": {
                    "y": {"field": "key", "type": "nominal"},
                    "x": {"field": "share", "type": "quantitative"},
                    "text": {"field": "mode", "type": "nominal"},
                },
            },
        ],
    }
