"""Execute one backtest run (a strategy under a profile) into a run folder.

Every input is checked before anything is written. The run writes into `<out>.partial/`,
which becomes `<out>` only once every file is complete; a run whose strategy raises is kept
as `<out>.failed/` (profile, audit up to the failure, status.json) and raises `RunFailed`.
`compare` writes each of its runs with the same `open_run` / `close_run`. The folder format is
described in docs/runs.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from bt_protection.data import DEFAULT_CACHE_DIR, load_universe, parse_date
from bt_protection.errors import UserError
from bt_protection.job import RunPlan, RunResult, RunSpec, plan_job, run_job
from bt_protection.outfolder import Kind, OutputFolder, default_out, write_json
from bt_protection.profile import Profile, load_profile
from bt_protection.shipped import SAMPLE_DATA, price_folder
from bt_protection.strategies_registry import convert_params, resolve_strategy

__all__ = ["RunFailed", "RunSpec", "default_run_out", "execute_run", "plan_run"]

CSV_FLOAT = "%.10g"


class RunFailed(UserError):
    """The strategy raised during the backtest; the run folder is kept as `<out>.failed/`."""


def data_folder(spec: RunSpec) -> Path:
    """The folder the run reads: `data` (`sample` names the shipped sample unless a folder of
    that name exists), else the fetch cache for `tickers`, else the shipped sample."""
    if spec.data is not None:
        return price_folder(spec.data)
    if spec.tickers:
        if not DEFAULT_CACHE_DIR.is_dir():
            raise UserError(
                f"`tickers` without `data` reads the fetch cache {DEFAULT_CACHE_DIR}/, which "
                "does not exist; fetch the tickers first (bt-protection fetch, or "
                "bt_protection.data.fetch) or pass `data`."
            )
        return DEFAULT_CACHE_DIR
    return SAMPLE_DATA


def default_run_out(spec: RunSpec) -> Path:
    """`runs/<strategy>-<profile name>` (a strategy given as a class or spec: its class name)."""
    return default_out(Kind.RUN, spec.strategy, load_profile(spec.profile).name)


def _check_broker(spec: RunSpec) -> None:
    for name, value, low_ok in (
        ("cash", spec.cash, False),
        ("commission", spec.commission, True),
        ("slippage", spec.slippage, True),
    ):
        bound = "0 or more" if low_ok else "above 0"
        if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
            raise UserError(f"`{name}` must be {bound}, not {value:g}.")


def plan_run(spec: RunSpec, out: OutputFolder | None = None) -> RunPlan:
    """Check every input (and that `out` may be written) and load the data; raises UserError
    with one sentence, writes nothing."""
    convert_params(resolve_strategy(spec.strategy), dict(spec.params))
    load_profile(spec.profile)
    _check_broker(spec)
    start = parse_date(spec.start, "`start`") if spec.start else None
    end = parse_date(spec.end, "`end`") if spec.end else None
    if start is not None and end is not None and end < start:
        raise UserError(f"`end` {spec.end} is before `start` {spec.start}; end must come last.")
    if out is not None:
        out.check()
    return plan_job(spec, load_universe(data_folder(spec), spec.tickers, start, end))


def execute_run(spec: RunSpec, out_dir: str | Path) -> Path:
    """Run `spec` into the run folder `out_dir` and return its path.

    Raises UserError (nothing written) for bad input, RunFailed if the strategy raises.
    """
    out = Path(out_dir)
    folder = OutputFolder(out, Kind.RUN)
    plan = plan_run(spec, folder)
    audit = open_run(folder, plan.profile)
    try:
        result = run_job(spec, plan.frames, audit)
    except BaseException as error:  # KeyboardInterrupt: keep what was written, then stop
        folder.fail(RunResult.failed(error).error or "")
        raise
    if close_run(folder, result) is not None:
        raise RunFailed(
            f"run {out} failed: {result.error} (the audit up to the failure is in "
            f"{folder.failed / 'audit.jsonl'})."
        )
    return out


def open_run(folder: OutputFolder, profile: Profile) -> Path:
    """Begin the run folder: `<out>.partial/` with profile.yaml; the path of its audit."""
    partial = folder.begin()
    (partial / "profile.yaml").write_text(
        yaml.safe_dump(profile.to_dict(), sort_keys=False), encoding="utf-8"
    )
    return partial / "audit.jsonl"


def close_run(folder: OutputFolder, result: RunResult) -> str | None:
    """Finish the run folder with `result`: its files written and the folder installed, or,
    for a failed run, kept as `<out>.failed/`. Returns the error (None when complete)."""
    partial = folder.partial
    if result.audit is not None:
        (partial / "audit.jsonl").write_bytes(result.audit)
    if result.error is not None:
        folder.fail(result.error)
        return result.error
    # a completed result has all its parts
    assert result.summary is not None and result.equity is not None
    assert result.orders is not None and result.trades is not None
    csv: dict[str, Any] = {"float_format": CSV_FLOAT, "lineterminator": "\n"}
    result.orders.to_csv(partial / "orders.csv", index=False, **csv)
    result.trades.to_csv(partial / "trades.csv", index=False, **csv)
    result.equity.to_csv(partial / "equity.csv", date_format="%Y-%m-%d", **csv)
    write_json(partial / "summary.json", result.summary)
    write_json(partial / "status.json", {"status": "complete"})
    folder.install()
    return None
