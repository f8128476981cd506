"""A Hydra callback for sweeps: check names before launching, record each run's status.

Enable it in the Hydra config (the ``spectraformer_grid`` experiments do)::

    hydra:
      callbacks:
        spectra_sweep:
          _target_: spectra.sweeps.callbacks.SweepCallback

* ``on_multirun_start``: every component name in the sweep's overrides and in
  ``hydra.sweeper.params`` (``attention/sampler=…``, ``attention.feature_map.name=…``,
  ``attention=…``, ``task=…``) must be registered and have a config, else the whole multirun
  stops before any job is launched, listing the valid names (any sweeper: basic, Optuna, grid).
  Hydra turns an exception in a callback into a warning, so the stop is a :class:`SweepAbort`
  (a ``SystemExit``: exit status 1, the message on stderr);
* ``on_job_start`` / ``on_job_end``: ``<run dir>/status.json`` becomes ``running``, then
  ``completed`` or ``failed`` with the error and its traceback (see
  :mod:`spectra.sweeps.status`). Hydra's launchers catch a job's exception, so the other jobs
  of the batch still run; a report then shows the run as failed instead of dropping it. On a GPU
  the peak-memory counter is reset at job start, so each in-process job reports its own peak.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from spectra.sweeps.status import error_info, write_status

__all__ = ["SweepAbort", "SweepCallback", "sweep_override_lines"]

log = logging.getLogger(__name__)


def sweep_override_lines(config: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` (as ``key=value``) and the command line's task overrides."""
    lines: list[str] = []
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    if params:
        lines += [f"{k}={v}" for k, v in params.items()]
    lines += [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    return lines


class SweepAbort(SystemExit):
    """Stops a multirun from a callback (Hydra would turn an ``Exception`` into a warning)."""


class SweepCallback(Callback):
    """Validates sweep names before launching and writes per-run ``status.json`` files."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = bool(validate)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.validate:
            return
        from spectra.sweeps.grid import GridError
        from spectra.sweeps.validate import check_sweep_names, group_options_for

        try:
            check_sweep_names(sweep_override_lines(config), group_options_for(config))
        except GridError as exc:
            log.error("%s", exc)
            raise SweepAbort(f"{type(exc).__name__}: {exc}") from exc

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        out_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        if out_dir is None:
            return
        overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task",
                                                     default=[]) or []]
        write_status(out_dir, "running", {
            "overrides": overrides,
            "job_num": OmegaConf.select(config, "hydra.job.num", default=None),
        })
        torch = sys.modules.get("torch")  # reset only if the process already uses CUDA
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        out_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        if out_dir is None:
            return
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            info = error_info(error) if isinstance(error, BaseException) else {}
            write_status(out_dir, "failed", info)
            log.error("run failed: %s: %s (%s)", info.get("error_type"), info.get("error"),
                      out_dir)
        else:
            value = job_return._return_value
            write_status(out_dir, "completed",
                         {"return_value": value if isinstance(value, int | float) else None})
