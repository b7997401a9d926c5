"""The tune's outputs: folds, trials and out-of-sample tables, the verdict, the report, the
figure and the recommended profile (files listed in docs/tune.md), and `WalkForward`, the
object `walk_forward` returns for notebooks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bt_protection.compare import markdown_table
from bt_protection.errors import UserError
from bt_protection.metrics import performance
from bt_protection.outfolder import write_json
from bt_protection.plots import DPI, _axes
from bt_protection.profile import Profile
from bt_protection.runner import CSV_FLOAT
from bt_protection.runs import SUMMARY_COLUMNS
from bt_protection.tune.folds import Fold
from bt_protection.tune.search import (
    Search,
    candidate_values,
    profile_of,
    recommended_profile,
    train_objective,
)
from bt_protection.tune.stats import deflated_sharpe, paired_bootstrap, sharpe, stability
from bt_protection.tune.trials import trial_key

ARMS = ("tuned", "base", "off")
FOLD_METRICS = ("sharpe", "cagr", "total_return", "max_drawdown", "turnover")
TRIAL_METRICS = (*SUMMARY_COLUMNS[:7], "orders_denied")  # total_return ... trades
Results = dict[str, dict[str, Any]]
Chosen = dict[int, int | None]


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class WalkForward:
    """A finished tune: its folder, the tables of folds.csv, trials.csv and oos_equity.csv,
    verdict.json and the recommended profile; `plot_*` draw the figure's panels."""

    path: Path
    folds: pd.DataFrame
    trials: pd.DataFrame
    oos_equity: pd.DataFrame
    verdict: dict[str, Any]
    recommended: Profile
    parameters: tuple[str, ...]

    @property
    def sentence(self) -> str:
        return str(self.verdict["verdict"])

    def equity(self) -> pd.DataFrame:
        """The stitched out-of-sample equity, one column per arm."""
        wide = self.oos_equity.pivot(index="date", columns="arm", values="value")
        return wide[list(ARMS)]

    def plot_equity(self, ax: Axes | None = None) -> Figure:
        """Stitched out-of-sample equity of the three arms, test windows split by lines."""
        ax = _axes(ax)
        wide = self.equity()
        wide.index = pd.to_datetime(wide.index)
        for arm in ARMS:
            ax.plot(wide.index, wide[arm], label=arm, linewidth=1.2)
        for start in self.folds["test_start"]:
            # matplotlib converts dates itself; its stubs only know floats
            ax.axvline(pd.Timestamp(start), color="grey", linestyle=":", linewidth=0.8)  # type: ignore[arg-type]
        ax.set_ylabel("out-of-sample value")
        ax.set_title(self.sentence, fontsize=9, wrap=True)
        ax.legend(loc="upper left", fontsize=8)
        return cast(Figure, ax.figure)

    def plot_parameters(self, ax: Axes | None = None) -> Figure:
        """The parameters chosen in each fold, as a table."""
        ax = _axes(ax, (11, 1 + 0.3 * len(self.folds)))
        columns = ["test window", "chosen", *self.parameters]
        cells = [
            [f"{row.test_start} to {row.test_end}", row.chosen, *(row[k] for k in self.parameters)]
            for _, row in self.folds.iterrows()
        ]
        ax.axis("off")
        table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        return cast(Figure, ax.figure)

    def figure(self) -> Figure:
        """Both panels in one figure (what tune.png shows)."""
        figure = Figure(figsize=(11, 6.5 + 0.25 * len(self.folds)), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, height_ratios=(3, 1 + 0.15 * len(self.folds)))
        self.plot_equity(top)
        self.plot_parameters(bottom)
        return figure


def write_outputs(
    search: Search,
    results: Results,
    chosen: Chosen,
    folder: Path,
    timing: dict[str, Any] | None = None,
) -> WalkForward:
    """Write every output file into `folder` and return the tune's `WalkForward`; `timing`:
    the timing permutation test (`bt_protection.tune.timing`), None when not run."""
    trials = trials_table(search, results, chosen)
    folds = folds_table(search, results, chosen)
    equity = stitched_equity(search, results, chosen)
    ranks = mean_ranks(search, results)
    recommended = recommended_profile(search, ranks)
    verdict = build_verdict(search, results, chosen, folds, equity, ranks, recommended)
    verdict["timing_permutation"] = timing
    csv: dict[str, Any] = {"float_format": CSV_FLOAT, "lineterminator": "\n", "index": False}
    folds.to_csv(folder / "folds.csv", **csv)
    trials.to_csv(folder / "trials.csv", **csv)
    equity.to_csv(folder / "oos_equity.csv", **csv)
    write_json(folder / "verdict.json", verdict)
    header = f"# {recommended.description}\n# Check it with: bt-protection validate FILE\n"
    text = yaml.safe_dump(recommended.to_dict(), sort_keys=False)
    (folder / "recommended.yaml").write_text(header + text, encoding="utf-8")
    verdict = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
    walk = WalkForward(folder, folds, trials, equity, verdict, recommended, search.space.keys)
    (folder / "report.md").write_text(report(walk, search), encoding="utf-8")
    walk.figure().savefig(folder / "tune.png", format="png")
    return walk


# --------------------------------------------------------------------------- tables


def _cell(value: Any) -> Any:
    """A parameter value for a CSV cell: text as is, other values as JSON (true, [a, b])."""
    return value if isinstance(value, str) else json.dumps(value)


def _result(
    search: Search, results: Results, fold: Fold, phase: str, profile: Profile
) -> dict[str, Any]:
    window = fold.train if phase == "train" else fold.test
    return results[trial_key(search.identity, window, profile.hash, phase)]


def _arm_profile(search: Search, chosen: Chosen, fold: Fold, arm: str) -> Profile:
    if arm == "tuned":
        return profile_of(search, chosen[fold.index])
    return search.base if arm == "base" else search.off


def _test_metrics(
    search: Search, results: Results, chosen: Chosen, fold: Fold, arm: str
) -> dict[str, Any]:
    """The arm's result on the fold's test window; a failed test run stops the tune."""
    result = _result(search, results, fold, "test", _arm_profile(search, chosen, fold, arm))
    if result["error"] is not None:
        raise UserError(
            f"fold {fold.index}: the {arm} run on the test window {fold.test.first} to "
            f"{fold.test.last} failed: {result['error']}"
        )
    return result


def trials_table(search: Search, results: Results, chosen: Chosen) -> pd.DataFrame:
    """trials.csv: one row per candidate and fold with its train metrics or its error."""
    rows = []
    for fold in search.folds:
        for i in search.tried(results, fold):
            profile = search.profiles[i]
            result = _result(search, results, fold, "train", profile)
            metrics = result["metrics"] or {}
            rows.append(
                {
                    "fold": fold.index,
                    "candidate": f"c{i}",
                    **{k: _cell(v) for k, v in search.candidates[i].items()},
                    **{m: metrics.get(m) for m in TRIAL_METRICS},
                    "objective": train_objective(search, results, fold, profile),
                    "chosen": chosen[fold.index] == i,
                    "error": result["error"] or "",
                }
            )
    return pd.DataFrame(rows)


def folds_table(search: Search, results: Results, chosen: Chosen) -> pd.DataFrame:
    """folds.csv: dates, the chosen candidate and its values, train and test metrics per arm."""
    rows = []
    for fold in search.folds:
        pick = chosen[fold.index]
        row: dict[str, Any] = {
            "fold": fold.index,
            "train_start": fold.train.first,
            "train_end": fold.train.last,
            "test_start": fold.test.first,
            "test_end": fold.test.last,
            "chosen": "base" if pick is None else f"c{pick}",
            **{k: _cell(v) for k, v in candidate_values(search, pick).items()},
        }
        for phase in ("train", "test"):
            for arm in ARMS:
                profile = _arm_profile(search, chosen, fold, arm)
                if phase == "test":
                    metrics = _test_metrics(search, results, chosen, fold, arm)["metrics"]
                else:
                    metrics = _result(search, results, fold, phase, profile)["metrics"] or {}
                row |= {f"{phase}_{arm}_{m}": metrics.get(m) for m in FOLD_METRICS}
        rows.append(row)
    return pd.DataFrame(rows)


def stitched_equity(search: Search, results: Results, chosen: Chosen) -> pd.DataFrame:
    """oos_equity.csv: each arm's test windows chained into one curve (date, arm, value).

    Each window starts from the cash; its values are scaled so that it starts where the
    previous window ended, so the curve's daily returns are the windows' own."""
    cash = search.broker[0]
    rows: list[tuple[str, str, float]] = []
    for arm in ARMS:
        level = cash
        for fold in search.folds:
            series = _test_metrics(search, results, chosen, fold, arm)["equity"]
            scale = level / series[0][1]
            rows.extend((day, arm, value * scale) for day, value in series)
            level = series[-1][1] * scale
    return pd.DataFrame(rows, columns=["date", "arm", "value"])


def mean_ranks(search: Search, results: Results) -> dict[int, float]:
    """The mean rank (1 = best) by the train objective over the folds of each candidate tried
    in at least one fold; failed, undefined or (tpe) untried candidates rank last."""
    tried = {fold.index: search.tried(results, fold) for fold in search.folds}
    eligible = sorted({i for indices in tried.values() for i in indices})
    total = dict.fromkeys(eligible, 0.0)
    for fold in search.folds:
        values = {
            i: train_objective(search, results, fold, search.profiles[i]) for i in tried[fold.index]
        }
        order = sorted(values, key=lambda i: (values[i] is None, -(values[i] or 0), i))
        rank = {i: r for r, i in enumerate(order, start=1)}
        for i in eligible:
            total[i] += rank.get(i, len(order) + 1)
    return {i: total[i] / len(search.folds) for i in eligible}


# --------------------------------------------------------------------------- verdict


def daily_returns(equity: pd.DataFrame, arm: str) -> np.ndarray:
    """The arm's daily returns on its stitched out-of-sample curve (oos_equity.csv)."""
    values = equity.loc[equity["arm"] == arm, "value"].to_numpy(dtype=float)
    return np.asarray(values[1:] / values[:-1] - 1)


def _arm_metrics(equity: pd.DataFrame, folds: pd.DataFrame, arm: str) -> dict[str, Any]:
    """Out-of-sample figures of the stitched curve; turnover is the day-weighted mean of the
    test windows' turnover."""
    curve = equity.loc[equity["arm"] == arm, ["value"]].reset_index(drop=True)
    nothing = pd.DataFrame(columns=["filled", "price", "commission"])
    metrics = performance(curve, nothing, pd.DataFrame())
    del metrics["trades"], metrics["commissions"]
    turnover = folds[f"test_{arm}_turnover"].astype(float)
    metrics["turnover"] = float(turnover.mean()) if turnover.notna().all() else None
    return metrics


def build_verdict(
    search: Search,
    results: Results,
    chosen: Chosen,
    folds: pd.DataFrame,
    equity: pd.DataFrame,
    ranks: dict[int, float],
    recommended: Profile,
) -> dict[str, Any]:
    """verdict.json: the arms' out-of-sample figures, the bootstraps, the deflated Sharpe
    ratio, the stability of the choices and the verdict sentence."""
    returns = {arm: daily_returns(equity, arm) for arm in ARMS}
    seed = search.settings.seed
    boot = {
        f"{arm}_vs_off": paired_bootstrap(returns[arm], returns["off"], sharpe, seed=seed)
        for arm in ("tuned", "base")
    }
    won = {
        f"{arm}_vs_off": int(
            (
                folds[f"test_{arm}_sharpe"].astype(float) > folds["test_off_sharpe"].astype(float)
            ).sum()
        )
        for arm in ("tuned", "base")
    }
    variances = []
    tried = {fold.index: search.tried(results, fold) for fold in search.folds}
    for fold in search.folds:
        values = [
            _train_sharpe(search, results, fold, search.profiles[i]) for i in tried[fold.index]
        ]
        values = [v for v in values if v is not None]
        if len(values) > 1:
            variances.append(float(np.var(np.array(values) / np.sqrt(252), ddof=1)))
    dsr = deflated_sharpe(
        returns["tuned"],
        max(len(indices) for indices in tried.values()),
        float(np.mean(variances)) if variances else 0.0,
    )
    best = min(ranks, key=lambda i: (ranks[i], i))
    failed = sum(
        1
        for fold in search.folds
        for i in tried[fold.index]
        if _result(search, results, fold, "train", search.profiles[i])["error"] is not None
    )
    verdict = {
        "strategy": search.identity["strategy"],
        "objective": search.settings.goal.value,
        "sampler": search.settings.sampler,
        "folds": len(search.folds),
        "candidates": len(search.candidates),
        "train_trials": sum(len(indices) for indices in tried.values()),
        "failed_trials": failed,
        "arms": {arm: _arm_metrics(equity, folds, arm) for arm in ARMS},
        "bootstrap": {name: result.to_dict() for name, result in boot.items()},
        "folds_won": won,
        "deflated_sharpe": dsr,
        "stability": stability([candidate_values(search, chosen[f.index]) for f in search.folds]),
        "recommended": {
            "profile": recommended.name,
            "candidate": f"c{best}",
            "mean_rank": ranks[best],
            "values": search.candidates[best],
        },
    }
    verdict["verdict"] = sentence(len(search.folds), won["tuned_vs_off"], boot["tuned_vs_off"], dsr)
    return verdict


def _train_sharpe(search: Search, results: Results, fold: Fold, profile: Profile) -> float | None:
    metrics = _result(search, results, fold, "train", profile)["metrics"]
    return None if metrics is None else metrics.get("sharpe")


def sentence(folds: int, won: int, boot: Any, dsr: dict[str, Any]) -> str:
    """`over 6 folds tuned protection beat off out of sample in 4; Sharpe +0.12 (90% CI -0.05
    to +0.30); not significant; deflated Sharpe 0.41 for 8 trials`."""
    low, high = boot.ci
    if low > 0:
        significance = "significant"
    elif high < 0:
        significance = "significantly worse"
    else:
        significance = "not significant"
    deflated = dsr["deflated_sharpe"]
    deflated_text = "undefined" if deflated is None or np.isnan(deflated) else f"{deflated:.2f}"
    return (
        f"over {folds} folds tuned protection beat off out of sample in {won}; Sharpe "
        f"{boot.estimate:+.2f} ({boot.confidence:.0%} CI {low:+.2f} to {high:+.2f}); "
        f"{significance}; deflated Sharpe {deflated_text} for {dsr['trials']} trials"
    )


# --------------------------------------------------------------------------- report


def report(walk: WalkForward, search: Search) -> str:
    """report.md: the verdict, the arms, the bootstraps, the folds and the recommendation."""
    v = walk.verdict
    arms = pd.DataFrame(v["arms"]).T
    arms.index.name = "arm"
    boot = pd.DataFrame.from_dict(
        {
            name: {
                "Sharpe difference": b["estimate"],
                "CI low": b["ci"][0],
                "CI high": b["ci"][1],
                "P(difference > 0)": b["p_positive"],
                "folds won": v["folds_won"][name],
            }
            for name, b in v["bootstrap"].items()
        },
        orient="index",
    )
    boot.index.name = "comparison"
    shown = ["fold", "test_start", "test_end", "chosen", *walk.parameters]
    shown += [f"test_{arm}_sharpe" for arm in ARMS]
    dsr = v["deflated_sharpe"]
    rec = v["recommended"]
    stab = v["stability"]
    lines = [
        f"# Walk-forward tune of {search.strategy_class.__name__}",
        "",
        f"**Verdict:** {v['verdict']}.",
        "",
        f"{v['folds']} folds, {v['train_trials']} train trials of {v['candidates']} candidates "
        f"({v['sampler']} sampler), objective "
        f"`{v['objective']}`, {v['failed_trials']} failed trials. Base profile: "
        f"`{search.base.name}`.",
        "",
        "## Out of sample (stitched test windows)",
        "",
        markdown_table(arms),
        "## Paired stationary block bootstrap of daily returns",
        "",
        f"Expected block length {v['bootstrap']['tuned_vs_off']['block_days']:g} days, "
        f"{v['bootstrap']['tuned_vs_off']['resamples']} resamples, "
        f"{v['bootstrap']['tuned_vs_off']['confidence']:.0%} intervals.",
        "",
        markdown_table(boot),
        "## Deflated Sharpe ratio",
        "",
        f"Tuned Sharpe {_fmt(dsr['sharpe_annual'])} over {dsr['days']} days against "
        f"{_fmt(dsr['expected_max_sharpe_annual'])}, the best Sharpe expected from "
        f"{dsr['trials']} worthless trials: deflated Sharpe ratio "
        f"{_fmt(dsr['deflated_sharpe'])} (the probability that the true Sharpe is above that).",
        "",
        "## Timing permutation test",
        "",
        _timing(v.get("timing_permutation")),
        "",
        "## Folds",
        "",
        markdown_table(walk.folds[shown].set_index("fold")),
        f"Parameter stability: {_fmt(stab['overall'])} (mean share of folds choosing each "
        "parameter's most frequent value).",
        "",
        "## Recommended profile",
        "",
        f"`recommended.yaml` ({rec['profile']}): candidate {rec['candidate']}, the best mean "
        f"rank by `{v['objective']}` over all train windows (mean rank "
        f"{_fmt(rec['mean_rank'])} of {v['candidates']}); values: "
        + ", ".join(f"`{k}` = {_cell(x)}" for k, x in rec["values"].items())
        + ".",
        "",
        "![out-of-sample equity](tune.png)",
        "",
    ]
    return "\n".join(lines)


def _timing(timing: dict[str, Any] | None) -> str:
    if timing is None:
        return "Not run (`timing_shifts` 0)."
    return (
        f"{timing['sentence'][0].upper()}{timing['sentence'][1:]}. The statistic is the "
        "Sharpe ratio of the tuned arm's stitched out-of-sample curve; each shift re-runs every "
        "fold's tuned profile on its test window with the regime labels and volatility ratios "
        "it followed rotated in time (docs/tune.md)."
    )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"
