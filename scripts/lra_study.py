"""Report of the LRA study (``experiment=lra_study`` / ``lra_study_budget``):
``python scripts/lra_study.py multirun/lra_study_budget [--out docs/results/lra]``.

Writes into OUT (default ``SOURCE/report``):

* ``runs.csv`` — one row per run: task, attention (the preset, or ``sampler × feature map`` for a
  Spectraformer cell), sampler, feature_map, max_length, steps, wall_clock_s (training wall clock,
  validation included: ``time/elapsed_s`` at the last validation, else the run's wall time),
  test_acc / val_acc (%, the test of the best-validation checkpoint), test_n (test sequences),
  learned (test accuracy above chance by more than two binomial standard errors), peak_mem_mib,
  steps_per_s (training steps per second, validation left out), status;
* ``curves.csv`` — every validation of every run: task, attention, step, elapsed_s, val_acc;
* ``<task>_curves.png`` — validation accuracy against wall clock and against steps, one line per
  attention, chance dashed;
* ``results.md`` — one table per task and the figures.

Chance is 50% on Text and Pathfinder and 10% on ListOps. "learned" is measured against chance,
not against the majority class (about 18% on ListOps): a run that predicts one class can pass it.
Exit status 2 when SOURCE holds no runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from spectra.sweeps.results import ReportSourceError, collect

CHANCE = {"lra_text": 50.0, "lra_pathfinder": 50.0, "lra_listops": 10.0, "lra_image": 10.0,
          "lra_retrieval": 50.0}
ORDER = ["lra_text", "lra_listops", "lra_pathfinder", "lra_retrieval", "lra_image"]


def _label(overrides: list[str], sampler: str | None, feature_map: str | None) -> str:
    """The attention preset given on the command line, or ``sampler × feature map``."""
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("attention=")), None)
    if preset in (None, "spectraformer", "random_features"):
        return f"{sampler} × {feature_map}"
    return str(preset)


def _job(row: pd.Series) -> tuple[dict, dict, pd.DataFrame]:
    """(resolved run config, metrics.json, the validations of csv/metrics.csv) of one run."""
    job = Path(row["source"])
    cfg_path = job / "run_config.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True) if cfg_path.is_file() \
        else {}
    metrics = json.loads((job / "metrics.json").read_text()) if (job / "metrics.json").is_file() \
        else {}
    logged = job / "csv" / "metrics.csv"
    val = pd.read_csv(logged) if logged.is_file() else pd.DataFrame()
    if "val/acc" in val:
        val = val.dropna(subset=["val/acc"])
        val = val.reindex(columns=["step", "time/elapsed_s", "val/acc"])
    else:
        val = pd.DataFrame(columns=["step", "time/elapsed_s", "val/acc"])
    return cfg, metrics, val  # type: ignore[return-value]


def study_frames(source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of a study's multirun directory."""
    frame = collect(source).frame
    rows, curves = [], []
    for _, row in frame.iterrows():
        cfg, metrics, val = _job(row) if row["status"] != "missing" else ({}, {}, pd.DataFrame())
        name = _label(list(row["overrides"] or []), row["sampler"], row["feature_map"])
        trainer, task = cfg.get("trainer", {}), cfg.get("task", {})
        step_time = metrics.get("perf/mean_step_time_s")
        elapsed = val["time/elapsed_s"].dropna() if len(val) else pd.Series(dtype=float)
        test_n = None
        if trainer.get("limit_test_batches") and task.get("batch_size"):
            test_n = min(int(trainer["limit_test_batches"]) * int(task["batch_size"]),
                         int(metrics.get("data/test_size", 1e12)))
        elif metrics.get("data/test_size"):
            test_n = int(metrics["data/test_size"])
        chance = CHANCE.get(str(row["task"]), float("nan"))
        acc = row["test_acc"]
        margin = 200 * math.sqrt(chance / 100 * (1 - chance / 100) / test_n) if test_n else math.nan
        rows.append({
            "task": row["task"], "attention": name, "sampler": row["sampler"],
            "feature_map": row["feature_map"], "max_length": task.get("max_length"),
            "steps": metrics.get("global_step"),
            "wall_clock_s": float(elapsed.iloc[-1]) if len(elapsed) else
            metrics.get("wall_time_s"),
            "test_acc": acc, "val_acc": row["val_acc"], "test_n": test_n, "chance": chance,
            "learned": bool(acc > chance + margin) if pd.notna(acc) and test_n else False,
            "peak_mem_mib": row["peak_mem_mb"],
            "steps_per_s": 1.0 / step_time if step_time else None,
            "seed": row["seed"], "status": row["status"],
            "max_time": trainer.get("max_time"), "batch_size": task.get("batch_size"),
        })
        curves += [{"task": row["task"], "attention": name, "seed": row["seed"],
                    "step": int(v["step"]),
                    "elapsed_s": v["time/elapsed_s"], "val_acc": 100 * v["val/acc"]}
                   for _, v in val.iterrows()]
    runs = pd.DataFrame(rows)
    runs["_order"] = runs["task"].map({t: i for i, t in enumerate(ORDER)}).fillna(len(ORDER))
    runs = runs.sort_values(["_order", "test_acc"], ascending=[True, False]).drop(columns="_order")
    return runs.reset_index(drop=True), pd.DataFrame(
        curves, columns=["task", "attention", "seed", "step", "elapsed_s", "val_acc"])


def plot_curves(task: str, curves: pd.DataFrame, out: Path) -> Path:
    """Validation accuracy against wall clock (left) and steps (right), one line per attention."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    seeds = curves["seed"].nunique() > 1
    for (name, seed), run in curves.groupby(["attention", "seed"], sort=True, dropna=False):
        run = run.sort_values("step")
        label = f"{name} (seed {seed})" if seeds else name
        line, = axes[0].plot(run["elapsed_s"] / 60, run["val_acc"], marker="o", ms=3, label=label)
        axes[1].plot(run["step"], run["val_acc"], marker="o", ms=3, color=line.get_color())
    for ax, xlabel in zip(axes, ("training wall clock (min, validation included)", "steps")):
        ax.axhline(CHANCE.get(task, float("nan")), color="grey", ls="--", lw=1, label="chance")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task}: validation accuracy")
    path = out / f"{task}_curves.png"
    fig.savefig(path, dpi=110)
    return path


def table(runs: pd.DataFrame) -> str:
    """Markdown of one task's runs (best test accuracy first)."""
    fmt = {"val": ("val_acc", "{:.1f}"), "wall": ("wall_clock_s", "{:.0f}"),
           "rate": ("steps_per_s", "{:.3f}"), "mem": ("peak_mem_mib", "{:.0f}")}
    shown = runs.assign(
        test=runs["test_acc"].map("{:.1f}".format) + runs["learned"].map({True: "", False: " ·"}),
        **{k: runs[col].map(f.format) for k, (col, f) in fmt.items()})
    shown = shown[["attention", "steps", "rate", "wall", "val", "test", "mem", "status"]]
    shown.columns = ["attention", "steps", "steps/s", "wall clock (s)", "best val acc (%)",
                     "test acc (%)", "peak mem (MiB)", "status"]
    return shown.to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the study's multirun directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    args = parser.parse_args(argv)
    try:
        runs, curves = study_frames(args.source)
    except ReportSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(args.source) / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.4g")
    curves.to_csv(out / "curves.csv", index=False, float_format="%.5g")
    parts = [f"# LRA study: results\n\nSource: `{args.source}`; written by `scripts/lra_study.py`."
             " Test accuracy is of the best-validation checkpoint on the first `test_n` test "
             "sequences; `·` marks a run not above chance by two standard errors.\n"]
    for task, task_runs in runs.groupby("task", sort=False):
        known = task_runs.dropna(subset=["max_length"])
        budget = ", ".join(f"{k} {v if isinstance(v, str) else int(v)}" for k, v in (
            (k, known[c].iloc[0] if len(known) else None) for k, c in (
                ("max_time", "max_time"), ("batch", "batch_size"), ("length", "max_length"),
                ("test_n", "test_n"))) if pd.notna(v)) or "no run started"
        parts.append(f"## {task}\n\n{budget}; chance {CHANCE.get(str(task), 'n/a')}%.\n\n"
                     f"{table(task_runs)}\n")
        task_curves = curves[curves["task"] == task]
        if len(task_curves):
            figure = plot_curves(str(task), task_curves, out)
            parts.append(f"![{task}]({figure.name})\n")
    (out / "results.md").write_text("\n".join(parts))
    print(f"wrote {out}/results.md, runs.csv, curves.csv ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
