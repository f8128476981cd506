"""The runs of a sweep as one pandas DataFrame, one row per run, from a Hydra multirun directory
(each job's ``.hydra/config.yaml``, ``metrics.json`` and ``status.json``) or from a W&B project
(``entity/project``, through W&B's public API: ``run.config`` and ``run.summary_metrics``).

Both sources are flattened the same way (:func:`pandas.json_normalize`: ``attention.sampler.name``,
``metrics.test/acc`` …) and reduced to the design columns, ``status`` (``ok`` / ``failed`` /
``incomplete`` / ``missing``), ``error`` and the metric columns in display units. A run that
crashed stays as ``failed`` with its error; a run that never finished is ``incomplete``; a job
that the grid sweeper planned (``grid.json``) but that has no directory is ``missing``. What a
source holds besides runs (unreadable files, other folders) goes into :attr:`Runs.notes`.

Offline W&B runs are read after ``wandb sync <dir>`` from their project, or from the multirun
directory they were logged in (the Hydra job files hold the same results).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spectra.sweeps.status import COMPLETED, FAILED, INTERRUPTED, RUNNING, read_status

__all__ = ["DESIGN", "METRICS", "ReportSourceError", "Runs", "collect", "load_multirun",
           "load_wandb_api"]

OK, FAILED_RUN, INCOMPLETE, MISSING = "ok", "failed", "incomplete", "missing"

DESIGN: dict[str, str] = {  # column -> flattened config key
    "task": "task.name",
    "attention": "attention.name",
    "sampler": "attention.sampler.name",
    "feature_map": "attention.feature_map.name",
    "num_features": "attention.num_features",
    "seed": "seed",
}
# column -> flattened keys that may hold it (first found wins), and its display scale
METRICS: dict[str, tuple[tuple[str, ...], float]] = {
    "test_acc": (("test/acc", "summary/test/acc"), 100.0),
    "val_acc": (("val/acc_best", "objective", "summary/val/acc_best", "summary/objective"),
                100.0),
    "step_time_ms": (("perf/mean_step_time_s", "summary/perf/mean_step_time_s"), 1000.0),
    "peak_mem_mb": (("perf/peak_mem_mb", "summary/perf/peak_mem_mb"), 1.0),
    "tokens_per_s": (("perf/mean_tokens_per_s", "summary/perf/mean_tokens_per_s"), 1.0),
    "wall_time_s": (("wall_time_s", "summary/wall_time_s"), 1.0),
}
COLUMNS = [*DESIGN, "status", "error", *METRICS, "name", "sweep", "source", "overrides"]


class ReportSourceError(ValueError):
    """A report source that holds no runs, or that cannot be read; says what it found."""


@dataclass
class Runs:
    """The runs found in a source (one row each, :data:`COLUMNS`), and notes on the rest."""

    source: str
    kind: str  # "multirun" or "wandb-api"
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Runs from records ``{config…, "metrics": {…}, "status": …, …}``: flattened, reduced to
    :data:`COLUMNS`, with a ``label`` column (``sampler × feature map`` or the attention)."""
    flat = pd.json_normalize(records) if records else pd.DataFrame()
    out = pd.DataFrame(index=flat.index)
    for column in COLUMNS:
        key = DESIGN.get(column, column)
        out[column] = flat[key] if key in flat else None
    for column, (keys, scale) in METRICS.items():
        values = pd.Series(float("nan"), index=flat.index)
        for key in (f"metrics.{k}" for k in reversed(keys)):
            if key in flat:
                found = pd.to_numeric(flat[key], errors="coerce")
                values = found.where(found.notna(), values)
        out[column] = values * scale
    for column in ("num_features", "seed"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("Int64")
    out = out.astype({c: "object" for c in ("task", "attention", "sampler", "feature_map")})
    baseline = out["sampler"].isna() | out["feature_map"].isna()
    out["label"] = out["attention"].where(
        baseline, out["sampler"].astype(str) + " × " + out["feature_map"].astype(str))
    return out


# -- Hydra multirun directories -------------------------------------------------------------------
_SKIP_DIRS = {".hydra", ".submitit", "wandb", "checkpoints", "csv", "tensorboard", "__pycache__",
              "wandb_fallback", "lightning_logs"}


def _job_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) holding ``.hydra/config.yaml``."""
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        if (Path(dirpath) / ".hydra" / "config.yaml").is_file():
            found.append(Path(dirpath))
            dirnames[:] = []  # a job directory holds no other job
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", str(p))])


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _job_record(job: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        cfg = _load_yaml(job / ".hydra" / "config.yaml")
    except Exception as exc:  # an unreadable config is reported, not fatal
        notes.append(f"{job}: unreadable .hydra/config.yaml ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(cfg, dict) or "attention" not in cfg:
        notes.append(f"{job}: not a training run (its config has no `attention`); skipped")
        return None
    overrides = job / ".hydra" / "overrides.yaml"
    record = {**cfg, "source": str(job), "sweep": job.parent.name, "name": cfg.get("run_name"),
              "overrides": _load_yaml(overrides) if overrides.is_file() else []}
    status = read_status(job) or {}
    metrics = None
    if (job / "metrics.json").is_file():
        try:
            metrics = json.loads((job / "metrics.json").read_text())
        except ValueError as exc:
            notes.append(f"{job}: unreadable metrics.json ({exc})")
    if status.get("status") == FAILED:
        error = f"{status.get('error_type', 'Error')}: {status.get('error', '')}".strip()
        return {**record, "status": FAILED_RUN, "error": error}
    if metrics is not None:
        return {**record, "status": OK, "metrics": metrics,
                "name": metrics.get("run_name", record["name"])}
    error = {COMPLETED: "completed without writing metrics.json",
             RUNNING: "still running or killed (status.json says running)",
             INTERRUPTED: "interrupted by a signal (status.json has the step and the resume "
                          "command)"}.get(
        status.get("status"), "no metrics.json and no status.json")
    return {**record, "status": INCOMPLETE, "error": error}


def _missing_records(sweep_dir: Path, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Jobs of a grid manifest whose directory was never made, designed from their overrides."""
    records = []
    for job in manifest.get("jobs", []):
        if (sweep_dir / str(job.get("dir"))).is_dir():
            continue
        overrides = [str(o) for o in job.get("overrides", [])]
        values = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        records.append({
            "task": {"name": values.get("task")},
            "attention": {"name": values.get("attention"),
                          "sampler": {"name": values.get("attention/sampler")},
                          "feature_map": {"name": values.get("attention/feature_map")},
                          "num_features": values.get("attention.num_features")},
            "seed": values.get("seed"), "status": MISSING, "overrides": overrides,
            "error": "planned by the grid but never started (sweep interrupted?)",
            "source": str(sweep_dir / str(job.get("dir"))), "sweep": sweep_dir.name})
    return records


def _command_of(multirun_yaml: Path) -> str:
    try:
        overrides = _load_yaml(multirun_yaml)["hydra"]["overrides"]
    except Exception:  # the command is informative only
        return ""
    args = [str(a) for a in [*overrides.get("hydra", []), *overrides.get("task", [])]]
    return "python train.py -m " + " ".join(a for a in args if not a.startswith("hydra.mode="))


def load_multirun(root: str | os.PathLike) -> Runs:
    """Runs of a Hydra multirun directory (or a folder of several, or of single runs)."""
    root = Path(root)
    notes: list[str] = []
    records = [r for r in (_job_record(job, notes) for job in _job_dirs(root)) if r is not None]
    for path in sorted(root.rglob("grid.json")):
        try:
            records += _missing_records(path.parent, json.loads(path.read_text()))
        except ValueError as exc:
            notes.append(f"{path}: unreadable grid manifest ({exc})")
    frame = to_frame(records)
    for _, runs in frame.groupby("sweep"):  # a missing run takes its sweep's only task and m
        missing = runs[runs["status"] == MISSING]
        for column, rows in (("task", missing), ("num_features", missing[missing.sampler.notna()])):
            known = runs.loc[runs["status"] != MISSING, column].dropna().unique()
            if len(known) == 1:
                frame.loc[rows.index[rows[column].isna()], column] = known[0]
    sweeps = sorted(frame["sweep"].dropna().unique())
    if len(sweeps) > 1:
        notes.append(f"runs from {len(sweeps)} directories: {', '.join(sweeps[:8])}"
                     + (" …" if len(sweeps) > 8 else ""))
    commands = [_command_of(Path(s).parent / "multirun.yaml") for s in frame["source"].unique()]
    return Runs(str(root), "multirun", frame, notes, list(dict.fromkeys(c for c in commands if c)))


# -- W&B through its public API -------------------------------------------------------------------
_STATES = {"finished": OK, "failed": FAILED_RUN, "crashed": FAILED_RUN, "killed": FAILED_RUN}


def load_wandb_api(path: str, group: str | None = None) -> Runs:
    """Runs of a W&B project ``entity/project`` (optionally one group) through ``wandb.Api``."""
    try:
        import wandb

        api_runs = list(wandb.Api(timeout=60).runs(path, filters={"group": group} if group
                                                   else None))
    except Exception as exc:  # offline, no key, unknown project …
        raise ReportSourceError(
            f"could not read W&B project {path!r} through the API ({type(exc).__name__}: {exc}); "
            "check the name, `wandb login` and the network, or pass a local directory"
        ) from exc
    records = []
    for run in api_runs:
        status = _STATES.get(run.state, INCOMPLETE)
        records.append({**dict(run.config), "metrics": dict(run.summary_metrics),
                        "status": status, "error": None if status == OK else
                        f"W&B state: {run.state}", "name": run.name, "sweep": run.group,
                        "source": run.url})
    frame = to_frame(records)
    frame.loc[frame["status"] != OK, list(METRICS)] = float("nan")
    return Runs(path, "wandb-api", frame)


# -- any source -----------------------------------------------------------------------------------
def _describe(root: Path) -> str:
    entries = sorted(root.iterdir())
    files = [e.name for e in entries if e.is_file()]
    dirs = [e.name + "/" for e in entries if e.is_dir()]
    shown = ", ".join([*dirs, *files][:10]) + (" …" if len(entries) > 10 else "")
    return f"{len(dirs)} folder(s) and {len(files)} file(s)" + (f": {shown}" if entries else "")


_PROJECT = re.compile(r"^[\w.-]+/[\w.-]+$")


def collect(source: str | os.PathLike, *, group: str | None = None) -> Runs:
    """Runs of ``source``: a multirun directory or ``entity/project`` (W&B API). Raises
    :class:`ReportSourceError` saying what was found when there are no runs."""
    path = Path(source)
    if not path.exists():
        if not _PROJECT.match(str(source)):
            raise ReportSourceError(
                f"{str(source)!r} is neither a directory nor a W&B project path (entity/project)")
        runs = load_wandb_api(str(source), group=group)
        if runs.frame.empty:
            raise ReportSourceError(f"W&B project {source!r} has no runs"
                                    + (f" in group {group!r}" if group else ""))
        return runs
    if not path.is_dir():
        raise ReportSourceError(f"{str(path)!r} is a file; pass a multirun directory or "
                                "entity/project")
    runs = load_multirun(path)
    if runs.frame.empty:
        offline = " (offline W&B runs: `wandb sync` them, then pass entity/project)" if any(
            path.rglob("run-*.wandb")) else ""
        raise ReportSourceError(
            f"no runs in {str(path)!r}: found {_describe(path)}. Expected a Hydra multirun "
            "directory (job folders with .hydra/config.yaml) or a W&B project (entity/project)"
            + offline + "".join(f"\n  note: {n}" for n in runs.notes))
    return runs
