"""The cross-task LRA table of the Spectraformer paper (arXiv 2405.15310): one row per component
function × weight-matrix sampler (then the baselines), one column per LRA task -- ListOps (L),
Text (T), Retrieval (R), Image (I), Pathfinder (P) -- and their average.

Built from the per-task :class:`~spectra.sweeps.summary.Block` s of a report (one block per task
and m); cells are the blocks' own texts (mean ± std over seeds, failures counted), the best of
each column in bold. The five LRA columns are always shown (``–`` where a task has no runs);
other tasks (e.g. the ``imdb_retrieval`` substitute) get a column of their own after them and
never enter the average. ``avg`` is the mean over the LRA columns that have a value, with
``(k/5)`` when not all five do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["LRA_COLUMNS", "lra_markdown", "lra_rows"]

#: (task name, column header) in the paper's order.
LRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("lra_listops", "ListOps (L)"),
    ("lra_text", "Text (T)"),
    ("lra_retrieval", "Retrieval (R)"),
    ("lra_image", "Image (I)"),
    ("lra_pathfinder", "Pathfinder (P)"),
)
_SUBSTITUTES = {"imdb_retrieval": "imdb_retrieval (substitute, not R)"}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _design(block: Any, label: str) -> tuple[str | None, str | None]:
    row = block.cells.loc[label]
    sampler, fmap = row.get("sampler"), row.get("feature_map")
    return (None if _is_missing(sampler) else str(sampler),
            None if _is_missing(fmap) else str(fmap))


def _groups(blocks: Sequence[Any]) -> dict[int | None, dict[str, Any]]:
    """Blocks by m, then task; a task without random-feature runs (m None) joins every m."""
    by_m: dict[int | None, dict[str, Any]] = {}
    for block in blocks:
        if block.num_features is not None:
            by_m.setdefault(block.num_features, {})[block.task] = block
    for block in blocks:
        if block.num_features is None:
            for group in by_m.values() or [by_m.setdefault(None, {})]:
                group.setdefault(block.task, block)
    return by_m


def lra_rows(blocks: Sequence[Any], metric: Any) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` per m: the header is ``component function, sampler, <task
    columns…>, avg``; rows are texts (best of a column in ``**bold**``)."""
    out = []
    for m, tasks in sorted(_groups(blocks).items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        extra = sorted(t for t in tasks if t not in dict(LRA_COLUMNS))
        columns = [*LRA_COLUMNS, *((t, _SUBSTITUTES.get(t, t)) for t in extra)]
        designs: dict[tuple[str | None, str | None, str], None] = {}
        for task, _ in columns:
            block = tasks.get(task)
            if block is None:
                continue
            for label in block.cells.index:
                sampler, fmap = _design(block, label)
                designs[(fmap, sampler, label)] = None
        rf = sorted((d for d in designs if d[1] is not None), key=lambda d: (d[0], d[1]))
        baselines = sorted(d for d in designs if d[1] is None)
        rows = []
        for fmap, sampler, label in [*rf, *baselines]:
            cells, values = [], []
            for task, _ in columns:
                block = tasks.get(task)
                if block is None or label not in block.cells.index:
                    cells.append("–")
                    if task in dict(LRA_COLUMNS):
                        values.append(math.nan)
                    continue
                text = block.text(label, metric)
                cells.append(f"**{text}**" if block.is_best(label, metric) else text)
                if task in dict(LRA_COLUMNS):
                    values.append(block.mean(label, metric.key))
            known = [v for v in values if not math.isnan(v)]
            if known:
                avg = f"{sum(known) / len(known):.{metric.digits}f}"
                if len(known) < len(LRA_COLUMNS):
                    avg += f" ({len(known)}/{len(LRA_COLUMNS)})"
            else:
                avg = "–"
            name = fmap if sampler is not None else label
            rows.append([str(name), sampler or "", *cells, avg])
        title = "LRA, all tasks" + (f", m = {m}" if m is not None else "")
        header = ["component function", "sampler", *(h for _, h in columns), "avg"]
        out.append((title, header, rows))
    return out


def lra_markdown(blocks: Sequence[Any], metric: Any) -> str:
    """The tables of :func:`lra_rows` as markdown (one per m), each under a ``###`` title."""
    parts = []
    for title, header, rows in lra_rows(blocks, metric):
        table = pd.DataFrame(rows, columns=header).to_markdown(index=False, stralign="right")
        parts.append(f"### {title}\n\n{table}")
    return "\n\n".join(parts)
