"""Per-rank diagnostics for checking DDP consistency (a test tool, under ``tests/``).

:class:`RankDiagnostics` writes, for each rank, ``<out_dir>/rank<r>.jsonl`` with one record per
event: SHA-256 fingerprints of every buffer (random-feature matrices W and their ``redraw_step``)
at setup and after every training step, of all gradients just before each optimizer step (after
DDP's all-reduce), of all weights after the step, and the number of samples each evaluation saw
on this rank and summed over ranks. It also saves ``first_step_rank<r>.pt`` (the model state
before the first step, the first batch, and the gradients the optimizer received) so the
gradient averaging can be recomputed independently, and ``writes_rank<r>.json``: every file this
process opened for writing, renamed, created or removed under ``watch_dir`` (via a Python audit
hook, PEP 578), to check that only rank 0 writes logs and checkpoints.

Enable with ``PYTHONPATH=tests`` and
``+callbacks.diagnostics._target_=rank_diagnostics.RankDiagnostics``
(``out_dir`` defaults to ``<run dir>/diagnostics``). Audit hooks cannot be removed, so use it in
dedicated processes (tests, debugging runs), not in long-lived ones.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["RankDiagnostics", "WriteAudit", "tensor_fingerprint"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def tensor_fingerprint(named: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """SHA-256 (first 16 hex digits) of names, shapes, dtypes and bytes of the given tensors."""
    digest = hashlib.sha256()
    for name, tensor in named:
        if tensor is None:
            digest.update(f"{name}:None".encode())
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class WriteAudit:
    """Records file writes under ``root`` (except under ``ignore``) through ``sys.addaudithook``:
    ``open`` for writing, ``os.rename``/``os.replace``, ``os.mkdir``, ``os.remove``, ...
    A hook stays installed for the life of the process; ``stop()`` makes it inert."""

    _EVENTS = frozenset(
        {"open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.symlink", "os.truncate"}
    )

    def __init__(self, root: str | os.PathLike, ignore: str | os.PathLike | None = None) -> None:
        self.root = os.path.realpath(root)
        self.ignore = os.path.realpath(ignore) if ignore else None
        self.events: list[tuple[str, str]] = []
        self.active = True
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _inside(self, raw: Any) -> str | None:
        if isinstance(raw, bytes):
            raw = os.fsdecode(raw)
        if not isinstance(raw, str | os.PathLike):
            return None
        path = os.path.realpath(os.fspath(raw))
        if path != self.root and not path.startswith(self.root + os.sep):
            return None
        if self.ignore and (path == self.ignore or path.startswith(self.ignore + os.sep)):
            return None
        return os.path.relpath(path, self.root)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event not in self._EVENTS or not args:
            return
        if event == "open":
            mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
            writing = (
                any(c in mode for c in "wax+")
                if isinstance(mode, str)
                else bool((flags or 0) & _WRITE_FLAGS)
            )
            if not writing:
                return
        raw = args[1] if event == "os.rename" and len(args) > 1 else args[0]
        rel = self._inside(raw)
        if rel is not None:
            with self._lock:
                self.events.append((event, rel))

    def stop(self) -> list[tuple[str, str]]:
        self.active = False
        return list(self.events)


class RankDiagnostics(Callback):
    """Per-rank fingerprints, evaluation sample counts and file writes (see module docstring)."""

    def __init__(self, out_dir: str, watch_dir: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.audit = WriteAudit(watch_dir, ignore=out_dir) if watch_dir else None
        self.rank = 0
        self._first_state: dict[str, torch.Tensor] | None = None
        self._first_batch: Any = None
        self._grads: str | None = None
        self._counts: dict[str, int] = {}
        self._saved_first = False
        if self.audit is not None:
            atexit.register(self._dump_writes)  # metrics.json etc. are written after teardown

    # -- output -----------------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    @staticmethod
    def _buffers(pl_module: L.LightningModule) -> dict[str, str]:
        return {n: tensor_fingerprint([(n, b)]) for n, b in pl_module.named_buffers()}

    # -- hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.rank = int(trainer.global_rank)
        self._write(
            {
                "event": "setup",
                "stage": stage,
                "world_size": int(trainer.world_size),
                "buffers": self._buffers(pl_module),
                "params": tensor_fingerprint(pl_module.named_parameters()),
            }
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._first_state is None:
            self._first_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            self._first_batch = batch

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        named = [(n, p.grad) for n, p in pl_module.named_parameters()]
        self._grads = tensor_fingerprint(named)
        if not self._saved_first and self._first_state is not None:
            self._saved_first = True
            self.out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "state": self._first_state,
                    "batch": self._first_batch,
                    "grads": {n: g.detach().cpu().clone() for n, g in named if g is not None},
                    "hparams": dict(getattr(pl_module, "hparams", {}) or {}),
                },
                self.out_dir / f"first_step_rank{self.rank}.pt",
            )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        labels = batch.get("labels") if isinstance(batch, dict) else None
        self._write(
            {
                "event": "train_step",
                "step": int(trainer.global_step),
                "batch_idx": batch_idx,
                "samples": int(labels.shape[0]) if labels is not None else None,
                "buffers": self._buffers(pl_module),
                "grads": self._grads,
                "params": tensor_fingerprint(pl_module.named_parameters()),
            }
        )

    def _count(self, stage: str, batch: Any) -> None:
        labels = batch.get("labels") if isinstance(batch, dict) else None
        self._counts[stage] = self._counts.get(stage, 0) + (
            int(labels.shape[0]) if labels is not None else 0
        )

    def _report(self, trainer: L.Trainer, stage: str) -> None:
        local = self._counts.pop(stage, 0)
        total = trainer.strategy.reduce(torch.tensor(float(local)), reduce_op="sum")
        self._write(
            {
                "event": f"{stage}_end",
                "step": int(trainer.global_step),
                "sanity": bool(trainer.sanity_checking),
                "local_samples": local,
                "total_samples": int(total.item()),
            }
        )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._count("validation", batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "validation")

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._count("test", batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "test")

    def _dump_writes(self) -> None:
        if self.audit is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        events = sorted({tuple(e) for e in self.audit.events})
        path = self.out_dir / f"writes_rank{self.rank}.json"
        path.write_text(json.dumps(events, indent=1) + "\n")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._dump_writes()
