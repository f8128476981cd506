"""One self-contained HTML dashboard of a grid report: tables, heatmaps and Pareto plots (PNGs
embedded as data URIs), the runs without a result with their errors, and notes. Opens offline,
from a file, with no scripts."""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from spectra.sweeps.plots import PEAK_MEMORY, STEP_TIME, Metric
from spectra.sweeps.summary import Block, CellSummary, format_value

if TYPE_CHECKING:
    from spectra.sweeps.report import Report

__all__ = ["write_dashboard"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1300px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f5f5f5}td.best{font-weight:bold;background:#e8f5e9}
td.bad{color:#b71c1c;background:#fff3f3}td.none{color:#999}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.figs figure{margin:1em 0}
.meta{color:#555}code{background:#f5f5f5;padding:.1em .3em}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto}
details{margin:.5em 0}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem)
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def _td(cell: CellSummary | None, block: Block, metric: Metric) -> str:
    text = format_value(cell, metric.key, metric.digits)
    value = cell.mean(metric.key) if cell is not None else math.nan
    best = block.best(metric.key, metric.higher_is_better)
    if not math.isnan(value) and math.isclose(value, best, rel_tol=1e-12):
        css = "best"
    elif cell is None or not cell.runs:
        css = "none"
    elif cell.problems():
        css = "bad"
    else:
        css = ""
    title = "; ".join(f"seed {r.seed}: {r.status}" + (f" ({r.error})" if r.error else "")
                      for r in (cell.runs if cell else []))
    return f'<td class="{css}" title="{html.escape(title)}">{html.escape(text)}</td>'


def _table(block: Block, metric: Metric) -> str:
    parts = []
    if block.rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.cols)
        parts.append(f"<table><thead><tr><th>sampler \\ component function</th>{head}</tr>"
                     "</thead><tbody>")
        for row in block.rows:
            cells = "".join(_td(block.cells.get((row, c)), block, metric) for c in block.cols)
            parts.append(f"<tr><th>{html.escape(row)}</th>{cells}</tr>")
        parts.append("</tbody></table>")
    if block.baselines:
        parts.append(f"<table><thead><tr><th>baseline</th><th>{html.escape(metric.label)}"
                     "</th></tr></thead><tbody>")
        for name, cell in block.baselines.items():
            parts.append(f"<tr><th>{html.escape(name)}</th>{_td(cell, block, metric)}</tr>")
        parts.append("</tbody></table>")
    return "".join(parts)


def write_dashboard(report: Report, path: Path, *, title: str = "Spectraformer grid",
                    command: str | None = None) -> Path:
    """Write the dashboard of ``report`` to ``path``."""
    col = report.collection
    counts = report.status_counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} "
           f"report</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)} report</h1>",
           f"<p class='meta'>Source <code>{html.escape(col.source)}</code> ({col.kind}); "
           f"{sum(counts.values())} runs: {html.escape(summary)}. Generated "
           f"{time.strftime('%Y-%m-%d %H:%M')}. Rows: samplers; columns: component functions "
           "(Spectraformer, arXiv 2405.15310); best of each block in bold; hover a cell for its "
           "runs.</p>"]
    for cmd in ([command] if command else col.commands):
        out.append(f"<pre>{html.escape(cmd)}</pre>")
    if len(report.blocks) > 1:
        links = " · ".join(f"<a href='#{html.escape(b.slug)}'>{html.escape(b.title)}</a>"
                           for b in report.blocks)
        out.append(f"<p>{links}</p>")
    for block in report.blocks:
        out.append(f"<h2 id='{html.escape(block.slug)}'>{html.escape(block.title)}</h2>")
        seeds = block.seeds()
        out.append(f"<p>{html.escape(report.accuracy.label)}, mean ± std over "
                   f"{len(seeds) or 1} seed(s).</p>")
        out.append(_table(block, report.accuracy))
        out.append("<details><summary>time per step and peak memory tables</summary>")
        out.append(_table(block, STEP_TIME) + _table(block, PEAK_MEMORY) + "</details>")
        out.append("<div class='figs'>")
        for png in report.figures.get(block.slug, []):
            out.append(f"<figure>{_img(png)}</figure>")
        out.append("</div>")
    bad = [r for r in col.runs if r.status != "ok"]
    if bad:
        out.append("<h2>Runs without a result</h2><table><thead><tr><th>run</th><th>seed</th>"
                   "<th>status</th><th>error</th><th>where</th></tr></thead><tbody>")
        for run in bad:
            out.append(
                f"<tr><td>{html.escape(f'{run.task} · {run.label}')}</td><td>{run.seed}</td>"
                f"<td>{html.escape(run.status)}</td><td>{html.escape(run.error or '')}</td>"
                f"<td><code>{html.escape(run.source)}</code></td></tr>")
        out.append("</tbody></table>")
    if report.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>"
                                                  for n in report.notes) + "</ul>")
    out.append("</body></html>")
    path.write_text("\n".join(out))
    return path
