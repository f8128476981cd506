"""``train(cfg)`` and ``evaluate(cfg)``: what ``train.py`` and ``eval.py`` run.

Order of a training run: the startup check (:mod:`~spectra.training.schema`) → seed everything →
the run's name and a short summary (:mod:`~spectra.training.naming`; the resolved config goes to
``<run dir>/run_config.yaml``) → data module and model (names checked, nothing loaded) → loggers
and callbacks → ``Trainer.fit`` (data is loaded here; a run that ended before its first
validation validates its final weights) → ``Trainer.test`` on the best checkpoint.
:class:`~spectra.training.metrics_file.MetricsFile` writes ``<run dir>/metrics.json`` after each
stage (``objective`` = best validation accuracy, for sweepers); ``train`` returns those metrics.
:func:`_job` is the teardown wrapper of both entry points.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spectra.checks import positive_int, seed_and_layer
from spectra.training.checkpointing import load_checkpoint_file, with_atomic_checkpoint_io
from spectra.training.data import datamodule_for
from spectra.training.loggers import clean_tags, finish_wandb
from spectra.training.metrics_file import MetricsFile, write_yaml
from spectra.training.module import LRAModule
from spectra.training.naming import fill_run_identity, run_summary
from spectra.training.protocol import apply_protocol
from spectra.training.resume import resume_from
from spectra.training.schema import trainer_arguments, validate_or_exit

__all__ = ["evaluate", "train"]

log = logging.getLogger(__name__)


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
    """``torch.set_num_threads(num_threads)``; null keeps torch's default."""
    if num_threads is not None:
        torch.set_num_threads(positive_int(num_threads, "num_threads"))


# -- building blocks -----------------------------------------------------------------------------
def _instantiate_all(node: Any, kind: str) -> list[Any]:
    """Instantiate every non-null ``_target_`` entry of a ``callbacks`` / ``logger`` mapping."""
    out: list[Any] = []
    for key, value in (node or {}).items():
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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hc = HydraConfig.instance().cfg
    sys.argv = [sys.argv[0], *(str(o) for o in hc.hydra.overrides.task)]
    with read_write(hc.hydra.run):
        hc.hydra.run.dir = str(hc.hydra.runtime.output_dir)


def _trainer(cfg: DictConfig, loggers: list[Logger], callbacks: list[Callback]) -> L.Trainer:
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer, dict)
    kwargs = trainer_arguments(trainer)
    if not loggers:  # `~logger`: LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # crash-safe checkpoint writes (see spectra.training.checkpointing)
    return L.Trainer(
        **with_atomic_checkpoint_io(kwargs), logger=loggers or False, callbacks=callbacks
    )


_DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def _job() -> Iterator[None]:
    """Teardown of one job: finish the W&B run (exit code 1 on an error), and leave the process
    as the job found it, so the next job of a multirun can launch DDP again: destroy the process
    group and restore the variables Lightning's launcher set (with ``LOCAL_RANK`` left set, the
    next job would think its workers were started for it)."""
    env_before = {key: os.environ.get(key) for key in _DIST_ENV}
    try:
        yield
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finally:
        finish_wandb()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- train ---------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (``cfg.train``) and/or test (``cfg.test``) one run; returns its metrics (see
    :class:`MetricsFile`)."""
    validate_or_exit(cfg)  # bad values fail here, in a few lines, before anything is built
    _one_console_handler()
    _set_threads(cfg.get("num_threads"))
    protocol_changes = apply_protocol(cfg)  # recipe keys -> task/model edits (checked here)
    fill_run_identity(cfg)
    L.seed_everything(seed_and_layer(cfg.get("seed"), None)[0], workers=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    saved = Path(cfg.paths.output_dir) / "run_config.yaml"  # after protocol and run name
    write_yaml(saved, container)
    log.info("%s", run_summary(cfg, saved))
    if protocol_changes:
        log.info("protocol %s set: %s", cfg.protocol.name, protocol_changes)

    # Fail fast: task name/options, then every component name, before any data is loaded.
    datamodule = datamodule_for(container["task"], seed=int(cfg.seed))
    module = LRAModule(container, max_positions=datamodule.max_positions)

    if not cfg.train and not cfg.test:
        raise ValueError("nothing to do: both train=false and test=false")
    if not cfg.train and not cfg.ckpt_path:
        raise ValueError("train=false test=true needs ckpt_path=<checkpoint to evaluate>")

    ckpt_path = resume_from(cfg) if cfg.train else cfg.ckpt_path
    _prepare_ddp_relaunch(cfg)
    with _job():
        loggers = _instantiate_all(cfg.get("logger"), "logger")
        output = Path(cfg.paths.output_dir)
        metrics = MetricsFile(
            output / "metrics.json",
            run_name=cfg.run_name,
            output_dir=str(output),
            objective=math.nan,  # best validation accuracy, once fit has validated
        )
        callbacks = [*_instantiate_all(cfg.get("callbacks"), "callbacks"), metrics]
        trainer = _trainer(cfg, loggers, callbacks)
        params = {f"model/params_{k}": v for k, v in module.param_counts.items()}
        for lg in loggers:
            lg.log_hyperparams({**container, **params})
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            best_score = getattr(trainer.checkpoint_callback, "best_model_score", None)
            validated = "val/acc" in trainer.callback_metrics or best_score is not None
            if trainer.limit_val_batches and not validated:
                log.warning("training ended before its first validation (%d steps, "
                            "val_check_interval=%s): validating the final weights",
                            trainer.global_step, cfg.trainer.val_check_interval)
                trainer.validate(module, datamodule=datamodule)
        if cfg.test:
            best = metrics.metrics.get("best_model_path") or None
            trainer.test(module, datamodule=datamodule, ckpt_path=best if cfg.train else ckpt_path)
        return metrics.metrics


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

    L.seed_everything(seed_and_layer(cfg.get("seed"), None)[0], workers=True)
    module = load_checkpoint_file(path, LRAModule.load_from_checkpoint, map_location="cpu")
    run_cfg = dict(module.cfg)
    task_cfg = dict(run_cfg["task"])
    overrides = OmegaConf.to_container(cfg.get("task") or {}, resolve=True)
    assert isinstance(overrides, dict)
    task_cfg.update({k: v for k, v in overrides.items() if v is not None})
    datamodule = datamodule_for(task_cfg, seed=int(cfg.seed))

    with _job():
        with open_dict(cfg):
            if cfg.get("run_name") is None:
                cfg.run_name = f"eval.{run_cfg.get('run_name') or path.stem}"
            cfg.tags = clean_tags([*(run_cfg.get("tags") or []), "eval", *(cfg.get("tags") or [])])
        loggers = _instantiate_all(cfg.get("logger"), "logger")
        metrics = MetricsFile(
            Path(cfg.paths.output_dir) / "metrics.json",
            ckpt_path=str(path),
            split=split,
            run_name=cfg.run_name,
        )
        callbacks = [*_instantiate_all(cfg.get("callbacks"), "callbacks"), metrics]
        trainer = _trainer(cfg, loggers, callbacks)
        for lg in loggers:
            lg.log_hyperparams({"run": run_cfg, "eval": {"ckpt_path": str(path), "split": split}})
        runners[split](trainer, module, datamodule=datamodule)
        return metrics.metrics
