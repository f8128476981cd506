"""Figures of a grid report (matplotlib, object-oriented API, no pyplot state): a heatmap per
metric (rows samplers, columns component functions, the baselines in a strip beside it) and a
Pareto plot of accuracy against time per step.

Failed cells are drawn hatched with the word ``failed`` (never as a zero); cells without runs are
left blank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from spectra.sweeps.summary import Block, Metric

__all__ = ["heatmap", "pareto"]

_BLANK = "#f2f2f2"


def _draw_grid(ax, block: Block, cells: list[list[str | None]], metric: Metric, norm: Normalize,
               height: int | None = None) -> None:
    cmap = colormaps[metric.cmap]
    n_rows, n_cols = len(cells), len(cells[0]) if cells else 0
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            value = block.mean(cell, metric.key)
            if math.isnan(value):
                hatch = "//" if cell is not None else None
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_BLANK,
                                       edgecolor="#bbbbbb", hatch=hatch, linewidth=0.5))
                color = "#444444"
            else:
                rgba = cmap(norm(value))
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=rgba,
                                       edgecolor="white", linewidth=0.5))
                luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                color = "black" if luminance > 0.55 else "white"
            is_best = block.is_best(cell, metric)
            text = "" if cell is None else block.text(cell, metric, sep="\n").replace(", ", "\n")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color=color, fontweight="bold" if is_best else "normal")
            if is_best:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                       edgecolor="red", linewidth=1.5))
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(max(n_rows, height or 0) - 0.5, -0.5)
    ax.set_aspect("auto")


def heatmap(block: Block, metric: Metric, path: str | Path) -> Path:
    """Heatmap of ``metric`` over samplers × component functions (+ a baseline strip)."""
    grid = [[block.cell(r, c) for c in block.cols] for r in block.rows]
    baselines = [[label] for label in block.baselines]
    finite = block.cells[f"{metric.key}_mean"].dropna()
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    norm = Normalize(vmin=lo, vmax=hi)

    n_rows = max(len(block.rows), len(baselines), 1)
    width = 2.2 + 0.95 * max(len(block.cols), 1) + (1.6 if baselines else 0.0)
    fig = Figure(figsize=(width, 1.3 + 0.5 * n_rows), layout="constrained")
    ratios = [max(len(block.cols), 1)] + ([1.2] if baselines else []) + [0.25]
    axes = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    ax_grid, cax = axes[0], axes[-1]
    if block.rows:
        _draw_grid(ax_grid, block, grid, metric, norm)
        ax_grid.set_xticks(range(len(block.cols)), block.cols, rotation=35, ha="right")
        ax_grid.set_yticks(range(len(block.rows)), block.rows)
        ax_grid.set_xlabel("component function")
        ax_grid.set_ylabel("sampler")
    else:
        ax_grid.set_axis_off()
    if baselines:
        ax_base = axes[1]
        _draw_grid(ax_base, block, baselines, metric, norm, height=n_rows)
        for side in ("top", "right", "bottom", "left"):
            ax_base.spines[side].set_visible(False)
        ax_base.set_xticks([0], ["baseline"])
        ax_base.set_yticks(range(len(baselines)), block.baselines)
        ax_base.yaxis.tick_right()
    mappable = colormaps[metric.cmap]
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=mappable), cax=cax, label=metric.label)
    arrow = "higher is better" if metric.higher_is_better else "lower is better"
    seeds = block.seeds()
    fig.suptitle(f"{block.title}: {metric.title.lower()} ({arrow}; mean over "
                 f"{len(seeds) or 1} seed{'s' if len(seeds) != 1 else ''}, best boxed)",
                 fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "*", "p"]


def _palette(n: int) -> list[tuple[float, ...]]:
    """``n`` distinct colours, grey left out (it is the marker legend's colour)."""
    tab10 = colormaps["tab10"]
    dark2 = colormaps["Dark2"]
    colors = [tab10(i) for i in range(10) if i != 7] + [dark2(i) for i in range(8)]
    return [colors[i % len(colors)] for i in range(n)]


def _frontier(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Pareto-optimal points: no other point is at least as fast and at least as accurate and
    strictly better in one of the two."""
    out = []
    for x, y, label in points:
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2, _ in points
        )
        if not dominated:
            out.append((x, y, label))
    return sorted(out)


def pareto(block: Block, accuracy: Metric, time: Metric, path: str | Path) -> Path:
    """Accuracy against time per step, one point per cell (error bars: std over seeds), the
    Pareto frontier drawn and labelled."""
    fig = Figure(figsize=(8.0, 5.4), layout="constrained")
    ax = fig.subplots()
    samplers = block.rows
    colors = _palette(len(samplers))
    maps = block.cols
    points: list[tuple[float, float, str]] = []
    for label, (sampler, fmap) in block.cells[["sampler", "feature_map"]].dropna().iterrows():
        x, y = block.mean(label, time.key), block.mean(label, accuracy.key)
        if math.isnan(x) or math.isnan(y):
            continue
        ax.errorbar(x, y, xerr=_nan0(block.std(label, time.key)),
                    yerr=_nan0(block.std(label, accuracy.key)),
                    fmt=_MARKERS[maps.index(fmap) % len(_MARKERS)],
                    color=colors[samplers.index(sampler)], markersize=6, alpha=0.85,
                    elinewidth=0.6, capsize=0)
        points.append((x, y, label))
    for k, name in enumerate(block.baselines):
        x, y = block.mean(name, time.key), block.mean(name, accuracy.key)
        if math.isnan(x) or math.isnan(y):
            continue
        ax.errorbar(x, y, xerr=_nan0(block.std(name, time.key)),
                    yerr=_nan0(block.std(name, accuracy.key)),
                    fmt="*" if k == 0 else "p", color="black", markersize=11, elinewidth=0.6,
                    label=f"{name} (baseline)")
        points.append((x, y, name))
    front = _frontier(points)
    if front:
        xs, ys = [p[0] for p in front], [p[1] for p in front]
        ax.step(xs, ys, where="post", color="red", linewidth=1, alpha=0.6,
                label="Pareto frontier")
        for x, y, label in front:
            ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color="darkred")
    # legends: colour = sampler, marker = component function
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[i], marker="o", linestyle="", label=s)
               for i, s in enumerate(samplers)]
    handles += [Line2D([], [], color="grey", marker=_MARKERS[i % len(_MARKERS)], linestyle="",
                       markerfacecolor="none", label=f) for i, f in enumerate(maps)]
    extra, extra_labels = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, *extra], labels=[*samplers, *maps, *extra_labels],
              fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title="sampler (colour) / map (marker)", title_fontsize=7)
    ax.set_xlabel(time.label + " — lower is better")
    ax.set_ylabel(accuracy.label + " — higher is better")
    ax.grid(True, alpha=0.3)
    failed = int(block.cells[f"{accuracy.key}_mean"].isna().sum())
    note = f" ({failed} cell{'s' if failed != 1 else ''} without a result not shown)" if failed \
        else ""
    ax.set_title(f"{block.title}: accuracy vs time per step{note}", fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


def _nan0(value: float) -> float:
    return 0.0 if math.isnan(value) else value
