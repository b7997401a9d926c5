"""One self-contained HTML page: sections of text, sortable tables and Vega-Lite charts.

Vega, Vega-Lite and Vega-Embed are inlined once per page (the bundle `vl-convert-python`
ships, so nothing is fetched at build or view time); each chart's spec, with its data, sits
in one JSON block that a short script embeds as SVG. The page sets `data-rendered` on
<body> once every chart has rendered (`"error"` if one failed), for tests and screenshots.
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # a name, never fetched


class Format(StrEnum):
    """How a table column's values read: `PERCENT`, `INTEGER`, `NUMBER` (2 decimals),
    `MONEY` (thousands separated, no decimals) or `TEXT`."""

    PERCENT = "percent"
    INTEGER = "integer"
    NUMBER = "number"
    MONEY = "money"
    TEXT = "text"


@dataclass(frozen=True)
class Text:
    """A paragraph; `text` is plain text (escaped when rendered)."""

    text: str


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class Table:
    """A table, sortable by clicking a header; `formats` by column (default: by dtype);
    `filterable` adds a box that keeps the rows containing its text."""

    frame: pd.DataFrame
    formats: Mapping[str, Format] = field(default_factory=dict)
    filterable: bool = False
    name: str = "table"


@dataclass(frozen=True)
class Chart:
    """A Vega-Lite spec (with its data inlined); `name` is the id of its container."""

    name: str
    spec: Mapping[str, Any]


Part = Text | Table | Chart


@dataclass(frozen=True)
class Section:
    title: str
    parts: tuple[Part, ...]


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script that defines `vegaEmbed` (about 0.9 MB)."""
    import vl_convert  # imported here: only pages need it, and it takes a moment

    return str(vl_convert.javascript_bundle(None))  # type: ignore[arg-type]  # None: the default


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The page as one HTML string."""
    specs: dict[str, Any] = {}
    body = []
    tables = 0
    for section in sections:
        body.append(f"<section><h2>{html.escape(section.title)}</h2>")
        for part in section.parts:
            if isinstance(part, Text):
                body.append(f"<p>{html.escape(part.text)}</p>")
            elif isinstance(part, Chart):
                specs[part.name] = {"$schema": VEGA_LITE_SCHEMA, **part.spec}
                body.append(f'<div class="chart" id="{html.escape(part.name)}"></div>')
            else:
                tables += 1
                body.append(_table(part, f"{part.name}-{tables}"))
        body.append("</section>")
    data = _script_json(specs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>{vega_bundle()}</script>
</head><body data-rendered="false">
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<main>{"".join(body)}</main>
<script type="application/json" id="report-specs">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def _script_json(value: Any) -> str:
    """JSON that cannot end its <script> element early."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("</", "<\\/")


def records(frame: pd.DataFrame, digits: int = 6) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: floats to `digits` significant digits, NaN as null."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(k): _plain(v, digits) for k, v in row.items()} for row in rows]


def _plain(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.{digits}g}")
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item(), digits)
    return value


# --------------------------------------------------------------------------- tables


def _table(table: Table, ident: str) -> str:
    frame = table.frame
    head = "".join(
        f'<th title="sort by {html.escape(str(c))}">{html.escape(str(c))}</th>'
        for c in frame.columns
    )
    formats = {c: table.formats.get(str(c)) or _default_format(frame[c]) for c in frame.columns}
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values, strict=True):
            shown, key = _cell(value, formats[column])
            numeric = formats[column] != Format.TEXT
            cls = ' class="num"' if numeric else ""
            cells.append(f'<td{cls} data-v="{html.escape(key)}">{html.escape(shown)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    search = ""
    if table.filterable:
        search = (
            f'<input class="filter" type="search" data-table="{ident}" '
            f'placeholder="filter rows (asset, status, protection, reason ...)">'
            f' <span class="count" id="{ident}-count">{len(frame)} rows</span>'
        )
    return (
        f'{search}<div class="scroll"><table class="sortable" id="{ident}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _default_format(column: pd.Series) -> Format:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return Format.TEXT
    if pd.api.types.is_integer_dtype(column):
        return Format.INTEGER
    return Format.NUMBER


def _cell(value: Any, form: Format) -> tuple[str, str]:
    """(text shown, sort key)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "", ""
    if form == Format.TEXT:
        return str(value), str(value)
    number = float(value)
    key = repr(number)
    if form == Format.PERCENT:
        return f"{number:.1%}", key
    if form in (Format.INTEGER, Format.MONEY):
        return f"{number:,.0f}", key
    return f"{number:,.2f}", key


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f3b57;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:21px}header p{margin:4px 0 0;opacity:.85}
main{padding:6px 28px 40px;max-width:1240px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:16px 0;
padding:4px 18px 14px}
h2{font-size:17px;margin:12px 0 6px;color:#1f3b57}
p{margin:6px 0;max-width:1000px}
.scroll{overflow:auto;max-height:460px;margin:6px 0}
table{border-collapse:collapse;font-size:12.5px}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{position:sticky;top:0;background:#f0f3f6;cursor:pointer;user-select:none}
th.asc::after{content:' \\25B2'}th.desc::after{content:' \\25BC'}
tr:hover td{background:#f6f9fc}
.chart{margin:8px 0}
input.filter{margin:6px 0;padding:4px 8px;width:360px}
.count{color:#666;font-size:12px}
#vg-tooltip-element td{white-space:normal;max-width:420px}
"""

SCRIPT = """
(function(){
  const specs = JSON.parse(document.getElementById('report-specs').textContent);
  const views = {};
  window.reportViews = views;
  const jobs = Object.entries(specs).map(([id, spec]) =>
    vegaEmbed('#' + id, spec, {renderer: 'svg', actions: false})
      .then(result => { views[id] = result.view; }));
  Promise.all(jobs)
    .then(() => { document.body.dataset.rendered = 'true'; })
    .catch(error => { document.body.dataset.rendered = 'error'; console.error(error); });
  document.querySelectorAll('table.sortable').forEach(table => {
    table.querySelectorAll('th').forEach((th, column) => th.addEventListener('click', () => {
      const ascending = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
      th.classList.add(ascending ? 'asc' : 'desc');
      const body = table.tBodies[0];
      const key = row => row.cells[column].dataset.v;
      const rows = Array.from(body.rows);
      const numeric = rows.every(r => key(r) === '' || !isNaN(parseFloat(key(r))));
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === '' || y === '') { return (x === '') - (y === ''); }
        const order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(r => body.appendChild(r));
    }));
  });
  document.querySelectorAll('input.filter').forEach(input => input.addEventListener('input', () => {
    const table = document.getElementById(input.dataset.table);
    const words = input.value.toLowerCase().split(/\\s+/).filter(w => w);
    let shown = 0;
    Array.from(table.tBodies[0].rows).forEach(row => {
      const text = row.textContent.toLowerCase();
      const keep = words.every(w => text.includes(w));
      row.style.display = keep ? '' : 'none';
      shown += keep;
    });
    document.getElementById(input.dataset.table + '-count').textContent = shown + ' rows';
  }));
})();
"""
