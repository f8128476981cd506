"""``train(cfg)`` and ``evaluate(cfg)``: what ``train.py`` and ``eval.py`` run.

Order of a training run: seed everything → resolve the config → build the data module (checks
the task name and options; loads nothing) → build the model (checks every component name through
the registries; loads nothing) → loggers and callbacks → ``Trainer.fit`` (data is prepared and
loaded here) → ``Trainer.test`` on the best checkpoint. ``train`` returns the metrics, with
``objective`` = best validation accuracy (for sweepers), and writes them to
``<run dir>/metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spectra import strict_json
from spectra.training.attention import attention_spec
from spectra.training.callbacks import FeatureSyncCheck, ThroughputMonitor
from spectra.training.checkpointing import load_checkpoint_file, with_atomic_checkpoint_io
from spectra.training.data import datamodule_for
from spectra.training.loggers import clean_tags, finish_wandb
from spectra.training.module import LRAModule
from spectra.training.protocol import apply_protocol

__all__ = ["evaluate", "run_name", "run_tags", "train"]

log = logging.getLogger(__name__)


# -- names and tags ------------------------------------------------------------------------------
def run_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Tags from the composed config: task, attention and its components, m."""
    spec = attention_spec(cfg["attention"])
    tags = [f"task={cfg['task']['name']}"]
    tags += [f"{key}={value}" for key, value in spec.tags().items()]
    return clean_tags(tags)


def run_name(cfg: Mapping[str, Any]) -> str:
    """``<task>.<attention>[.<component>…][.m<m>].s<seed>``, e.g. ``lra_text.random_features.
    orthogonal.saderf.m128.s0``."""
    spec = attention_spec(cfg["attention"])
    parts = [str(cfg["task"]["name"]), *map(str, spec.tags().values())]
    if spec.options.get("num_features") is not None:
        parts[-1] = f"m{parts[-1]}"
    parts.append(f"s{cfg.get('seed', 0)}")
    return ".".join(parts)


def _fill_run_identity(cfg: DictConfig) -> None:
    """Set ``run_name`` (if null) and prepend the automatic tags to ``tags`` (plus
    ``protocol=<name>`` when the run does not use the default recipe)."""
    with open_dict(cfg):
        if cfg.get("run_name") is None:
            cfg.run_name = run_name(cfg)
        protocol = (cfg.get("protocol") or {}).get("name", "default")
        extra = [] if protocol == "default" else [f"protocol={protocol}"]
        cfg.tags = clean_tags([*run_tags(cfg), *extra, *(cfg.get("tags") or [])])


def _one_console_handler() -> None:
    """Lightning's top-level logger prints through its own handler *and* propagates; under Hydra
    (whose job logging configures the root logger) every message would print twice."""
    if not logging.getLogger().handlers:
        return
    lightning_log = logging.getLogger("lightning")
    for handler in list(lightning_log.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_log.removeHandler(handler)


def _set_threads(num_threads: Any) -> None:
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or null, got {num_threads!r}")
    torch.set_num_threads(num_threads)


# -- building blocks -----------------------------------------------------------------------------
def _instantiate_all(node: Any, kind: str) -> list[Any]:
    """Instantiate every non-null ``_target_`` entry of a ``callbacks`` / ``logger`` mapping."""
    out: list[Any] = []
    if not node:
        return out
    for key, value in node.items():
        if value is None:
            continue
        if not (isinstance(value, Mapping | DictConfig) and "_target_" in value):
            raise ValueError(f"{kind}.{key} must be a mapping with a _target_, got {value!r}")
        out.append(instantiate(value))
    return out


def _prepare_ddp_relaunch(cfg: DictConfig) -> None:
    """Make Lightning's DDP subprocess launcher re-run *this* Hydra job on the other ranks.

    Lightning re-invokes ``sys.argv`` with ``hydra.run.dir=<HydraConfig run.dir>``. In a
    multirun, ``sys.argv`` holds the whole sweep (``-m a=x,y``) and ``run.dir`` is not the job's
    directory; so rewrite both to the current job: its own overrides and its output directory.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hc = HydraConfig.instance().cfg
    job_overrides = [str(o) for o in hc.hydra.overrides.task]
    sys.argv = [sys.argv[0], *job_overrides]
    with read_write(hc.hydra.run):
        hc.hydra.run.dir = str(hc.hydra.runtime.output_dir)


def _seed(cfg: DictConfig) -> int:
    """``cfg.seed`` as an int; anything else is a clear ``ValueError``."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return seed


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    return {k: v for k, v in kwargs.items() if v is not None or k == "check_val_every_n_epoch"}


def _as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


@rank_zero_only
def _write_json(path: Path, data: Mapping[str, Any]) -> None:
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


def _log_config(loggers: list[Logger], container: dict[str, Any], extra: dict[str, Any]) -> None:
    for lg in loggers:
        lg.log_hyperparams({**container, **extra})


# -- train ---------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (``cfg.train``) and/or test (``cfg.test``) one run; returns its metrics.

    The returned dict has ``objective`` (best validation accuracy; NaN when no validation ran,
    null in metrics.json), the last logged metrics, ``test/acc`` when tested, parameter counts,
    step, wall time and checkpoint paths.
    """
    start = time.perf_counter()
    _one_console_handler()
    _set_threads(cfg.get("num_threads"))
    protocol_changes = apply_protocol(cfg)  # recipe keys -> task/model edits (checked here)
    _fill_run_identity(cfg)
    L.seed_everything(_seed(cfg), workers=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    log.info("run %s\n%s", cfg.run_name, OmegaConf.to_yaml(container))
    if protocol_changes:
        log.info("protocol %s set: %s", cfg.protocol.name, protocol_changes)

    # Fail fast: task name/options, then every component name, before any data is loaded.
    datamodule = datamodule_for(container["task"], seed=int(cfg.seed))
    module = LRAModule(container, max_positions=datamodule.max_positions)

    if not cfg.train and not cfg.test:
        raise ValueError("nothing to do: both train=false and test=false")
    if not cfg.train and not cfg.ckpt_path:
        raise ValueError("train=false test=true needs ckpt_path=<checkpoint to evaluate>")

    _prepare_ddp_relaunch(cfg)
    env_before = {key: os.environ.get(key) for key in _DIST_ENV}
    loggers: list[Logger] = []
    try:
        loggers = _instantiate_all(cfg.get("logger"), "logger")
        callbacks: list[Callback] = _instantiate_all(cfg.get("callbacks"), "callbacks")
        if not loggers:  # `~logger`: LearningRateMonitor refuses to run without a logger
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer = L.Trainer(
            **with_atomic_checkpoint_io(_trainer_kwargs(cfg)),  # crash-safe checkpoint writes
            logger=loggers or False,
            callbacks=callbacks,
        )
        params = module.param_counts
        _log_config(
            loggers,
            container,
            {"model/params_total": params["total"], "model/params_trainable": params["trainable"]},
        )
        metrics: dict[str, Any] = {}
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update({k: _as_float(v) for k, v in trainer.callback_metrics.items()})
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if checkpoint is not None:  # read before testing (which restores callback states)
            metrics["best_model_path"] = checkpoint.best_model_path
            metrics["last_model_path"] = checkpoint.last_model_path
        if cfg.test:
            if cfg.train:
                ckpt_path = metrics.get("best_model_path") or None
            else:
                ckpt_path = cfg.ckpt_path
            results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
            for result in results:
                metrics.update({k: _as_float(v) for k, v in result.items()})
            metrics["test/ckpt_path"] = str(ckpt_path or "")

        throughput = next((c for c in trainer.callbacks if isinstance(c, ThroughputMonitor)), None)
        if throughput is not None:
            metrics.update(throughput.summary())
        metrics.update(datamodule.dataset_stats())
        best_val = metrics.get("val/acc_best", metrics.get("val/acc"))
        metrics.update(
            {
                "objective": float(best_val) if best_val is not None else math.nan,
                "model/params_total": params["total"],
                "model/params_trainable": params["trainable"],
                "global_step": int(trainer.global_step),
                "wall_time_s": time.perf_counter() - start,
                "run_name": cfg.run_name,
                "output_dir": str(cfg.paths.output_dir),
            }
        )
        metrics["world_size"] = int(trainer.world_size)
        sync = next((c for c in trainer.callbacks if isinstance(c, FeatureSyncCheck)), None)
        if sync is not None:
            metrics["feature_sync/ranks_checked"] = sync.ranks_checked
            metrics["feature_sync/checks"] = sync.checks
        metrics.update(_wandb_info(loggers))
        for lg in loggers:
            lg.log_metrics(
                {f"summary/{k}": v for k, v in metrics.items() if isinstance(v, int | float)},
                step=int(trainer.global_step),
            )
            lg.save()
        _write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        log.info("metrics: %s", json.dumps(metrics, default=str))
        return metrics
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finally:
        finish_wandb()
        _end_process_group(env_before)


_DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _end_process_group(env_before: Mapping[str, str | None]) -> None:
    """Leave the process as the job found it, so the next job of a multirun can launch DDP again:
    destroy the process group and restore the variables Lightning's launcher set
    (with ``LOCAL_RANK`` left set, the next job would think its workers were started for it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# -- evaluate ------------------------------------------------------------------------------------
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split`` (``val`` or ``test``) with the model and task
    config stored in the checkpoint; non-null ``cfg.task.*`` values override the stored task
    config (e.g. ``task.data_dir=…``, ``task.eval_batch_size=…``). Returns the metrics."""
    if not cfg.get("ckpt_path"):
        raise ValueError("eval needs ckpt_path=<path to a .ckpt written by train.py>")
    _one_console_handler()
    path = Path(str(cfg.ckpt_path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    split = str(cfg.get("split", "test"))
    runners = {"val": L.Trainer.validate, "test": L.Trainer.test}
    if split not in runners:
        raise ValueError(f"split must be one of {', '.join(runners)}, got {split!r}")

    L.seed_everything(_seed(cfg), workers=True)
    module = load_checkpoint_file(path, LRAModule.load_from_checkpoint, map_location="cpu")
    run_cfg = dict(module.cfg)
    task_cfg = dict(run_cfg["task"])
    overrides = OmegaConf.to_container(cfg.get("task") or {}, resolve=True)
    assert isinstance(overrides, dict)
    task_cfg.update({k: v for k, v in overrides.items() if v is not None})
    datamodule = datamodule_for(task_cfg, seed=int(cfg.seed))

    loggers: list[Logger] = []
    try:
        with open_dict(cfg):
            if cfg.get("run_name") is None:
                cfg.run_name = f"eval.{run_cfg.get('run_name') or path.stem}"
            cfg.tags = clean_tags([*(run_cfg.get("tags") or []), "eval", *(cfg.get("tags") or [])])
        loggers = _instantiate_all(cfg.get("logger"), "logger")
        callbacks = _instantiate_all(cfg.get("callbacks"), "callbacks")
        trainer = L.Trainer(**_trainer_kwargs(cfg), logger=loggers or False, callbacks=callbacks)
        _log_config(loggers, {"run": run_cfg, "eval": {"ckpt_path": str(path), "split": split}}, {})
        results = runners[split](trainer, module, datamodule=datamodule)
        metrics: dict[str, Any] = {}
        for result in results:
            metrics.update({k: _as_float(v) for k, v in result.items()})
        metrics.update({"ckpt_path": str(path), "split": split, "run_name": cfg.run_name})
        _write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        log.info("metrics: %s", json.dumps(metrics, default=str))
        return metrics
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finally:
        finish_wandb()
