"""Open a report.html in headless Chromium (Debian's `chromium`, driven by Playwright, which
downloads no browser here) and say what a person would see: console errors, requests, the
size of every chart, and the tooltip of a hovered denial."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = (
    "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
    if CHROMIUM is None
    else None
)


@dataclass
class Seen:
    """What the page did: `rendered` (the page's own flag), console errors and page errors,
    every requested URL, each chart's (width, height) by id, the denial tooltip's text."""

    rendered: str = ""
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: dict[str, tuple[float, float]] = field(default_factory=dict)
    tooltip: str = ""
    filtered_rows: int | None = None
    sorted_rows: list[str] = field(default_factory=list)


def look(
    report: Path, screenshot: Path, hover: bool = True, filter_text: str = "", sort_by: str = ""
) -> Seen:
    """Load `report` from file://, wait for its charts, hover the first denial (when the page
    has a denial chart), type `filter_text` into the last row filter, click the summary
    table's `sort_by` header (its first column after, in `sorted_rows`), save a full-page
    screenshot."""
    from playwright.sync_api import sync_playwright

    seen = Seen()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on("request", lambda r: seen.requests.append(r.url))
            page.goto(report.resolve().as_uri())
            page.wait_for_function("document.body.dataset.rendered !== 'false'", timeout=60_000)
            seen.rendered = page.evaluate("document.body.dataset.rendered")
            for chart in page.query_selector_all("div.chart"):
                box = chart.query_selector("svg")
                size = box.bounding_box() if box else None
                seen.charts[chart.get_attribute("id") or "?"] = (
                    (size["width"], size["height"]) if size else (0.0, 0.0)
                )
            if hover and page.query_selector("#chart-denials"):
                page.hover("#chart-denials g.mark-symbol.role-mark path >> nth=0")
                page.wait_for_selector("#vg-tooltip-element.visible", timeout=5_000)
                seen.tooltip = page.inner_text("#vg-tooltip-element")
                page.mouse.move(0, 0)
            if filter_text:
                page.fill("input.filter >> nth=-1", filter_text)
                seen.filtered_rows = page.evaluate(SHOWN_ROWS)
            if sort_by:
                page.click(f"table.sortable >> nth=0 >> th:text-is('{sort_by}')")
                seen.sorted_rows = page.locator(
                    "table.sortable >> nth=0 >> tbody tr td:first-child"
                ).all_inner_texts()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


# the rows the last filtered table still shows
SHOWN_ROWS = """(() => {
  const input = Array.from(document.querySelectorAll('input.filter')).at(-1);
  const table = document.getElementById(input.dataset.table);
  return Array.from(table.tBodies[0].rows).filter(r => r.style.display !== 'none').length;
})()"""
