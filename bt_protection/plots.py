"""Comparison plots: equity curves, drawdowns and denials by system over time.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state, nothing is
shown): each function returns its `Figure`, which a notebook displays and `path` saves. Runs
are given as `bt_protection.runs.named_runs` takes them (Run objects, run folders or a
mapping name -> Run); a run keeps its colour in every panel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import cycle
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from bt_protection.protections.base import registry
from bt_protection.runs import Run, RunLike, named_runs

Runs = Mapping[str, Run] | Iterable[RunLike]
SYSTEM_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1)))
DPI = 100


def _colours(count: int) -> list[tuple[float, ...]]:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _axes(ax: Axes | None, size: tuple[float, float] = (11, 4)) -> Axes:
    if ax is not None:
        return ax
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def _figure(ax: Axes) -> Figure:
    """The figure `ax` draws on (the root figure when `ax` lies in a subfigure)."""
    figure = ax.figure
    return figure if isinstance(figure, Figure) else figure.figure


def _legend(ax: Axes, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncols=2, **kwargs)


def plot_equity(runs: Runs, ax: Axes | None = None) -> Figure:
    """Portfolio value of each run over time (log scale)."""
    named = named_runs(runs)
    ax = _axes(ax)
    for colour, (name, run) in zip(_colours(len(named)), named.items(), strict=True):
        ax.plot(run.equity.index, run.equity["value"], color=colour, lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_title("Equity")
    ax.set_ylabel("portfolio value")
    ax.grid(alpha=0.3)
    _legend(ax, loc="upper left")
    return _figure(ax)


def drawdown(value: pd.Series) -> pd.Series:
    """Fall from the running peak at each bar, as a negative fraction."""
    return value / value.cummax() - 1


def plot_drawdowns(runs: Runs, ax: Axes | None = None, legend: bool = True) -> Figure:
    """Drawdown of each run's portfolio value from its running peak."""
    named = named_runs(runs)
    ax = _axes(ax)
    for colour, (name, run) in zip(_colours(len(named)), named.items(), strict=True):
        ax.plot(run.equity.index, drawdown(run.equity["value"]), color=colour, lw=1, label=name)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Drawdown")
    ax.set_ylabel("below peak")
    ax.grid(alpha=0.3)
    if legend:
        _legend(ax, loc="lower left")
    return _figure(ax)


def denial_counts(run: Run) -> pd.DataFrame:
    """Cumulative denials per blocking system at each decision date (one column per system
    that denied anything; a denial counts for every system that blocked it)."""
    decisions = run.decisions
    if decisions.empty:
        return pd.DataFrame()
    denied = decisions.loc[~decisions["approved"].astype(bool), ["time", "blocking_systems"]]
    rows = denied.explode("blocking_systems").dropna()
    if rows.empty:
        return pd.DataFrame()
    counts = pd.crosstab(rows["time"], rows["blocking_systems"]).cumsum()
    return counts[[system for system in registry() if system in counts.columns]]


def risk_exit_counts(run: Run) -> pd.Series:
    """Cumulative risk exits (approvals by exit safety's valves) at each decision date."""
    decisions = run.decisions
    if decisions.empty or "risk_exit" not in decisions.columns:
        return pd.Series(dtype=float)
    times = decisions.loc[decisions["risk_exit"].fillna(False).astype(bool), "time"]
    return times.value_counts().sort_index().cumsum()


def _cumulative(ax: Axes, run: Run, counts: pd.Series, **style: Any) -> None:
    """A step line of `counts` from 0 at the run's first bar to its total at the last one."""
    start, end = run.equity.index[0], run.equity.index[-1]
    series = pd.concat([pd.Series([0], [start]), counts])
    series.loc[end] = series.iloc[-1]
    ax.step(series.index, series, where="post", lw=1.2, **style)


def plot_denials(runs: Runs, ax: Axes | None = None) -> Figure:
    """Cumulative denials over time: colour = run (as in the other panels), style = system;
    each risk exit (a denial exit safety turned into an approval) is a cross at the run's
    count of risk exits so far."""
    named = named_runs(runs)
    ax = _axes(ax)
    styles = dict(zip(registry(), cycle(SYSTEM_STYLES)))  # plugins may add systems
    used: set[str] = set()
    risk_style: dict[str, Any] = {"ls": "none", "marker": "X", "ms": 7}
    risky = False
    for colour, (_, run) in zip(_colours(len(named)), named.items(), strict=True):
        counts = denial_counts(run)
        for system in counts.columns:
            _cumulative(ax, run, counts[system], color=colour, ls=styles[system])
            used.add(system)
        exits = risk_exit_counts(run)
        if len(exits):
            ax.plot(exits.index, exits.to_numpy(), color=colour, **risk_style)
            risky = True
    if used or risky:
        labels = [s for s in registry() if s in used]
        handles = [Line2D([], [], color="0.3", ls=styles[s]) for s in labels]
        if risky:
            handles.append(Line2D([], [], color="0.3", **risk_style))
            labels.append("risk exits")
        ax.legend(handles, labels, fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no denials", transform=ax.transAxes, ha="center", va="center")
    ax.set_title("Denials by system and risk exits (cumulative)")
    ax.set_ylabel("denied orders")
    ax.grid(alpha=0.3)
    return _figure(ax)


def plot_comparison(runs: Runs, path: str | Path | None = None) -> Figure:
    """The three panels of comparison.png (equity, drawdown, denials) on one shared time axis;
    saved as PNG to `path` when given."""
    named = named_runs(runs)
    figure = Figure(figsize=(11, 11), dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.04, top=0.97, hspace=0.18)
    FigureCanvasAgg(figure)
    equity, drawdowns, denied = figure.subplots(3, 1, sharex=True, height_ratios=(2, 1.2, 1.2))
    plot_equity(named, equity)
    plot_drawdowns(named, drawdowns, legend=False)  # the equity panel's legend names the runs
    plot_denials(named, denied)
    if path is not None:
        figure.savefig(path, format="png")
    return figure
