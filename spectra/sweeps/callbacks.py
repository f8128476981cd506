"""A Hydra callback for sweeps (any sweeper: basic, Optuna, grid): check component names before
launching, record each run's status.

Enabled in ``conf/hydra/default.yaml``::

    hydra:
      callbacks:
        spectra_sweep:
          _target_: spectra.sweeps.callbacks.SweepCallback

* ``on_multirun_start``: every component name in the sweep's overrides and in
  ``hydra.sweeper.params`` (``attention/sampler=…``, ``attention.feature_map.name=…``,
  ``attention.name=…``) must be registered, and every ``attention=…`` / ``task=…`` must be an
  option of its config group, else the multirun stops before any job is launched, listing the
  valid names. Hydra turns an exception in a callback into a warning, so the stop is a
  :class:`SweepAbort` (a ``SystemExit``: exit status 1, the message on stderr);
* ``on_job_start`` / ``on_job_end``: ``<run dir>/status.json`` becomes ``running``, then
  ``completed`` or ``failed`` with the error and its traceback (from ``JobReturn.status``; see
  :mod:`spectra.sweeps.status`). Hydra's launchers catch a job's exception, so the other jobs of
  the batch still run, and a report shows the run as failed instead of dropping it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, Registry
from spectra.sweeps.status import error_info, write_status

__all__ = ["NAME_KEYS", "SweepAbort", "SweepCallback", "check_sweep_names"]

log = logging.getLogger(__name__)

# override key -> (registry its values must be registered in, config group they select)
NAME_KEYS: dict[str, tuple[Registry | None, str | None]] = {
    "attention": (None, "attention"),
    "task": (None, "task"),
    "attention.name": (ATTENTIONS, None),
    "attention/sampler": (SAMPLERS, None),
    "attention.sampler.name": (SAMPLERS, None),
    "attention/feature_map": (FEATURE_MAPS, None),
    "attention.feature_map.name": (FEATURE_MAPS, None),
}


class SweepAbort(SystemExit):
    """Stops a multirun from a callback (Hydra would turn an ``Exception`` into a warning)."""


def _values(override: Any) -> list[str]:
    """The values of a plain override or a choice sweep; [] for globs, ranges and intervals."""
    from hydra.core.override_parser.types import ValueType

    if override.is_delete():
        return []
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return [str(v) for v in override.sweep_string_iterator()]
    return []


def check_sweep_names(lines: Iterable[str],
                      group_options: Callable[[str], Sequence[str]] | None = None) -> None:
    """Raise :class:`ValueError` if an override in ``lines`` names an unregistered component or
    a missing config option (``group_options(group)``; None: registries only), listing the valid
    names."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    problems: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(lines)):
        registry, group = NAME_KEYS.get(override.key_or_group, (None, None))
        values = _values(override)
        if registry is not None:
            unknown = [v for v in values if v not in registry]
            if unknown:
                problems.append(
                    f"{override.key_or_group}: unregistered {registry.kind}(s) "
                    f"{', '.join(map(repr, unknown))}; registered {registry.kind}s: "
                    + ", ".join(registry.names()))
        if group is not None and group_options is not None:
            options = list(group_options(group))
            missing = [v for v in values if v not in options]
            if missing:
                problems.append(f"{group}: no config {', '.join(map(repr, missing))}; options of "
                                f"{group}: {', '.join(sorted(options))}")
    if problems:
        raise ValueError("the sweep names unknown components (nothing was launched):\n  "
                         + "\n  ".join(problems))


class SweepCallback(Callback):
    """Validates sweep names before launching and writes per-run ``status.json`` files."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = bool(validate)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.validate:
            return
        from hydra.core.global_hydra import GlobalHydra

        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        lines = [f"{k}={v}" for k, v in params.items()]
        overrides = OmegaConf.to_container(config.hydra.overrides, resolve=False)  # as typed:
        lines += [str(o) for o in overrides.get("task", [])]  # ${hydra.job.num} is per job
        loader = GlobalHydra.instance().config_loader()  # the app's search path, public API
        hydra_overrides = [str(o) for o in overrides.get("hydra", [])]

        def group_options(group: str) -> list[str]:
            return loader.get_group_options(group, config_name=config.hydra.job.config_name,
                                            overrides=hydra_overrides)

        try:
            check_sweep_names(lines, group_options)
        except ValueError as exc:
            log.error("%s", exc)
            raise SweepAbort(f"{type(exc).__name__}: {exc}") from exc

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        out_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        if out_dir is not None:
            write_status(out_dir, "running", {
                "overrides": [str(o) for o in OmegaConf.select(config, "hydra.overrides.task",
                                                               default=[])],
                "job_num": OmegaConf.select(config, "hydra.job.num", default=None)})

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        out_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        if out_dir is None:
            return
        if job_return.status != JobStatus.FAILED:
            value = job_return.return_value
            write_status(out_dir, "completed",
                         {"return_value": value if isinstance(value, int | float) else None})
            return
        try:
            job_return.return_value  # noqa: B018 - raises the job's exception
        except Exception as error:
            info = error_info(error)
            write_status(out_dir, "failed", info)
            log.error("run failed: %s: %s (%s)", info["error_type"], info["error"], out_dir)
