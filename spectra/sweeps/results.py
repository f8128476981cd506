"""Collect per-run results for a report from a Hydra multirun directory, a folder of offline W&B
runs, or a W&B project (``entity/project`` through the W&B API).

Each run becomes a :class:`RunRecord`: its design (task, attention, sampler, feature map, m,
seed), its status (``ok`` / ``failed`` / ``incomplete`` / ``missing``) and its metrics (test and
best validation accuracy, mean time per training step, peak memory). A run that crashed is kept
as ``failed`` with its error; a run that never finished is ``incomplete``; a job that the grid
planned (``grid.json``) but that has no directory is ``missing``. What a source holds besides
runs (unreadable files, other folders, mixed sweeps) is reported in :attr:`Collection.notes`.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.sweeps.status import COMPLETED, FAILED, RUNNING, read_status

__all__ = [
    "FAILED_RUN",
    "INCOMPLETE",
    "METRICS",
    "MISSING",
    "OK",
    "Collection",
    "ReportSourceError",
    "RunRecord",
    "collect",
    "load_multirun",
    "load_wandb_api",
    "load_wandb_offline",
    "read_wandb_file",
]

OK, FAILED_RUN, INCOMPLETE, MISSING = "ok", "failed", "incomplete", "missing"

# report metric -> keys that may hold it (first found wins), and how to scale it for display
METRICS: dict[str, tuple[tuple[str, ...], float]] = {
    "test_acc": (("test/acc", "summary/test/acc"), 100.0),
    "val_acc": (("val/acc_best", "objective", "summary/val/acc_best", "summary/objective"),
                100.0),
    "step_time_ms": (("perf/mean_step_time_s", "summary/perf/mean_step_time_s"), 1000.0),
    "peak_mem_mb": (("perf/peak_mem_mb", "summary/perf/peak_mem_mb"), 1.0),
    "tokens_per_s": (("perf/mean_tokens_per_s", "summary/perf/mean_tokens_per_s"), 1.0),
    "wall_time_s": (("wall_time_s", "summary/wall_time_s"), 1.0),
}


class ReportSourceError(ValueError):
    """A report source that holds no runs, or that cannot be read; says what it found."""


@dataclass
class RunRecord:
    """One run of a sweep, as the report sees it."""

    task: str | None
    attention: str | None  # registered attention name: random_features, softmax, skyformer …
    sampler: str | None = None
    feature_map: str | None = None
    num_features: int | None = None
    seed: int | None = None
    status: str = OK
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    name: str | None = None
    sweep: str | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        """A run whose attention has no sampler × feature map (softmax, Skyformer, …)."""
        return self.sampler is None or self.feature_map is None

    @property
    def cell(self) -> tuple[str, str] | str:
        """(sampler, feature map) of a random-feature run, else the attention's name."""
        if self.is_baseline:
            return str(self.attention)
        return (str(self.sampler), str(self.feature_map))

    @property
    def label(self) -> str:
        cell = self.cell
        return cell if isinstance(cell, str) else f"{cell[0]} × {cell[1]}"


@dataclass
class Collection:
    """The runs found in a source, and notes on anything else found there."""

    source: str
    kind: str  # "multirun", "wandb-offline", "wandb-api"
    runs: list[RunRecord]
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


# -- design and metrics from a run config ---------------------------------------------------------
def _component(node: Any) -> str | None:
    if isinstance(node, Mapping):
        name = node.get("name")
        return None if name is None else str(name)
    return None if node is None else str(node)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def design_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Task, attention, sampler, feature map, m and seed of a run config (``train.yaml`` layout)."""
    attention = cfg.get("attention") or {}
    task = cfg.get("task") or {}
    return {
        "task": _component(task) if isinstance(task, Mapping) else (str(task) if task else None),
        "attention": _component(attention),
        "sampler": _component(attention.get("sampler")) if isinstance(attention, Mapping) else None,
        "feature_map": (_component(attention.get("feature_map"))
                        if isinstance(attention, Mapping) else None),
        "num_features": _int(attention.get("num_features")) if isinstance(attention, Mapping)
        else None,
        "seed": _int(cfg.get("seed")),
    }


def metrics_from(values: Mapping[str, Any]) -> dict[str, float]:
    """The report's metrics (display units) from a run's metrics or W&B summary."""
    out: dict[str, float] = {}
    for name, (keys, scale) in METRICS.items():
        for key in keys:
            value = values.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(float(value)):
                out[name] = float(value) * scale
                break
    return out


# -- Hydra multirun directories -------------------------------------------------------------------
_SKIP_DIRS = {".hydra", ".submitit", "wandb", "checkpoints", "csv", "tensorboard", "__pycache__",
              "wandb_fallback", "lightning_logs"}


def _job_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) holding ``.hydra/config.yaml``."""
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        path = Path(dirpath)
        if (path / ".hydra" / "config.yaml").is_file():
            found.append(path)
            dirnames[:] = []  # a job directory holds no other job
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", str(p))])


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _record_from_job(job: Path, notes: list[str]) -> RunRecord | None:
    try:
        cfg = _load_yaml(job / ".hydra" / "config.yaml")
    except Exception as exc:  # an unreadable config is reported, not fatal
        notes.append(f"{job}: unreadable .hydra/config.yaml ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(cfg, dict) or "attention" not in cfg:
        notes.append(f"{job}: not a training run (its config has no `attention`); skipped")
        return None
    overrides: list[str] = []
    try:
        loaded = _load_yaml(job / ".hydra" / "overrides.yaml")
        overrides = [str(o) for o in loaded] if isinstance(loaded, list) else []
    except Exception:  # optional file
        overrides = []
    record = RunRecord(**design_from_config(cfg), source=str(job), overrides=overrides,
                       name=cfg.get("run_name"))
    status = read_status(job) or {}
    metrics_path = job / "metrics.json"
    metrics: dict[str, Any] | None = None
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except ValueError as exc:
            notes.append(f"{job}: unreadable metrics.json ({exc})")
    if status.get("status") == FAILED:
        record.status = FAILED_RUN
        record.error = f"{status.get('error_type', 'Error')}: {status.get('error', '')}".strip()
    elif metrics is not None:
        record.status = OK
        record.metrics = metrics_from(metrics)
        record.name = metrics.get("run_name", record.name)
    elif status.get("status") == COMPLETED:
        record.status = INCOMPLETE
        record.error = "completed without writing metrics.json"
    else:
        record.status = INCOMPLETE
        record.error = ("still running or killed (status.json says running)"
                        if status.get("status") == RUNNING
                        else "no metrics.json and no status.json")
    return record


def load_multirun(root: str | os.PathLike) -> Collection:
    """Runs of a Hydra multirun directory (or a folder of several, or of single runs)."""
    root = Path(root)
    notes: list[str] = []
    jobs = _job_dirs(root)
    runs = [r for r in (_record_from_job(job, notes) for job in jobs) if r is not None]
    sweeps: dict[Path, dict[str, Any]] = {}
    for manifest_path in sorted(root.rglob("grid.json")):
        try:
            sweeps[manifest_path.parent] = json.loads(manifest_path.read_text())
        except ValueError as exc:
            notes.append(f"{manifest_path}: unreadable grid manifest ({exc})")
    for run in runs:
        run.sweep = Path(run.source).parent.name
    for sweep_dir, manifest in sweeps.items():
        tasks = {r.task for r in runs if r.sweep == sweep_dir.name and r.task}
        m_values = {r.num_features for r in runs
                    if r.sweep == sweep_dir.name and not r.is_baseline}
        for job in manifest.get("jobs", []):
            if (sweep_dir / str(job.get("dir"))).is_dir():
                continue
            record = _missing_record(sweep_dir, job)
            if record.task is None and len(tasks) == 1:
                record.task = next(iter(tasks))
            if record.num_features is None and not record.is_baseline and len(m_values) == 1:
                record.num_features = next(iter(m_values))
            runs.append(record)
    sweep_names = sorted({r.sweep for r in runs if r.sweep})
    if len(sweep_names) > 1:
        notes.append(f"runs from {len(sweep_names)} directories: {', '.join(sweep_names[:8])}"
                     + (" …" if len(sweep_names) > 8 else ""))
    commands = []
    for sweep_dir in sorted({Path(r.source).parent for r in runs}):
        multirun_yaml = sweep_dir / "multirun.yaml"
        if multirun_yaml.is_file():
            commands.append(_command_of(multirun_yaml))
    return Collection(source=str(root), kind="multirun", runs=runs, notes=notes,
                      commands=[c for c in commands if c])


def _missing_record(sweep_dir: Path, job: Mapping[str, Any]) -> RunRecord:
    seed = next((v for k, v in (job.get("axes") or {}).items() if k.lstrip("+") == "seed"), None)
    overrides = [str(o) for o in job.get("overrides", [])]
    if seed is None:
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), None)
    task = next((o.split("=", 1)[1] for o in overrides if o.startswith("task=")), None)
    m = next((o.split("=", 1)[1] for o in overrides if o.startswith("attention.num_features=")),
             None)
    return RunRecord(
        task=task, attention=job.get("attention"), num_features=_int(m), sampler=job.get("sampler"),
        feature_map=job.get("feature_map"), seed=_int(seed), status=MISSING,
        error="planned by the grid but never started (sweep interrupted?)",
        source=str(sweep_dir / str(job.get("dir"))), sweep=sweep_dir.name, overrides=overrides,
    )


def _command_of(multirun_yaml: Path) -> str:
    try:
        cfg = _load_yaml(multirun_yaml)
    except Exception:  # the command is informative only
        return ""
    hydra = cfg.get("hydra", {}) if isinstance(cfg, dict) else {}
    overrides = hydra.get("overrides", {}) if isinstance(hydra, dict) else {}
    args = [*overrides.get("hydra", []), *overrides.get("task", [])]
    args = [a for a in args if not str(a).startswith("hydra.mode=")]
    return "python train.py -m " + " ".join(str(a) for a in args)


# -- offline W&B runs -----------------------------------------------------------------------------
_WANDB_HEADER = b":W&B"
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_chunks(data: bytes) -> Iterable[bytes]:
    """Records of a ``.wandb`` transaction log (LevelDB log format: 32 KiB blocks, 7-byte
    record headers ``crc32 u32, length u16, type u8``, records split FIRST/MIDDLE/LAST)."""
    if data[:4] != _WANDB_HEADER:
        raise ValueError("not a W&B transaction log (bad header)")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        block_end = (pos // _BLOCK + 1) * _BLOCK
        if block_end - pos < 7:
            pos = block_end
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos = block_end
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _set_nested(target: dict[str, Any], item: Any, value: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            return
    target[keys[-1]] = value


def read_wandb_file(path: str | os.PathLike) -> dict[str, Any]:
    """Run id, group, name, tags, config, summary and exit code of an offline ``run-*.wandb``."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"config": {}, "summary": {}, "tags": [], "exit_code": None}
    for chunk in _wandb_chunks(Path(path).read_bytes()):
        record = pb.Record()
        try:
            record.ParseFromString(chunk)
        except Exception:  # a torn last record of a killed run
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(id=run.run_id, group=run.run_group or None, name=run.display_name,
                       project=run.project, tags=list(run.tags))
            for item in run.config.update:
                _set_nested(out["config"], item, json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set_nested(out["config"], item, json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                key = "/".join([*item.nested_key] or [item.key])
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "exit":
            out["exit_code"] = int(record.exit.exit_code)
    return out


def _unwrap_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """W&B config values may be stored as ``{"value": …}`` (API) or plain (offline)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if isinstance(value, Mapping) and set(value) <= {"value", "desc"} and "value" in value:
            value = value["value"]
        out[key] = value
    return out


def _record_from_wandb(info: Mapping[str, Any], state: str, source: str) -> RunRecord:
    config = _unwrap_config(info.get("config") or {})
    record = RunRecord(**design_from_config(config), source=source, name=info.get("name"),
                       sweep=info.get("group"))
    if record.task is None:  # tags written by the training app: task=…, sampler=…
        tags = dict(t.split("=", 1) for t in info.get("tags", []) if "=" in t)
        record.task, record.attention = tags.get("task"), tags.get("attention")
        record.sampler, record.feature_map = tags.get("sampler"), tags.get("feature_map")
        record.seed = _int(tags.get("seed"))
    record.status = state
    if state == OK:
        record.metrics = metrics_from(info.get("summary") or {})
    return record


def load_wandb_offline(root: str | os.PathLike) -> Collection:
    """Runs of a folder of offline W&B runs (``offline-run-*/run-*.wandb``, any depth)."""
    root = Path(root)
    notes: list[str] = []
    runs: list[RunRecord] = []
    for path in sorted(root.rglob("run-*.wandb")):
        try:
            info = read_wandb_file(path)
        except (OSError, ValueError) as exc:
            notes.append(f"{path}: unreadable W&B run ({exc})")
            continue
        exit_code = info.get("exit_code")
        state = OK if exit_code == 0 else FAILED_RUN if exit_code is not None else INCOMPLETE
        record = _record_from_wandb(info, state, str(path.parent))
        if state == FAILED_RUN:
            record.error = f"W&B run exited with code {exit_code}"
        elif state == INCOMPLETE:
            record.error = "no exit record (still running or killed)"
        runs.append(record)
    return Collection(source=str(root), kind="wandb-offline", runs=runs, notes=notes)


def load_wandb_api(path: str, group: str | None = None) -> Collection:
    """Runs of a W&B project ``entity/project`` (optionally one group) through the W&B API."""
    try:
        import wandb

        api = wandb.Api(timeout=60)
        filters = {"group": group} if group else None
        api_runs = list(api.runs(path, filters=filters))
    except Exception as exc:  # offline, no key, unknown project …
        raise ReportSourceError(
            f"could not read W&B project {path!r} through the API ({type(exc).__name__}: {exc}); "
            "check the name, `wandb login` and the network, or pass a local directory"
        ) from exc
    states = {"finished": OK, "failed": FAILED_RUN, "crashed": FAILED_RUN, "killed": FAILED_RUN}
    runs = []
    for run in api_runs:
        info = {"config": dict(run.config), "summary": dict(run.summary._json_dict),
                "name": run.name, "group": run.group, "tags": list(run.tags or [])}
        record = _record_from_wandb(info, states.get(run.state, INCOMPLETE), run.url)
        if record.status != OK:
            record.error = f"W&B state: {run.state}"
        runs.append(record)
    return Collection(source=path, kind="wandb-api", runs=runs)


# -- any source -----------------------------------------------------------------------------------
def _describe(root: Path) -> str:
    entries = sorted(root.iterdir())
    files = [e.name for e in entries if e.is_file()]
    dirs = [e.name + "/" for e in entries if e.is_dir()]
    shown = ", ".join([*dirs, *files][:10]) + (" …" if len(entries) > 10 else "")
    return f"{len(dirs)} folder(s) and {len(files)} file(s)" + (f": {shown}" if entries else "")


_PROJECT = re.compile(r"^[\w.-]+/[\w.-]+$")


def collect(source: str | os.PathLike, *, group: str | None = None) -> Collection:
    """Runs of ``source``: a multirun directory, a folder of offline W&B runs, or
    ``entity/project`` (W&B API). Raises :class:`ReportSourceError` saying what was found when
    there are no runs."""
    path = Path(source)
    if not path.exists():
        if _PROJECT.match(str(source)):
            collection = load_wandb_api(str(source), group=group)
            if not collection.runs:
                raise ReportSourceError(f"W&B project {source!r} has no runs"
                                        + (f" in group {group!r}" if group else ""))
            return collection
        raise ReportSourceError(
            f"{str(source)!r} is neither a directory nor a W&B project path (entity/project)"
        )
    if not path.is_dir():
        raise ReportSourceError(f"{str(path)!r} is a file; pass a multirun directory, a folder of "
                                "offline W&B runs, or entity/project")
    collection = load_multirun(path)
    wandb_files = list(path.rglob("run-*.wandb"))
    if collection.runs:
        if wandb_files:
            collection.notes.append(
                f"{len(wandb_files)} offline W&B run(s) inside the job directories were not read "
                "(the Hydra job files hold the same results)")
    elif wandb_files:
        collection = load_wandb_offline(path)
        if group:
            collection.runs = [r for r in collection.runs if r.sweep == group]
    if not collection.runs:
        raise ReportSourceError(
            f"no runs in {str(path)!r}: found {_describe(path)}. Expected a Hydra multirun "
            "directory (job folders with .hydra/config.yaml), a folder of offline W&B runs "
            "(offline-run-*/run-*.wandb), or a W&B project (entity/project)"
            + ("".join(f"\n  note: {n}" for n in collection.notes)))
    return collection
