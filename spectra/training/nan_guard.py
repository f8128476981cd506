"""Stop a run at the first non-finite loss, gradient or weight — before the update is applied —
with a message that names the step and the layer.

Checks (one device sync each): after backward and before the optimizer step
(``on_before_optimizer_step``, i.e. before gradient clipping and the update) every gradient;
after the step, the loss and every weight. On a failure the batch is replayed once (eval mode,
no grad, forward hooks on every submodule) to find the first module whose output is non-finite
— the layer where the NaN/Inf appears — and :class:`NonFiniteError` is raised, so the optimizer
never applies a garbage update. Under fp16 mixed precision a ``GradScaler`` skips steps with
overflowing gradients by design; those are tolerated up to ``max_skipped_steps`` in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = ["NaNGuard", "NonFiniteError", "first_nonfinite_module", "nonfinite_names"]

log = logging.getLogger(__name__)

_ADVICE = (
    "try a lower optim.lr, gradient clipping (trainer.gradient_clip_val), "
    "trainer.precision=32-true, or a positive feature map (posrf, oprf, saderf)"
)


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in the loss, a gradient or a weight; the message names the step and layer."""


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor | None]]) -> list[str]:
    """Names of the tensors that hold a NaN or Inf.

    Fast path: one fused norm per tensor (``torch._foreach_norm``, as gradient clipping uses) and
    one device sync — a finite norm proves every element finite. Only tensors whose norm is not
    finite (a NaN/Inf, or a finite tensor whose norm overflows) get the exact element check.
    """
    items = [(n, t.detach()) for n, t in named if t is not None and t.is_floating_point()]
    if not items:
        return []
    tensors = [t for _, t in items]
    foreach_norm = getattr(torch, "_foreach_norm", None)
    norms = foreach_norm(tensors) if foreach_norm is not None else [t.norm() for t in tensors]
    suspicious = ~torch.isfinite(torch.stack([n.float() for n in norms]))
    if not bool(suspicious.any()):
        return []
    return [
        name
        for (name, t), flag in zip(items, suspicious.tolist(), strict=True)
        if flag and not bool(torch.isfinite(t).all())
    ]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


def first_nonfinite_module(model: nn.Module, run: Callable[[], Any]) -> tuple[str, str] | None:
    """Call ``run()`` (a forward pass of ``model``) with hooks on every submodule; return the
    (qualified name, class name) of the first module — in completion order, so the innermost —
    whose output holds a NaN or Inf, or None if every output is finite."""
    found: list[tuple[str, str]] = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if found:
                return
            for t in _tensors(output):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    found.append((name, type(module).__name__))
                    return

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _logged_losses(trainer: Any) -> str:
    """`` (logged train/loss = nan)`` for every non-finite logged metric with 'loss' in its name."""
    metrics = getattr(trainer, "callback_metrics", None) or {}
    bad = []
    for key, value in metrics.items():
        if "loss" in key and isinstance(value, torch.Tensor) and value.numel() == 1:
            if not bool(torch.isfinite(value)):
                bad.append(f"{key} = {value.item()}")
    return f" (logged {', '.join(bad)})" if bad else ""


def _owner(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class NaNGuard(Callback):
    """Raise :class:`NonFiniteError` at the first non-finite gradient (before the update), loss or
    weight, naming the step and the layer. Step N is the N-th optimizer step (counted from 1, as
    ``trainer.global_step`` after it; metrics.csv logs its loss at step N-1).

    ``check_grads`` / ``check_weights``: which checks run every step (the loss is always
    checked); ``locate``: replay the batch to find the first layer with a non-finite output;
    ``max_skipped_steps``: consecutive overflow steps tolerated while a fp16 ``GradScaler`` is
    active (it skips them itself).
    """

    def __init__(
        self,
        check_grads: bool = True,
        check_weights: bool = True,
        locate: bool = True,
        max_skipped_steps: int = 10,
    ) -> None:
        if (
            isinstance(max_skipped_steps, bool)
            or not isinstance(max_skipped_steps, int)
            or (max_skipped_steps < 0)
        ):
            raise ValueError(f"max_skipped_steps must be an int >= 0, got {max_skipped_steps!r}")
        self.check_grads = check_grads
        self.check_weights = check_weights
        self.locate = locate
        self.max_skipped_steps = max_skipped_steps
        self.skipped = 0
        self._batch: Any = None
        self._batch_idx: int | None = None

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _scaler_active(trainer: L.Trainer) -> bool:
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        return scaler is not None and bool(getattr(scaler, "is_enabled", lambda: True)())

    def _where(self, trainer: Any, batch_idx: int | None = None, pending: bool = False) -> str:
        """``step N (epoch e, batch b)``: N counts optimizer steps from 1 (``trainer.global_step``
        after the step; before it, while the update is ``pending``, global_step + 1)."""
        parts = [f"step {int(trainer.global_step) + int(pending)}"]
        epoch = getattr(trainer, "current_epoch", None)
        if epoch is not None and batch_idx is not None:
            parts.append(f"(epoch {epoch}, batch {batch_idx})")
        return " ".join(parts)

    def _locate(self, pl_module: L.LightningModule | None) -> str:
        if not self.locate or pl_module is None or self._batch is None:
            return ""
        was_training = pl_module.training
        pl_module.eval()  # no redraws, no dropout: the replay changes no state
        try:
            with torch.no_grad():
                hit = first_nonfinite_module(pl_module, lambda: pl_module(self._batch))
        except Exception as exc:  # the replay is a diagnosis, never a second failure
            return f" (could not replay the batch to locate the layer: {exc})"
        finally:
            pl_module.train(was_training)
        if hit is None:
            return (
                " Replaying the batch gives finite activations everywhere: the NaN/Inf arises "
                "in the backward pass."
            )
        name, kind = hit
        return f" First non-finite activation: output of layer {name} ({kind})."

    def _fail(
        self,
        what: str,
        trainer: Any,
        pl_module: L.LightningModule | None,
        names: list[str],
        batch_idx: int | None,
        applied: bool,
    ) -> None:
        """Raise :class:`NonFiniteError` for ``names`` (parameters) at the current step."""
        layers = list(dict.fromkeys(_owner(n) for n in names))
        if len(layers) == 1:
            shown = f"layer {layers[0]}"
        else:
            shown = (
                f"{len(layers)} layers: "
                + ", ".join(layers[:4])
                + (", …" if len(layers) > 4 else "")
            )
        located = self._locate(pl_module)
        status = "the update was applied" if applied else "the update was not applied"
        raise NonFiniteError(
            f"non-finite {what} at {self._where(trainer, batch_idx, pending=not applied)} "
            f"in {shown}"
            f"{_logged_losses(trainer)}.{located} Stopped ({status}); {_ADVICE}"
        )

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch
        self._batch_idx = batch_idx

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.check_grads:
            return
        bad = nonfinite_names((n, p.grad) for n, p in pl_module.named_parameters())
        if not bad:
            self.skipped = 0
            return
        if self._scaler_active(trainer) and self.skipped < self.max_skipped_steps:
            self.skipped += 1  # fp16 overflow: the GradScaler skips this update itself
            log.info(
                "fp16 gradient overflow at step %d (skipped by the GradScaler)", trainer.global_step
            )
            return
        self._fail("gradients", trainer, pl_module, bad, self._batch_idx, False)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            value = loss.detach().float().reshape(-1)[0].item()
            located = self._locate(pl_module)
            raise NonFiniteError(
                f"non-finite training loss {value} at {self._where(trainer, batch_idx)}."
                f"{located} Stopped; {_ADVICE}"
            )
        if self.check_weights and pl_module is not None:
            bad = nonfinite_names(pl_module.named_parameters())
            if bad:
                self._fail("weights", trainer, pl_module, bad, batch_idx, True)
        self._batch = None
