"""The LightningModule: an LRA model, cross-entropy, accuracy, and the configured optimizer and
learning-rate schedule.

``cfg.optim`` and ``cfg.scheduler`` are ``_partial_`` configs (``conf/optim/``,
``conf/scheduler/``) instantiated with ``hydra.utils.instantiate``: the optimizer is called with
the parameters, the schedule as ``(optimizer, total_steps=N)`` and stepped every training step.
The defaults follow the Skyformer / Spectraformer LRA setup (arXiv 2111.00035, 2405.15310):
AdamW (eps 1e-6) and :func:`one_cycle` (``OneCycleLR`` with ``pct_start = warmup_steps /
total_steps``, linear annealing); gradient clipping is the Trainer's ``gradient_clip_val``.
The whole resolved run config is stored in the checkpoint (``hparams.cfg``), so a checkpoint
rebuilds its own model (:meth:`LRAModule.load_from_checkpoint`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from spectra.training.attention import attention_spec
from spectra.training.data import task_spec
from spectra.training.models import DualEncoderClassifier, LRAEncoder, SequenceClassifier

__all__ = ["LRAModule", "build_model", "count_parameters", "one_cycle"]

_HEADS: dict[bool, type[nn.Module]] = {False: SequenceClassifier, True: DualEncoderClassifier}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def build_model(cfg: Mapping[str, Any], *, max_positions: int | None = None) -> nn.Module:
    """The model of a run config: encoder from ``cfg.model`` with the attention of
    ``cfg.attention`` (via ``ATTENTIONS.build``), head by the task family (``TaskSpec.pair``).

    Attention names are checked here, so a bad name fails before any data is loaded.
    """
    spec = task_spec(cfg["task"]["name"])
    attention = attention_spec(cfg["attention"])
    model_cfg = dict(cfg["model"])
    allowed = {
        "embed_dim",
        "ffn_dim",
        "num_layers",
        "num_heads",
        "head_dim",
        "dropout",
        "head_hidden_dim",
        "max_positions",
        "pooling",
        "zero_padded_keys",
    }
    unknown = sorted(set(model_cfg) - allowed)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; allowed: {sorted(allowed)}")
    if attention.head_dim != model_cfg.get("head_dim"):
        raise ValueError(
            f"attention.head_dim={attention.head_dim} differs from model.head_dim="
            f"{model_cfg.get('head_dim')}: the attention works on the model's heads, so set "
            "model.head_dim instead (attention presets read head_dim: ${model.head_dim})"
        )
    positions = model_cfg.get("max_positions") or max_positions or spec.max_length
    encoder = LRAEncoder(
        vocab_size=spec.vocab_size,
        max_positions=int(positions),
        embed_dim=model_cfg["embed_dim"],
        ffn_dim=model_cfg["ffn_dim"],
        num_layers=model_cfg["num_layers"],
        num_heads=model_cfg["num_heads"],
        head_dim=attention.head_dim,
        attention_factory=attention.factory(),
        dropout=model_cfg.get("dropout", 0.1),
        pooling=model_cfg.get("pooling") or "real_tokens",
        zero_padded_keys=bool(model_cfg.get("zero_padded_keys", False)),
    )
    hidden = model_cfg.get("head_hidden_dim") or model_cfg["ffn_dim"]
    return _HEADS[bool(spec.pair)](encoder, num_classes=spec.num_classes, hidden_dim=hidden)


def warmup_steps(requested: int, total: int) -> int:
    """Warm-up length used by OneCycleLR: ``requested``, capped at half the run; a one-step
    warm-up becomes none (OneCycleLR divides by zero on a phase of a single step)."""
    if requested < 0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0, got {requested}")
    steps = min(requested, total // 2)
    return 0 if steps == 1 else steps


_capped_warmup = warmup_steps  # one_cycle's argument of the same name shadows it


def one_cycle(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, **options: Any
) -> torch.optim.lr_scheduler.OneCycleLR:
    """``OneCycleLR`` up to each parameter group's lr over ``total_steps``, with
    ``pct_start = warmup_steps / total_steps`` (warm-up capped as :func:`warmup_steps` says);
    ``options`` are OneCycleLR's (``anneal_strategy``, ``div_factor``, ...)."""
    warmup = _capped_warmup(int(warmup_steps), total_steps)
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=warmup / total_steps,
        **options,
    )


class LRAModule(L.LightningModule):
    """Trains and evaluates :func:`build_model` of a resolved run config (a plain dict).

    Logs ``{train,val,test}/loss`` and ``/acc`` (``val`` and ``test`` synchronized across DDP
    ranks), ``val/acc_best``, and the parameter counts.
    """

    flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor; not measured

    def __init__(self, cfg: dict[str, Any], max_positions: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg, "max_positions": max_positions}, logger=False)
        self.cfg = cfg
        self.model = build_model(cfg, max_positions=max_positions)
        num_classes = task_spec(cfg["task"]["name"]).num_classes
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.param_counts = count_parameters(self.model)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return loss, logits.argmax(dim=-1)

    @staticmethod
    def _batch_size(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].shape[0])

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds = self._step(batch)
        self.train_acc(preds, batch["labels"])
        bs = self._batch_size(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def on_train_start(self) -> None:
        self.val_acc_best.reset()

    # -- evaluation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds = self._step(batch)
        self.val_loss(loss, weight=self._batch_size(batch))
        self.val_acc(preds, batch["labels"])
        bs = self._batch_size(batch)
        self.log(
            "val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs
        )
        self.log(
            "val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs
        )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds = self._step(batch)
        self.test_loss(loss, weight=self._batch_size(batch))
        self.test_acc(preds, batch["labels"])
        bs = self._batch_size(batch)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True, batch_size=bs)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, batch_size=bs)

    # -- optimization ---------------------------------------------------------------------------
    def total_steps(self) -> int:
        """Length of the one-cycle schedule: ``trainer.max_steps`` if set, else the Trainer's
        estimate; at least 2 (OneCycleLR needs two points)."""
        max_steps = self.trainer.max_steps if self.trainer is not None else -1
        if max_steps is None or max_steps < 0:
            estimate = self.trainer.estimated_stepping_batches
            if not math.isfinite(estimate):
                raise ValueError(
                    "the one-cycle schedule needs a finite length: set trainer.max_steps"
                )
            max_steps = int(estimate)
        return max(int(max_steps), 2)

    def configure_optimizers(self) -> dict[str, Any]:
        """``instantiate(cfg.optim)(parameters)`` and ``instantiate(cfg.scheduler)(optimizer,
        total_steps=N)``, the schedule stepped every training step."""
        optimizer = instantiate(self.cfg["optim"])(self.parameters())
        scheduler = instantiate(self.cfg["scheduler"])(optimizer, total_steps=self.total_steps())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
