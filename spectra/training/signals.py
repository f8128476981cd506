"""Ctrl-C (SIGINT), SIGTERM and SIGHUP: save ``last.ckpt`` after the current step, record the run
as ``interrupted`` and exit ``128 + signal`` with the command that resumes it.

Own code, because Lightning 2.6 (2.6.6, the newest release, checked) does not do this: its SIGTERM
handling (``trainer.received_sigterm`` → ``SIGTERMException``) saves nothing and ends the process
with exit status 0, so a scheduler takes the stopped job for a finished one; Ctrl-C becomes a
``KeyboardInterrupt`` raised mid-step; SIGHUP (the terminal closing) kills the process; and under
DDP its broadcast from inside the signal handler pairs with other collectives, so a SIGTERM sent
to rank 0 hangs the ranks until the process-group timeout (``trainer=ddp_sim``). Its
``OnExceptionCheckpoint`` saves after *any* exception, also mid-step, and its mere presence turns
every ``fit()`` into ``fit(ckpt_path="last")``.

:class:`GracefulShutdown` replaces the handlers of these signals while ``Trainer.fit`` trains
(Lightning restores the previous ones when ``fit`` ends). A signal only sets a flag; at the end of
every training step the ranks all-reduce it, so all of them stop after the same step even when
only one was signalled; then ``<dirpath>/last.ckpt`` is written (where ``ckpt_path=last`` finds
it), ``<run_dir>/status.json`` says ``interrupted`` with the step, the checkpoint and the resume
command (:func:`resume_command`), and :class:`TrainingInterrupted` — a ``SystemExit`` with code
130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP), the shell's convention — ends the run without a
traceback and without the test phase; Lightning finalizes the loggers on the way out. A second
signal before the stop falls back to the default behaviour (immediate ``KeyboardInterrupt`` /
termination).
"""

from __future__ import annotations

import logging
import shlex
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from spectra.sweeps.status import INTERRUPTED, write_status

__all__ = ["STOP_SIGNALS", "GracefulShutdown", "TrainingInterrupted", "resume_command"]

log = logging.getLogger(__name__)

#: The signals that stop a run gracefully (SIGHUP: the terminal closed; not on Windows).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def resume_command(run_dir: str | Path) -> str:
    """The shell command that resumes the run in ``run_dir``: ``python train.py <its overrides>
    ckpt_path=last hydra.run.dir=<run_dir>`` (``<same overrides>`` outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = ["<same overrides>"]
    if HydraConfig.initialized():
        dropped = ("ckpt_path=", "hydra.run.dir=")
        task = HydraConfig.get().overrides.task
        overrides = [shlex.quote(str(o)) for o in task if not str(o).startswith(dropped)]
    run_dir_override = shlex.quote(f"hydra.run.dir={run_dir}")
    return " ".join(["python train.py", *overrides, "ckpt_path=last", run_dir_override])


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; exit code 128 + signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str, resume: str = "") -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.step = step
        self.checkpoint = checkpoint
        self.resume = resume

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        where = f"stopped at step {self.step}, saved {self.checkpoint}"
        return f"{name} received: {where}; exit code {self.code}"


class GracefulShutdown(Callback):
    """On SIGINT/SIGTERM/SIGHUP: save ``<dirpath>/last.ckpt`` at the end of the current step,
    write ``<run_dir>/status.json`` (``interrupted``; not when ``run_dir`` is None), then exit
    ``128 + signum`` (see the module docstring)."""

    def __init__(self, dirpath: str, run_dir: str | None = None) -> None:
        self.path = str(Path(dirpath) / "last.ckpt")
        self.run_dir = run_dir
        self.received: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # second signal: give up waiting for the step to end
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.received = signum
        log.warning(
            "%s received: stopping after the current training step and saving a checkpoint "
            "(send it again to stop immediately, without a checkpoint)",
            signal.Signals(signum).name,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its own SIGTERM handler, which this one replaces.
        self.received = None
        for signum in STOP_SIGNALS:
            try:
                signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                log.warning("GracefulShutdown: not in the main thread, no signal handlers")
                return

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        signum = int(self.received or 0)  # the largest signal number any rank received
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        if not signum:
            return
        trainer.save_checkpoint(self.path)  # every rank calls it, rank zero writes
        step = int(trainer.global_step)
        run_dir = self.run_dir or Path(self.path).parent.parent
        stop = TrainingInterrupted(signum, step, self.path, resume_command(run_dir))
        if trainer.is_global_zero:
            if self.run_dir is not None:
                write_status(self.run_dir, INTERRUPTED, {
                    "signal": signal.Signals(signum).name, "step": step,
                    "checkpoint": self.path, "resume_command": stop.resume,
                })
            log.warning("%s. Resume with:\n  %s", stop, stop.resume)
        raise stop
