"""Aggregate runs into the Spectraformer paper's layout (arXiv 2405.15310, Table 2): one block per
task (and per m when several are mixed), rows = samplers, columns = component functions, each
cell the mean ± sample standard deviation over seeds; baselines (softmax, Skyformer …) beside.

Failed runs are counted per cell, never averaged in (not as zero, not silently dropped): a cell
whose runs all failed shows ``failed``; one with some failed runs shows the mean of the others and
the count of failures.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from spectra.sweeps.results import FAILED_RUN, INCOMPLETE, MISSING, OK, RunRecord

__all__ = ["Block", "CellSummary", "format_value", "summarize"]


@dataclass
class CellSummary:
    """The runs of one cell of one block."""

    label: str
    runs: list[RunRecord] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def n_ok(self) -> int:
        return self.count(OK)

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if r.status == OK and metric in r.metrics]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (NaN with fewer than two runs)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else math.nan

    def seeds(self) -> list[int]:
        """Seeds of the successful runs."""
        return sorted({r.seed for r in self.runs if r.seed is not None and r.status == OK})

    def problems(self) -> str:
        """``1 failed, 1 incomplete`` or ''."""
        parts = [f"{self.count(s)} {s}" for s in (FAILED_RUN, INCOMPLETE, MISSING) if self.count(s)]
        return ", ".join(parts)


@dataclass
class Block:
    """One task (and m): the sampler × feature-map cells and the baselines."""

    task: str
    num_features: int | None
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], CellSummary]
    baselines: dict[str, CellSummary]

    @property
    def title(self) -> str:
        return self.task + (f", m = {self.num_features}" if self.num_features is not None else "")

    @property
    def slug(self) -> str:
        return self.task + (f"_m{self.num_features}" if self.num_features is not None else "")

    def all_cells(self) -> list[CellSummary]:
        return [*self.cells.values(), *self.baselines.values()]

    def best(self, metric: str, higher_is_better: bool = True) -> float:
        """The best mean of the block (cells with at least one successful run)."""
        means = [c.mean(metric) for c in self.all_cells()]
        means = [m for m in means if not math.isnan(m)]
        if not means:
            return math.nan
        return max(means) if higher_is_better else min(means)

    def seeds(self) -> list[int]:
        return sorted({s for c in self.all_cells() for s in c.seeds()})


def summarize(runs: Iterable[RunRecord]) -> tuple[list[Block], list[str]]:
    """Blocks (sorted by task, then m) and notes on runs that fit no block."""
    runs = list(runs)
    notes: list[str] = []
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.task is None:
            notes.append(f"{run.source}: unknown task ({run.status}); not in any block")
            continue
        by_task[run.task].append(run)
    blocks: list[Block] = []
    for task in sorted(by_task):
        task_runs = by_task[task]
        baselines: dict[str, CellSummary] = {}
        for run in (r for r in task_runs if r.is_baseline):
            baselines.setdefault(run.label, CellSummary(run.label)).runs.append(run)
        rf_runs = [r for r in task_runs if not r.is_baseline]
        m_values = sorted({r.num_features for r in rf_runs}, key=lambda m: (m is None, m or 0))
        if not m_values:
            m_values = [None]
        if len(m_values) > 1:
            notes.append(f"{task}: runs with m = {', '.join(map(str, m_values))}; one block per m "
                         "(the baselines appear in each)")
        for m in m_values:
            cells: dict[tuple[str, str], CellSummary] = {}
            for run in (r for r in rf_runs if r.num_features == m):
                cell = run.cell
                assert isinstance(cell, tuple)
                cells.setdefault(cell, CellSummary(run.label)).runs.append(run)
            rows = sorted({c[0] for c in cells})
            cols = sorted({c[1] for c in cells})
            blocks.append(Block(task, m if rf_runs else None, rows, cols, cells, baselines))
        _note_varying(task, task_runs, notes)
    return blocks, notes


_DESIGN_PREFIXES = ("attention", "attention/", "seed=", "tags=", "task=", "+tags")


def _note_varying(task: str, runs: Sequence[RunRecord], notes: list[str]) -> None:
    """Note override keys (other than the grid's own) whose values differ between the runs of a
    cell: such runs are averaged together, which the reader must know."""
    per_cell: dict[object, list[RunRecord]] = defaultdict(list)
    for run in runs:
        per_cell[(run.cell, run.num_features)].append(run)
    varying: Counter[str] = Counter()
    for cell_runs in per_cell.values():
        values: dict[str, set[str]] = defaultdict(set)
        for run in cell_runs:
            seen = set()
            for line in run.overrides:
                if "=" not in line or line.startswith(_DESIGN_PREFIXES):
                    continue
                key, value = line.split("=", 1)
                values[key].add(value)
                seen.add(key)
            for key in values:
                if key not in seen:
                    values[key].add("<default>")
        varying.update(k for k, v in values.items() if len(v) > 1)
    if varying:
        notes.append(f"{task}: runs of the same cell differ in {', '.join(sorted(varying))}; "
                     "the table averages over them like over seeds")


def format_value(cell: CellSummary | None, metric: str, digits: int = 1) -> str:
    """``41.2 ± 0.5`` (several seeds), ``41.2`` (one), ``failed``/``incomplete``/``missing``
    (no successful run), with ``(1 failed)`` appended when some runs of the cell failed;
    ``–`` for a cell with no runs."""
    if cell is None or not cell.runs:
        return "–"
    values = cell.values(metric)
    problems = cell.problems()
    if not values:
        if cell.n_ok:
            return "n/a"  # successful runs without this metric
        return problems or "–"
    text = f"{statistics.fmean(values):.{digits}f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.{digits}f}"
    if problems:
        text += f" ({problems})"
    return text
