"""`report.html`: one self-contained, interactive page for a run, comparison or tune folder
(docs/report.md). `write_report(folder)` writes it; `report_html(folder)` returns it;
`inline_report(folder)` shows it in a notebook."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bt_protection.errors import UserError

REPORT_FILE = "report.html"


class FolderKind(StrEnum):
    """What `bt-protection` wrote into a folder."""

    RUN = "run"
    COMPARISON = "comparison"
    TUNE = "tune"


def folder_kind(folder: Path) -> FolderKind:
    """The kind of `folder`; UserError (one sentence) when it is none of them."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a run, comparison or tune folder.")
    if (folder / "comparison.json").is_file():
        return FolderKind.COMPARISON
    if (folder / "verdict.json").is_file() and (folder / "fingerprint.json").is_file():
        return FolderKind.TUNE
    if (folder / "summary.json").is_file() and (folder / "status.json").is_file():
        return FolderKind.RUN
    raise UserError(
        f"{folder} is not a run, comparison or tune folder: it has no summary.json (run), "
        "comparison.json (compare) or verdict.json (tune)."
    )


def report_html(folder: str | os.PathLike[str], data: str | os.PathLike[str] | None = None) -> str:
    """The report of `folder` as one HTML string. `data`: the price folder of a lone run
    (for the moves after its denials; default: the sample data)."""
    from bt_protection.report.evidence import comparison_evidence, run_evidence
    from bt_protection.report.page import render
    from bt_protection.report.sections import report_sections
    from bt_protection.report.tune import tune_sections, tune_title

    path = Path(folder)
    kind = folder_kind(path)
    if kind is FolderKind.TUNE:
        title, subtitle = tune_title(path)
        return render(title, subtitle, tune_sections(path))
    if kind is FolderKind.COMPARISON:
        evidence = comparison_evidence(path)
        manifest = json.loads((path / "comparison.json").read_text(encoding="utf-8"))
        title = f"Comparison: {manifest.get('strategy')} under {len(evidence.runs)} profiles"
    else:
        evidence = run_evidence(path, data)
        title = f"Run: {next(iter(evidence.runs))}"
        manifest = next(iter(evidence.runs.values())).summary["fingerprint"]
    subtitle = (
        f"{' '.join(manifest.get('data') or [])}, {manifest.get('start')} to "
        f"{manifest.get('end')}; cash {manifest.get('cash'):,.0f}, commission "
        f"{manifest.get('commission')}, slippage {manifest.get('slippage')}; bt-protection "
        f"{manifest.get('package_version')}."
    )
    return render(title, subtitle, report_sections(evidence, kind is FolderKind.RUN))


def write_report(
    folder: str | os.PathLike[str], data: str | os.PathLike[str] | None = None
) -> Path:
    """Write `folder/report.html` and return its path (nothing is written for bad input)."""
    text = report_html(folder, data)
    path = Path(folder) / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class InlineReport:
    """A report that a notebook shows inline: the page in an iframe of its own (its scripts
    and styles stay apart from the notebook's)."""

    page: str
    height: int = 900

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.page, quote=True)}" '
            f'style="width:100%;height:{self.height}px;border:1px solid #ddd"></iframe>'
        )


def inline_report(
    folder: str | os.PathLike[str], data: str | os.PathLike[str] | None = None
) -> InlineReport:
    """The report of `folder`, for a notebook cell to show (the last expression of a cell)."""
    return InlineReport(report_html(folder, data))
