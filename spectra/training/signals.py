"""Ctrl-C (SIGINT) and SIGTERM: save ``last.ckpt`` and exit cleanly instead of dying mid-step.

:class:`GracefulShutdown` replaces the SIGINT/SIGTERM handlers while ``Trainer.fit`` trains (and
restores them afterwards). A signal only sets a flag; at the end of the current training step
every DDP rank learns of it (one all-reduce), the checkpoint ``<ModelCheckpoint dir>/last.ckpt``
is written (atomically, see :mod:`spectra.training.checkpointing`), loggers are flushed, and
:class:`TrainingInterrupted` — a ``SystemExit`` with code ``128 + signal number`` (130 for SIGINT,
143 for SIGTERM, the shell's convention) — ends the process without a traceback and without the
test phase. ``python train.py … ckpt_path=last`` (same run directory) resumes from that checkpoint.
A second signal before the stop falls back to the default behaviour (immediate
``KeyboardInterrupt`` / termination).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from spectra.training.checkpointing import save_last_checkpoint

__all__ = ["GracefulShutdown", "TrainingInterrupted"]

log = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; exit code 128 + signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.step = step
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        where = f"saved {self.checkpoint}" if self.checkpoint else "no checkpoint saved"
        return f"{name} received: stopped at step {self.step}, {where}; exit code {self.code}"


def _signal_numbers(names: Any) -> list[int]:
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        try:
            out.append(int(signal.Signals[str(name).upper()]))
        except KeyError:
            raise ValueError(
                f"unknown signal {name!r}; use names such as SIGINT, SIGTERM, SIGUSR1"
            ) from None
    return out


class GracefulShutdown(Callback):
    """On SIGINT/SIGTERM: checkpoint at the end of the current step, then exit ``128 + signum``.

    ``signals``: the signal names to handle. ``dirpath``: where to write ``last.ckpt`` when the
    trainer has no ``ModelCheckpoint`` (default ``<default_root_dir>/checkpoints``).
    """

    def __init__(self, signals: Any = ("SIGINT", "SIGTERM"), dirpath: str | None = None) -> None:
        self.signals = _signal_numbers(signals)
        self.dirpath = dirpath
        self.received: int | None = None
        self.checkpoint_path: str | None = None
        self._previous: dict[int, Any] = {}

    # -- handlers ---------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # second signal: give up waiting for the step to end
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.received = signum
        log.warning(
            "%s received: stopping after the current training step and saving a checkpoint "
            "(send it again to stop immediately, without a checkpoint)",
            signal.Signals(signum).name,
        )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("GracefulShutdown: not in the main thread, signal handlers not installed")
            return
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            try:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, TypeError):  # not the main thread / not restorable
                pass
        self._previous.clear()

    # -- Lightning hooks --------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its own SIGTERM handler (which would raise mid-step).
        self.received = None
        self._install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The signal received by any rank (the largest number), 0 if none: every rank must
        stop at the same step."""
        signum = int(self.received or 0)
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        path = save_last_checkpoint(trainer, self.dirpath)  # rank zero writes
        for logger in trainer.loggers:
            logger.save()
        self.checkpoint_path = str(path)
        trainer.should_stop = True
        self._restore()
        interrupted = TrainingInterrupted(signum, int(trainer.global_step), str(path))
        if trainer.is_global_zero:
            log.warning("%s. Resume with ckpt_path=last (same run directory).", interrupted)
        raise interrupted
