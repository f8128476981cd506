"""One self-contained HTML dashboard of a grid report: tables, heatmaps and Pareto plots (PNGs
embedded as data URIs), the runs without a result with their errors, and notes. Opens offline,
from a file, with no scripts."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from spectra.sweeps.summary import PEAK_MEMORY, STEP_TIME, Block, Metric

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
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _css(block: Block, label: str | None, metric: Metric) -> str:
    if block.is_best(label, metric):
        return "best"
    return "none" if label is None else "bad" if block.problems(label) else ""


def _table(block: Block, metric: Metric) -> str:
    """The block's grid and baselines as pandas Styler tables, best, failed and empty cells
    classed for the CSS."""
    labels = (pd.DataFrame([[block.cell(r, c) for c in block.cols] for r in block.rows],
                           index=block.rows, columns=block.cols),
              pd.DataFrame({0: block.baselines}, index=block.baselines))
    parts = []
    for table, cells in zip(block.table(metric), labels):
        if table.empty:
            continue
        cells.columns = table.columns
        classes = cells.map(lambda label: _css(block, label, metric))
        parts.append(table.style.format(escape="html").set_td_classes(classes).to_html())
    return "".join(parts)


def write_dashboard(path: Path, *, blocks: Sequence[Block], runs: pd.DataFrame, accuracy: Metric,
                    figures: Mapping[str, Sequence[Path]], notes: Sequence[str], source: str,
                    kind: str, commands: Sequence[str], title: str = "Spectraformer grid") -> Path:
    """Write the dashboard of a report to ``path``."""
    counts = runs["status"].value_counts().sort_index()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} "
           f"report</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)} report</h1>",
           f"<p class='meta'>Source <code>{html.escape(source)}</code> ({kind}); "
           f"{len(runs)} runs: {html.escape(summary)}. Generated "
           f"{time.strftime('%Y-%m-%d %H:%M')}. Rows: samplers; columns: component functions "
           "(Spectraformer, arXiv 2405.15310); best of each block in bold.</p>"]
    out += [f"<pre>{html.escape(cmd)}</pre>" for cmd in commands]
    if len(blocks) > 1:
        out.append("<p>" + " · ".join(f"<a href='#{html.escape(b.slug)}'>{html.escape(b.title)}"
                                      "</a>" for b in blocks) + "</p>")
    for block in blocks:
        out += [f"<h2 id='{html.escape(block.slug)}'>{html.escape(block.title)}</h2>",
                f"<p>{html.escape(accuracy.label)}, mean ± std over "
                f"{len(block.seeds()) or 1} seed(s).</p>", _table(block, accuracy),
                "<details><summary>time per step and peak memory tables</summary>",
                _table(block, STEP_TIME) + _table(block, PEAK_MEMORY) + "</details>",
                "<div class='figs'>",
                *(f"<figure>{_img(png)}</figure>" for png in figures.get(block.slug, [])),
                "</div>"]
    bad = runs[runs["status"] != "ok"]
    if not bad.empty:
        table = bad.assign(run=bad["task"].astype(str) + " · " + bad["label"].astype(str))
        out += ["<h2>Runs without a result</h2>",
                table[["run", "seed", "status", "error", "source"]].to_html(index=False,
                                                                          na_rep="")]
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                   + "</ul>")
    out.append("</body></html>")
    path.write_text("\n".join(out))
    return path
