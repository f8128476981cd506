"""Config schemas and the fail-fast check of a run config, before anything is built or loaded.

Two layers:

* **Types, at compose time.** :data:`SCHEMAS` are dataclasses stored in Hydra's ``ConfigStore``
  and named first in the defaults list of ``conf/optim/adamw.yaml`` and
  ``conf/scheduler/one_cycle.yaml``, so ``optim.lr=abc`` or ``scheduler.warmup_steps=x`` fail while
  Hydra composes, in a few lines naming the key (``full_key: optim.lr``).
* **Values, at startup.** :func:`check_run_config` builds, on the CPU and without data, what
  the config describes — the data module (which loads nothing), the attention (layer 0), the
  model (with a softmax stand-in attention), the optimizer over a stand-in parameter, the
  schedule over a stand-in optimizer, a stand-in Trainer (its arguments, and that its
  accelerator exists here).
  :func:`validate_or_exit` runs it first thing in a run: on the command line (Hydra's
  single-run mode) a bad value prints ``invalid run config`` and one line per problem, naming
  the config key and what is allowed, and exits with status 2 — no traceback unless
  ``HYDRA_FULL_ERROR=1``. Elsewhere (tests, multirun jobs, the Python API) the first problem is
  raised as the component raised it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from spectra.checks import seed_and_layer

__all__ = [
    "SCHEMAS",
    "AdamWSchema",
    "ConfigError",
    "OneCycleSchema",
    "check_run_config",
    "config_problems",
    "trainer_arguments",
    "validate_or_exit",
]

EXIT_STATUS = 2  # a usage error, like argparse's


class ConfigError(ValueError):
    """A run-config value that cannot work here; the message names the key and the remedy."""


@dataclass
class AdamWSchema:
    """Types of ``conf/optim/adamw.yaml`` (``torch.optim.AdamW`` options)."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = MISSING
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    weight_decay: float = 0.0


@dataclass
class OneCycleSchema:
    """Types of ``conf/scheduler/one_cycle.yaml`` (:func:`spectra.training.module.one_cycle`)."""

    _target_: str = "spectra.training.module.one_cycle"
    _partial_: bool = True
    warmup_steps: int = 0
    anneal_strategy: str = "linear"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True


SCHEMAS: dict[tuple[str, str], type] = {
    ("optim", "adamw_schema"): AdamWSchema,
    ("scheduler", "one_cycle_schema"): OneCycleSchema,
}
"""(config group, name) → schema dataclass, stored by ``register_configs``."""


# -- value checks (each builds one part on the CPU, loading nothing) ------------------------------
def _check_attention(cfg: Mapping[str, Any]) -> None:
    from spectra.training.attention import attention_spec

    attention_spec(cfg["attention"]).validate()


def _check_seed(cfg: Mapping[str, Any]) -> None:
    seed_and_layer(cfg.get("seed"), None)


def _check_task(cfg: Mapping[str, Any]) -> None:
    from spectra.training.data import datamodule_for

    datamodule_for(cfg["task"])  # checks the task name and options; loads nothing


def _check_model(cfg: Mapping[str, Any]) -> None:
    from spectra.training.data import task_spec
    from spectra.training.module import build_model

    try:
        task_spec(cfg["task"]["name"])
    except (KeyError, TypeError, ValueError):
        return  # reported under "task"; the model's sizes depend on the task
    stand_in = {"name": "softmax", "head_dim": cfg["attention"].get("head_dim")}
    build_model({**cfg, "attention": stand_in}, max_positions=8)


def _stand_in_optimizer(cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return instantiate(cfg["optim"])([torch.nn.Parameter(torch.zeros(1))])


def _check_scheduler(cfg: Mapping[str, Any]) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, momentum=0.9)
    max_steps = (cfg.get("trainer") or {}).get("max_steps") or -1
    instantiate(cfg["scheduler"])(optimizer, total_steps=max(int(max_steps), 2))


def trainer_arguments(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """``Trainer`` keyword arguments of a ``trainer`` config node: null means Lightning's default
    (left out), except ``check_val_every_n_epoch``, whose null means "count steps across
    epochs"."""
    return {k: v for k, v in trainer.items() if v is not None or k == "check_val_every_n_epoch"}


def _check_trainer(cfg: Mapping[str, Any]) -> None:
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU "
            "(torch.cuda.is_available() is False); use trainer=cpu (trainer=ddp_sim for DDP "
            "on CPU processes)"
        )
    devices = trainer.get("devices")
    available = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > available:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {available} CUDA GPU(s); use "
            f"trainer.devices={available} or fewer (or trainer.devices=auto)"
        )
    # every other Trainer argument (names, precision, strategy …), as Lightning checks them
    kwargs = trainer_arguments(trainer)
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        L.Trainer(**{**kwargs, "logger": False, "enable_checkpointing": False,
                     "enable_progress_bar": False, "enable_model_summary": False})
    finally:
        quiet.setLevel(level)


CHECKS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("seed", _check_seed),
    ("task", _check_task),
    ("attention", _check_attention),
    ("model", _check_model),
    ("optim", _stand_in_optimizer),
    ("scheduler", _check_scheduler),
    ("trainer", _check_trainer),
)
"""(config key, check) pairs, in the order they are reported."""


def config_problems(cfg: DictConfig | Mapping[str, Any]) -> Iterator[tuple[str, Exception]]:
    """``(key, error)`` for every part of ``cfg`` that fails its check (all parts are checked;
    a config that does not resolve is one problem, under the key ``config``)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except Exception as exc:  # an interpolation that fails names its key itself
        yield "config", exc
        return
    for key, check in CHECKS:
        try:
            check(plain)
        except Exception as exc:  # every failure is reported, by key
            yield key, exc


def check_run_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise the first problem of ``cfg`` (see :func:`config_problems`), as raised."""
    for _, exc in config_problems(cfg):
        raise exc


def _single_cli_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def validate_or_exit(cfg: DictConfig) -> None:
    """:func:`check_run_config`; in a single command-line run (and without
    ``HYDRA_FULL_ERROR=1``) print the problems, one line each, and exit with status 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _single_cli_run():
        check_run_config(cfg)
        return
    problems = list(config_problems(cfg))
    if not problems:
        return
    lines = ["invalid run config (nothing was built or loaded):"]
    lines += [f"  {key}: {' '.join(str(exc).split())}" for key, exc in problems]
    lines.append("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.")
    sys.stderr.write("\n".join(lines) + "\n")
    raise SystemExit(EXIT_STATUS)
