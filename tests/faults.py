"""Deliberate faults, for testing that runs survive them (fault injection, "chaos" testing).
A test tool: it lives under ``tests/``, so the command line needs ``PYTHONPATH=tests``.

:class:`FaultInjector` is a callback that, at one training step, sends a real signal to its own
process (``SIGKILL`` = ``kill -9``, ``SIGINT`` = Ctrl-C, ``SIGTERM`` = a scheduler's stop), makes
one layer's output NaN, or raises. Enable it from the command line, e.g.::

    PYTHONPATH=tests python train.py +callbacks.fault._target_=faults.FaultInjector \\
        +callbacks.fault.step=8 +callbacks.fault.kind=signal +callbacks.fault.signal=SIGKILL

Steps count optimizer steps from 1: ``step=8`` acts during the 8th step (``nan_output``) or right
after it, before that step's checkpoint callbacks run (``signal``, ``raise``). ``once_marker``
(a file path) makes the fault happen in one process only: the first one creates the file, a
resumed run sees it and trains on undisturbed.
"""

from __future__ import annotations

import os
import signal as _signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.hooks import RemovableHandle

__all__ = ["FaultInjector", "InjectedFault"]

_KINDS = ("signal", "nan_output", "raise")  # not "nan": YAML would read a float


class InjectedFault(RuntimeError):
    """The exception of ``FaultInjector(kind="raise")``."""


class FaultInjector(Callback):
    """One fault at training step ``step`` (1-based). ``kind``: ``signal`` (send ``signal`` to
    this process after the step), ``nan_output`` (the output of submodule ``module`` of the
    LightningModule is NaN during the step's forward), or ``raise`` (:class:`InjectedFault`).
    ``rank``: only on this DDP rank (default: every rank)."""

    def __init__(
        self,
        step: int,
        kind: str = "signal",
        signal: str = "SIGKILL",
        module: str | None = None,
        once_marker: str | None = None,
        rank: int | None = None,
    ) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"FaultInjector step must be an int >= 1, got {step!r}")
        if kind not in _KINDS:
            raise ValueError(f"FaultInjector kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if kind == "nan_output" and not module:
            raise ValueError("FaultInjector(kind='nan_output') needs module=<submodule name>")
        try:
            self.signum = int(_signal.Signals[str(signal).upper()])
        except KeyError:
            raise ValueError(f"unknown signal {signal!r}; e.g. SIGKILL, SIGINT, SIGTERM") from None
        self.step = step
        self.kind = kind
        self.module = module
        self.once_marker = Path(once_marker) if once_marker else None
        self.rank = rank
        self._handle: RemovableHandle | None = None

    def _armed(self, trainer: L.Trainer) -> bool:
        if self.rank is not None and int(trainer.global_rank) != self.rank:
            return False
        if self.once_marker is None:
            return True
        if self.once_marker.exists():
            return False
        self.once_marker.parent.mkdir(parents=True, exist_ok=True)
        self.once_marker.write_text(f"fault injected by pid {os.getpid()}\n")
        return True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (
            self.kind != "nan_output"
            or trainer.global_step + 1 != self.step
            or not self._armed(trainer)
        ):
            return
        target = pl_module.get_submodule(str(self.module))

        def poison(module: torch.nn.Module, args: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return output * float("nan")
            return output

        self._handle = target.register_forward_hook(poison)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if trainer.global_step != self.step or self.kind == "nan_output":
            return
        if not self._armed(trainer):
            return
        if self.kind == "raise":
            raise InjectedFault(f"fault injected after step {self.step}")
        os.kill(os.getpid(), self.signum)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
