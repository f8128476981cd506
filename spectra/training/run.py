"""``train(cfg)`` and ``evaluate(cfg)``: what ``train.py`` and ``eval.py`` run.

Order of a training run: seed everything → resolve the config → build the data module (checks
the task name and options; loads nothing) → build the model (checks every component name through
the registries; loads nothing) → loggers and callbacks → ``Trainer.fit`` (data is prepared and
loaded here; a run that ended before its first validation validates its final weights) →
``Trainer.test`` on the best checkpoint. :class:`MetricsFile` collects the
metrics, with ``objective`` = best validation accuracy (for sweepers), and writes them to
``<run dir>/metrics.json`` after each stage; ``train`` returns them. :func:`_job` is the
teardown wrapper of both entry points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spectra import strict_json
from spectra.checks import positive_int, seed_and_layer
from spectra.training.attention import attention_spec
from spectra.training.callbacks import FeatureSyncCheck, peak_memory_mb, reset_peak_memory
from spectra.training.checkpointing import load_checkpoint_file, with_atomic_checkpoint_io
from spectra.training.data import datamodule_for
from spectra.training.loggers import clean_tags, finish_wandb
from spectra.training.module import LRAModule
from spectra.training.protocol import apply_protocol
from spectra.training.resume import earlier_runs, run_roots
from spectra.training.schema import validate_or_exit
from spectra.training.signals import resume_command

__all__ = ["MetricsFile", "evaluate", "run_name", "run_summary", "run_tags", "train"]

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


def run_summary(cfg: DictConfig, saved: Path) -> str:
    """What a run prints at its start: its name and directory, the config-group choices and the
    command-line overrides (under Hydra), and ``saved``, the file with the whole resolved config."""
    from hydra.core.hydra_config import HydraConfig

    lines = [f"run {cfg.run_name} in {cfg.paths.output_dir}"]
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items()
                   if v is not None and not k.startswith("hydra/")}
        lines.append("  choices: " + " ".join(f"{k}={v}" for k, v in sorted(choices.items())))
        lines.append("  overrides: " + (" ".join(hydra_cfg.overrides.task) or "(none)"))
    return "\n".join([*lines, f"  resolved config: {saved}"])


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


def _saved_run_name(run_dir: Path) -> str | None:
    """The run name of an earlier run directory (from its ``.hydra/config.yaml``), or None."""
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        return str(saved.get("run_name") or run_name(saved))
    except Exception:  # no config, or not a training run's: not a match
        return None


def _resume_from(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``, where ``last`` without a ``last*.ckpt`` in this run directory means the
    newest ``last.ckpt`` of an earlier run with the same name (said in the log); with none, a
    ``FileNotFoundError`` with the resume command: never a silent fresh start."""
    path = cfg.get("ckpt_path")
    own = Path(cfg.paths.output_dir) / "checkpoints"
    if path != "last" or any(own.glob("last*.ckpt")):
        return path
    found = earlier_runs(cfg.run_name, _saved_run_name)
    if found:
        log.warning("ckpt_path=last: no checkpoint in %s; resuming the latest run named %s: %s",
                    own, cfg.run_name, found[0])
        return str(found[0])
    roots = ", ".join(str(root) for root, _ in run_roots())
    command = resume_command("<its run directory>")
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint in {own} and no earlier run named {cfg.run_name} "
        f"{f'in {roots}' if roots else '(no Hydra run directories to search)'}. Resume a run "
        f"from its own directory: {command}; or leave out ckpt_path to start afresh"
    )


def _trainer(cfg: DictConfig, loggers: list[Logger], callbacks: list[Callback]) -> L.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "check_val_every_n_epoch"}
    if not loggers:  # `~logger`: LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # crash-safe checkpoint writes (see spectra.training.checkpointing)
    return L.Trainer(
        **with_atomic_checkpoint_io(kwargs), logger=loggers or False, callbacks=callbacks
    )


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
        for k, v in metrics.items()
    }


@rank_zero_only
def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(data))


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
        _write_json(self.path, m)
        if trainer.is_global_zero:
            log.info("metrics: %s", json.dumps(m, default=str))


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
    _fill_run_identity(cfg)
    L.seed_everything(seed_and_layer(cfg.get("seed"), None)[0], workers=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    saved = Path(cfg.paths.output_dir) / "run_config.yaml"  # after protocol and run name
    _write_yaml(saved, container)
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

    ckpt_path = _resume_from(cfg) if cfg.train else cfg.ckpt_path
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
