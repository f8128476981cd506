"""Per-run status files: ``<run dir>/status.json`` says whether a run is running, completed or
failed (with the error), so a report can tell a crashed run from a missing one.

Written at job start (``running``) and job end (``completed`` / ``failed``) by
:class:`spectra.sweeps.callbacks.SweepCallback` and, as a fallback, by the grid sweeper from the
jobs' results. A run left ``running`` after its sweep ended was killed (out of memory, a Slurm
time limit, Ctrl-C). Only rank zero writes (DDP ranks share one run directory).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spectra import strict_json

__all__ = [
    "COMPLETED",
    "FAILED",
    "FINAL_STATES",
    "INTERRUPTED",
    "RUNNING",
    "STATUS_FILE",
    "error_info",
    "is_rank_zero",
    "read_status",
    "write_status",
]

STATUS_FILE = "status.json"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
INTERRUPTED = "interrupted"  # stopped by a signal after saving last.ckpt; resumable
FINAL_STATES = (COMPLETED, FAILED)
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_rank_zero() -> bool:
    """True unless a launcher's rank variable (torchrun, Slurm, Lightning) says otherwise."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return False
    return True


def error_info(exc: BaseException) -> dict[str, str]:
    """Type, message and traceback text of an exception."""
    return {
        "error_type": type(exc).__name__,
        "error": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's status record, or None when it has none (or it is unreadable)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(
    run_dir: str | os.PathLike, status: str, info: Mapping[str, Any] | None = None
) -> Path | None:
    """Write ``status`` (``running`` / ``interrupted`` / ``completed`` / ``failed``) and ``info`` to
    ``<run_dir>/status.json`` atomically; keeps ``started_at`` of an earlier record. Rank zero
    only (returns None elsewhere)."""
    if status not in (RUNNING, INTERRUPTED, *FINAL_STATES):
        raise ValueError(
            f"status must be one of running, interrupted, completed, failed; got {status!r}")
    if not is_rank_zero():
        return None
    path = Path(run_dir) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_status(run_dir) or {}
    now = time.time()
    record: dict[str, Any] = {
        "status": status,
        "started_at": previous.get("started_at", now),
        "updated_at": now,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if status in FINAL_STATES:
        record["duration_s"] = now - float(record["started_at"])
    record.update(dict(info or {}))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(strict_json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
