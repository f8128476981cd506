"""Logging failures never stop training: W&B degrades to a warning and CSV, within a time bound.

* Before W&B starts, :func:`check_writable` checks that its directory can hold an offline run
  (``min_free_mb`` free, a probe file written and fsynced): a full or read-only disk fails there,
  with a clear reason, instead of flooding stderr with W&B's internal write errors.
* :class:`ResilientWandbLogger` (a ``WandbLogger``) guards every logging call: the first
  exception — or the free space of its directory dropping under ``min_free_mb`` — prints one
  warning, finishes the W&B run (bounded by ``finish_timeout``) and sends this and every later
  call to a ``CSVLogger`` in ``<run dir>/wandb_fallback`` (``fallback_dir``; the hyperparameters
  are logged there again). A failing CSV fallback is dropped with a warning too.
* :func:`call_with_timeout` bounds calls that may block on the network (``wandb.finish``
  uploading over a dead link): after ``timeout`` seconds it warns and returns.

``wandb.init`` itself is bounded by W&B's ``init_timeout`` (see ``loggers.wandb_logger``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sys
import threading
import uuid
from argparse import Namespace
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = [
    "ResilientWandbLogger",
    "call_with_timeout",
    "check_writable",
    "resilient",
    "warn_fallback",
]

log = logging.getLogger(__name__)


def warn_fallback(message: str) -> None:
    """A warning on the log and on stderr (a run's log file may be the thing that failed)."""
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def check_writable(directory: str | os.PathLike, min_free_mb: float = 50.0) -> None:
    """Raise ``OSError`` unless ``directory`` can be created, has ``min_free_mb`` MiB free and
    accepts a fsynced 64 KiB probe file."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise OSError(
            errno.ENOSPC,
            f"only {free_mb:.1f} MiB free in {path} (at least {min_free_mb:g} MiB needed)",
        )
    probe = path / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> bool:
    """Run ``fn()`` in a daemon thread; True if it returned within ``timeout`` seconds. An
    exception or a timeout becomes a warning (the thread is left to finish on its own)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"bounded:{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        warn_fallback(f"{what} did not finish within {timeout:g} s; continuing without it")
        return False
    if errors:
        warn_fallback(f"{what} failed ({type(errors[0]).__name__}: {errors[0]})")
        return False
    return True


class _ResilientLogging:
    """Mixin over a ``WandbLogger`` class (see :func:`resilient`)."""

    save_dir: str | None

    def __init__(
        self,
        *args: Any,
        min_free_mb: float = 50.0,
        finish_timeout: float = 60.0,
        fallback_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fallback_dir = fallback_dir
        self.min_free_mb = float(min_free_mb)
        self.finish_timeout = float(finish_timeout)
        self.fallback: CSVLogger | None = None
        self.failure: str | None = None
        self._hparams: dict[str, Any] = {}
        self._fallback_broken = False

    # -- failure handling -------------------------------------------------------------------------
    def _fallback_dir(self) -> str:
        return str(self.fallback_dir or self.save_dir or os.getcwd())

    def _fall_back(self, reason: str) -> None:
        if self.fallback is not None or self._fallback_broken:
            return
        self.failure = reason
        where = Path(self._fallback_dir()) / "wandb_fallback"
        warn_fallback(
            f"W&B logging failed during the run ({reason}); logging to CSV in {where} instead"
        )
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            call_with_timeout(
                lambda: wandb.finish(exit_code=1), self.finish_timeout, "wandb.finish"
            )
        try:
            self.fallback = CSVLogger(
                save_dir=self._fallback_dir(), name="wandb_fallback", version=""
            )
            if self._hparams:
                self.fallback.log_hyperparams(self._hparams)
        except Exception as exc:
            self._drop_fallback(exc)

    def _drop_fallback(self, exc: BaseException) -> None:
        self.fallback = None
        self._fallback_broken = True
        warn_fallback(
            f"CSV fallback logging failed too ({type(exc).__name__}: {exc}); "
            "metrics are no longer logged (training continues)"
        )

    def _low_disk(self) -> str | None:
        directory = self.save_dir
        if not directory or not os.path.isdir(directory):
            return None
        free_mb = shutil.disk_usage(directory).free / 2**20
        if free_mb < self.min_free_mb:
            return f"only {free_mb:.1f} MiB free in {directory}"
        return None

    def _guarded(self, name: str, call: Callable[[], Any], on_fallback: Callable[[], Any]) -> None:
        if self.fallback is None and not self._fallback_broken:
            try:
                call()
                return
            except Exception as exc:  # a logging failure must not stop training
                self._fall_back(f"{name}: {type(exc).__name__}: {exc}")
        if self.fallback is not None:
            try:
                on_fallback()
            except Exception as exc:
                self._drop_fallback(exc)

    # -- Logger API -------------------------------------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        parent = super()
        self._hparams = dict(vars(params) if isinstance(params, Namespace) else params)
        self._guarded(
            "log_hyperparams",
            lambda: parent.log_hyperparams(params),  # type: ignore[attr-defined]
            lambda: self.fallback.log_hyperparams(params),  # type: ignore[union-attr]
        )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        parent = super()
        if self.fallback is None and not self._fallback_broken:
            low = self._low_disk()
            if low is not None:
                self._fall_back(low)
        self._guarded(
            "log_metrics",
            lambda: parent.log_metrics(metrics, step),  # type: ignore[attr-defined]
            lambda: self.fallback.log_metrics(dict(metrics), step),  # type: ignore[union-attr]
        )

    @rank_zero_only
    def save(self) -> None:
        parent = super()
        self._guarded(
            "save",
            lambda: parent.save(),  # type: ignore[attr-defined]
            lambda: self.fallback.save(),  # type: ignore[union-attr]
        )

    @rank_zero_only
    def finalize(self, status: str) -> None:
        parent = super()
        self._guarded(
            "finalize",
            lambda: parent.finalize(status),  # type: ignore[attr-defined]
            lambda: self.fallback.finalize(status),  # type: ignore[union-attr]
        )

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        parent = super()
        self._guarded(
            "after_save_checkpoint",
            lambda: parent.after_save_checkpoint(checkpoint_callback),  # type: ignore[attr-defined]
            lambda: None,
        )


@functools.cache
def resilient(base: type) -> type:
    """``base`` (a ``WandbLogger`` class, looked up when the logger is made) with every logging
    call guarded: on a failure, a warning and CSV logging from then on."""
    return type(f"Resilient{base.__name__}", (_ResilientLogging, base), {"__module__": __name__})


ResilientWandbLogger = resilient(WandbLogger)
ResilientWandbLogger.__doc__ = """``WandbLogger`` whose failures switch logging to CSV instead of
stopping the run. Extra options: ``min_free_mb`` (free space its directory must keep; checked at
every ``log_metrics``), ``finish_timeout`` (seconds to wait for ``wandb.finish`` when falling
back), ``fallback_dir`` (where ``wandb_fallback/`` goes; default its own directory).
``fallback`` is the ``CSVLogger`` in use after a failure (None while W&B works)."""
