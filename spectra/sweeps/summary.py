"""Aggregate the runs DataFrame into the Spectraformer paper's layout (arXiv 2405.15310, Table 2):
one block per task (and per m when several are mixed), rows = samplers, columns = component
functions, each cell the mean ± sample standard deviation over seeds (a pandas ``groupby``);
baselines (softmax, Skyformer …) beside.

Failed runs are counted per cell, never averaged in (not as zero, not silently dropped): a cell
whose runs all failed shows ``failed``; one with some failed runs shows the mean of the others and
the count of failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from spectra.sweeps.results import FAILED_RUN, INCOMPLETE, METRICS, MISSING, OK

__all__ = ["PROBLEMS", "Block", "Metric", "summarize"]

PROBLEMS = (FAILED_RUN, INCOMPLETE, MISSING)


@dataclass(frozen=True)
class Metric:
    """How a report shows one metric column."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    digits: int
    cmap: str

    @property
    def label(self) -> str:
        return f"{self.title} ({self.unit})"


ACCURACY = Metric("test_acc", "Test accuracy", "%", True, 1, "viridis")
VAL_ACCURACY = Metric("val_acc", "Best validation accuracy", "%", True, 1, "viridis")
STEP_TIME = Metric("step_time_ms", "Time per training step", "ms", False, 1, "magma_r")
PEAK_MEMORY = Metric("peak_mem_mb", "Peak memory", "MiB", False, 0, "cividis_r")


@dataclass
class Block:
    """One task (and m): its runs, and ``cells`` (index: cell label; columns ``sampler``,
    ``feature_map``, ``<metric>_mean`` / ``_std`` / ``_n`` over successful runs, and one count
    column per status)."""

    task: str
    num_features: int | None
    runs: pd.DataFrame
    cells: pd.DataFrame

    @property
    def title(self) -> str:
        return self.task + (f", m = {self.num_features}" if self.num_features is not None else "")

    @property
    def slug(self) -> str:
        return self.task + (f"_m{self.num_features}" if self.num_features is not None else "")

    @property
    def rows(self) -> list[str]:
        return sorted(self.cells["sampler"].dropna().unique())

    @property
    def cols(self) -> list[str]:
        return sorted(self.cells["feature_map"].dropna().unique())

    @property
    def baselines(self) -> list[str]:
        return list(self.cells.index[self.cells["sampler"].isna()])

    def cell(self, row: str, col: str) -> str | None:
        """The label of the cell ``row × col`` when it has runs."""
        label = f"{row} × {col}"
        return label if label in self.cells.index else None

    def mean(self, label: str | None, metric: str) -> float:
        return math.nan if label is None else float(self.cells.at[label, f"{metric}_mean"])

    def std(self, label: str | None, metric: str) -> float:
        """Sample standard deviation over seeds (NaN with fewer than two runs)."""
        return math.nan if label is None else float(self.cells.at[label, f"{metric}_std"])

    def best(self, metric: str, higher_is_better: bool = True) -> float:
        """The best mean of the block (cells with at least one successful run)."""
        means = self.cells[f"{metric}_mean"].dropna()
        return math.nan if means.empty else float(means.max() if higher_is_better
                                                  else means.min())

    def is_best(self, label: str | None, metric: Metric) -> bool:
        value = self.mean(label, metric.key)
        return not math.isnan(value) and math.isclose(
            value, self.best(metric.key, metric.higher_is_better), rel_tol=1e-12)

    def seeds(self, label: str | None = None) -> list[int]:
        """Seeds of the successful runs (of one cell, or of the block)."""
        runs = self.runs[self.runs["status"] == OK]
        if label is not None:
            runs = runs[runs["label"] == label]
        return sorted(int(s) for s in runs["seed"].dropna().unique())

    def problems(self, label: str | None) -> str:
        """``1 failed, 1 incomplete`` or ''."""
        if label is None:
            return ""
        return ", ".join(f"{int(self.cells.at[label, s])} {s}" for s in PROBLEMS
                         if self.cells.at[label, s])

    def text(self, label: str | None, metric: Metric, sep: str = " ") -> str:
        """``41.2 ± 0.5`` (several seeds), ``41.2`` (one), ``failed`` / ``incomplete`` /
        ``missing`` (no successful run), with ``(1 failed)`` appended when some runs of the cell
        failed; ``–`` for a cell with no runs; ``n/a`` for successful runs without the metric."""
        if label is None:
            return "–"
        n, problems = int(self.cells.at[label, f"{metric.key}_n"]), self.problems(label)
        if n == 0:
            return "n/a" if self.cells.at[label, OK] else (problems or "–")
        text = f"{self.mean(label, metric.key):.{metric.digits}f}"
        if n > 1:
            text += f"{sep}± {self.std(label, metric.key):.{metric.digits}f}"
        return text + (f"{sep}({problems})" if problems else "")

    def table(self, metric: Metric) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The grid (samplers × component functions) and the baselines, as cell texts."""
        grid = pd.DataFrame([[self.text(self.cell(r, c), metric) for c in self.cols]
                             for r in self.rows], index=self.rows, columns=self.cols)
        base = pd.DataFrame({metric.title.lower(): [self.text(b, metric)
                                                    for b in self.baselines]},
                            index=self.baselines)
        return grid, base


def _cells(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == OK].groupby("label")[list(METRICS)]
    stats = pd.concat({"mean": ok.mean(), "std": ok.std(), "n": ok.count()}, axis=1)
    stats.columns = [f"{metric}_{stat}" for stat, metric in stats.columns]
    counts = pd.crosstab(runs["label"], runs["status"]).reindex(columns=[OK, *PROBLEMS],
                                                                fill_value=0)
    design = runs.groupby("label", sort=False)[["sampler", "feature_map"]].first()
    cells = design.join(counts).join(stats)
    n_columns = [c for c in cells if c.endswith("_n")]
    cells[n_columns] = cells[n_columns].fillna(0)
    return cells


def summarize(runs: pd.DataFrame) -> tuple[list[Block], list[str]]:
    """Blocks (sorted by task, then m) and notes on runs that fit no block."""
    notes = [f"{source}: unknown task ({status}); not in any block"
             for source, status in runs.loc[runs["task"].isna(), ["source", "status"]].values]
    blocks: list[Block] = []
    for task, task_runs in runs.dropna(subset=["task"]).groupby("task", sort=True):
        is_rf = task_runs["sampler"].notna() & task_runs["feature_map"].notna()
        rf, baselines = task_runs[is_rf], task_runs[~is_rf]
        m_values = sorted(rf["num_features"].dropna().unique()) or [None]
        if rf["num_features"].isna().any() and m_values != [None]:
            m_values.append(None)
        if len(m_values) > 1:
            notes.append(f"{task}: runs with m = {', '.join(map(str, m_values))}; one block per m "
                         "(the baselines appear in each)")
        for m in m_values:
            chosen = rf["num_features"].isna() if m is None else rf["num_features"] == m
            block_runs = pd.concat([rf[chosen], baselines])
            blocks.append(Block(str(task), None if m is None or rf.empty else int(m), block_runs,
                                _cells(block_runs)))
        notes += _varying(str(task), task_runs)
    return blocks, notes


_DESIGN_PREFIXES = ("attention", "attention/", "seed=", "tags=", "task=", "+tags")


def _varying(task: str, runs: pd.DataFrame) -> list[str]:
    """A note on override keys (other than the grid's own) whose values differ between the runs
    of a cell: such runs are averaged together, which the reader must know."""
    pairs = runs[["label", "num_features", "overrides"]].explode("overrides").dropna(
        subset=["overrides"])
    pairs = pairs[~pairs["overrides"].str.startswith(_DESIGN_PREFIXES)
                  & pairs["overrides"].str.contains("=")]
    split = pairs["overrides"].str.split("=", n=1, expand=True)
    if split.empty:
        return []
    pairs = pairs.assign(key=split[0], value=split[1])
    runs_per_cell = runs.groupby(["label", "num_features"], dropna=False).size()
    per_key = pairs.groupby(["label", "num_features", "key"], dropna=False)["value"]
    distinct, count = per_key.nunique(), per_key.size()
    cell_size = runs_per_cell.reindex(count.index.droplevel("key")).to_numpy()
    varying = sorted(set(distinct.index[(distinct > 1) | (count.to_numpy() < cell_size)]
                         .get_level_values("key")))
    if not varying:
        return []
    return [f"{task}: runs of the same cell differ in {', '.join(varying)}; the table averages "
            "over them like over seeds"]
