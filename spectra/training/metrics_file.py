"""``metrics.json``: a callback that collects a run's metrics and writes them after each stage."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from spectra import strict_json
from spectra.training.callbacks import FeatureSyncCheck, peak_memory_mb, reset_peak_memory

__all__ = ["MetricsFile", "write_json", "write_yaml"]

log = logging.getLogger(__name__)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
        for k, v in metrics.items()
    }


@rank_zero_only
def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(data))


@rank_zero_only
def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Standard JSON: non-finite numbers (e.g. ``objective`` without validation) become null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(strict_json.dumps(data, indent=2, sort_keys=True) + "\n")


def _wandb_info(loggers: list[Logger]) -> dict[str, Any]:
    """Group, run id and directory of an active W&B run (rank zero), for the metrics file."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger) or getattr(lg, "fallback", None) is not None:
            continue  # not W&B, or W&B failed and logs to CSV now
        run = lg.experiment
        if getattr(run, "id", None) is None:  # a rank > 0 placeholder
            continue
        return {
            "logger/wandb_group": run.group,
            "logger/wandb_id": run.id,
            "logger/wandb_dir": str(run.dir),
        }
    return {}


class MetricsFile(Callback):
    """Collects a run's metrics and writes them to ``path`` (rank zero) at the end of every
    stage (``fit``, ``test``, ``validate``), logging the numbers as ``summary/*`` too.

    After ``fit``: the last logged metrics, ``objective`` (best validation accuracy; NaN — null
    in the file — when no validation ran), checkpoint paths, step, world size, parameter counts,
    data sizes, ``perf/mean_step_time_s`` and ``perf/mean_tokens_per_s`` (from what Lightning's
    ``ThroughputMonitor`` logged: ``train/time`` — training time without validation — per step of
    ``train/batches``, ``train/lengths`` real tokens on every rank per second; from the first
    logged step on, excluding the warm-up before it, when there are two logged steps),
    ``perf/peak_mem_mb`` (since ``fit`` started),
    the DDP feature-sync counts and the W&B run. After ``test``/``validate``: their metrics and
    the checkpoint they used. ``fields`` are written as given; ``wall_time_s`` counts from here.
    """

    def __init__(self, path: str | os.PathLike, **fields: Any) -> None:
        self.path = Path(path)
        self.metrics: dict[str, Any] = dict(fields)
        self._start = time.perf_counter()
        self._first: dict[str, Any] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reset_peak_memory(pl_module.device)  # each job of an in-process multirun has its own peak

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._first is None and "train/time" in trainer.logged_metrics:
            self._first = _scalars(trainer.logged_metrics)  # the first logged step: warm-up

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = self.metrics
        m.update(_scalars(trainer.callback_metrics))
        best = m.get("val/acc_best", m.get("val/acc"))
        m["objective"] = float(best) if best is not None else math.nan
        if trainer.checkpoint_callback is not None:
            m["best_model_path"] = getattr(trainer.checkpoint_callback, "best_model_path", "")
            m["last_model_path"] = getattr(trainer.checkpoint_callback, "last_model_path", "")
        last = _scalars(trainer.logged_metrics)
        if "train/time" in last:  # Lightning's ThroughputMonitor ran (and a logger)
            first = self._first or {}
            if first.get("train/batches", 0) >= last["train/batches"]:
                first = {}  # one logged step: count from the start
            seconds = last["train/time"] - first.get("train/time", 0.0)
            steps = last["train/batches"] - first.get("train/batches", 0)
            tokens = last.get("train/lengths", 0) - first.get("train/lengths", 0)
            m["perf/mean_step_time_s"] = seconds / steps
            m["perf/mean_tokens_per_s"] = tokens * trainer.world_size / seconds
        m["perf/peak_mem_mb"] = peak_memory_mb(pl_module.device)
        sync = next((c for c in trainer.callbacks if isinstance(c, FeatureSyncCheck)), None)
        if sync is not None:
            m["feature_sync/ranks_checked"] = sync.ranks_checked
            m["feature_sync/checks"] = sync.checks

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics["test/ckpt_path"] = str(trainer.ckpt_path or "")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        m = self.metrics
        if stage != "fit":
            m.update(_scalars(trainer.callback_metrics))
        if "objective" in m and math.isnan(m["objective"]) and "val/acc" in m:
            m["objective"] = float(m["val/acc"])  # validated after fit: the final weights
        params = getattr(pl_module, "param_counts", None)
        if params:
            m["model/params_total"] = params["total"]
            m["model/params_trainable"] = params["trainable"]
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "dataset_stats"):
            m.update(datamodule.dataset_stats())
        m["world_size"] = int(trainer.world_size)
        m["global_step"] = int(trainer.global_step)
        m["wall_time_s"] = time.perf_counter() - self._start
        m.update(_wandb_info(trainer.loggers))
        numbers = {f"summary/{k}": v for k, v in m.items() if isinstance(v, int | float)}
        for lg in trainer.loggers:
            lg.log_metrics(numbers, step=int(trainer.global_step))
            lg.save()
        write_json(self.path, m)
        if trainer.is_global_zero:
            log.info("metrics: %s", json.dumps(m, default=str))
