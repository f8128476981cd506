"""Experiment loggers: CSV, TensorBoard, and a Weights & Biases logger that cannot hang a run.

W&B runs offline unless configured otherwise (``WANDB_MODE=online`` or ``logger.wandb.mode``);
offline runs land in ``<run dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync <dir>``. ``wandb.init`` gets a timeout and is called eagerly inside a ``try``: any
failure (no network, no API key, a broken install) becomes a warning and a CSV logger instead.
In a Hydra multirun the W&B ``group`` is the sweep directory's name, so all jobs of one sweep are
grouped; :func:`finish_wandb` closes the run at the end of every job.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

from spectra.training.logging_guard import (
    call_with_timeout,
    check_writable,
    resilient,
    warn_fallback,
)

__all__ = ["finish_wandb", "sweep_group", "wandb_logger"]

log = logging.getLogger(__name__)

_MAX_TAG_LENGTH = 64  # W&B rejects longer tags


def sweep_group() -> str | None:
    """The Hydra sweep directory's name in a multirun job, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(str(hc.sweep.dir)).name or None


def clean_tags(tags: Iterable[Any] | None) -> list[str]:
    """Tags as unique, non-empty strings of at most 64 characters (order kept)."""
    out: list[str] = []
    for tag in tags or ():
        if tag is None:
            continue
        text = str(tag).strip()[:_MAX_TAG_LENGTH]
        if text and text not in out:
            out.append(text)
    return out


def wandb_logger(
    *,
    save_dir: str,
    project: str = "spectra",
    entity: str | None = None,
    mode: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[Any] | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    init_timeout: float = 60.0,
    silent: bool = True,
    min_free_mb: float = 50.0,
    finish_timeout: float = 60.0,
    wandb_dir: str | None = None,
) -> Logger:
    """A ``WandbLogger`` whose run is started now; on any failure a warning and a ``CSVLogger``.

    ``mode``: ``offline`` (default when neither this nor ``WANDB_MODE`` is set), ``online`` or
    ``disabled``. ``group`` defaults to the Hydra sweep name in a multirun.
    ``wandb_dir``: where W&B writes its run (default ``save_dir``); the CSV fallback always goes
    to ``<save_dir>/wandb_fallback``. ``min_free_mb``: free space the W&B
    directory must have (before and during the run), else CSV; ``finish_timeout``: seconds
    ``wandb.finish`` may take (see :mod:`.logging_guard`).
    """
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    allowed_modes = ("offline", "online", "disabled", "shared")
    if mode not in allowed_modes:
        raise ValueError(
            f"logger.wandb.mode must be one of {', '.join(allowed_modes)}, got {mode!r}"
        )
    if silent:
        os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", str(int(init_timeout)))
    wandb_dir = wandb_dir or save_dir
    try:
        check_writable(wandb_dir, min_free_mb)  # a full or read-only disk: CSV, not W&B errors
        import wandb
        from lightning.pytorch import loggers as pl_loggers

        logger = resilient(pl_loggers.WandbLogger)(
            project=project,
            entity=entity,
            save_dir=wandb_dir,
            name=name,
            group=group or sweep_group(),
            tags=clean_tags(tags),
            job_type=job_type,
            notes=notes,
            mode=mode,
            settings=wandb.Settings(init_timeout=float(init_timeout), silent=silent),
            min_free_mb=min_free_mb,
            finish_timeout=finish_timeout,
            fallback_dir=save_dir,
        )
        logger.experiment  # noqa: B018 - start the run now (rank zero only), inside the try
    except Exception as exc:
        message = (
            f"W&B logging is unavailable ({type(exc).__name__}: {exc}); logging to CSV in "
            f"{save_dir}/wandb_fallback instead"
        )
        warn_fallback(message)
        finish_wandb(exit_code=1, timeout=finish_timeout)
        return CSVLogger(save_dir=save_dir, name="wandb_fallback", version="")
    return logger


def finish_wandb(exit_code: int = 0, timeout: float = 120.0) -> None:
    """Finish the active W&B run, if any (a no-op when wandb was never imported). Waits at most
    ``timeout`` seconds (an upload over a dead network); a failure is a warning."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    call_with_timeout(lambda: wandb.finish(exit_code=exit_code), timeout, "wandb.finish")
