"""The Spectraformer grid as a Hydra sweep (arXiv 2405.15310)::

    python train.py -m experiment=spectraformer_grid task=lra_listops
    python train.py -m experiment=spectraformer_grid attention/sampler=qmc,mm seed=0,1

The grid itself is Hydra's own Cartesian product: ``hydra/sweeper=spectra_grid`` sets
``hydra.sweeper.params`` to ``attention=spectraformer 'attention/sampler=glob(*)'
'attention/feature_map=glob(*)'``, and Hydra expands the globs over the config groups, which hold
every registered component (plugins included; :mod:`spectra.training.config_store`). Command-line
overrides of the same keys narrow it, others (``seed=0,1``) multiply it. With the stock
``hydra/sweeper=basic`` the same product (without baselines) runs as::

    python train.py -m attention=spectraformer \
        'attention/sampler=glob(*)' 'attention/feature_map=glob(*)'

:class:`GridSweeper` exists only for what Hydra's basic sweeper cannot do (it subclasses the
public :class:`hydra.plugins.sweeper.Sweeper`; the basic sweeper lives in ``hydra._internal``):

* **baselines beside the product** (``hydra.sweeper.baselines``: attention presets such as
  softmax, which have no sampler): a product cannot express "grid *plus* baselines";
* **attention options only where they exist**: an ``attention.<key>`` override (e.g.
  ``attention.num_features=64``) goes to the cells whose composed attention config has that key,
  so a baseline without ``num_features`` is neither broken nor duplicated (an ``attention.*``
  override on the command line that no cell has is an error);
* **failed jobs recorded and the sweep going on across batches**: the basic sweeper raises the
  first failed job's error after its batch, so with ``max_batch_size`` (e.g. 1, one process per
  run) one crash ends the sweep. Here every batch runs, the failures are listed at the end
  (:class:`SweepFailedError`), and each job's ``status.json`` is written by
  :class:`spectra.sweeps.callbacks.SweepCallback` (a stock Hydra callback, ``on_job_end``);
* **every job composed before the first launch** (the basic sweeper checks one batch at a time),
  and ``grid.json`` listing the planned jobs, so a report can tell a run that never started from
  one that never existed; each job is tagged with its swept values (``tags=['seed=1']``).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["MANIFEST_FILE", "GridError", "GridSweeper", "SweepFailedError", "plan_jobs"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "grid.json"
_ABSENT = object()


class GridError(ValueError):
    """A grid that cannot be planned (an interval sweep, an option no cell has)."""


class SweepFailedError(RuntimeError):
    """Raised after a sweep in which some jobs failed (all other jobs did run)."""


def _values(override: Override) -> list[str]:
    """``key=value`` lines of an override, one per value of a discrete sweep."""
    if not override.is_sweep_override():
        return [override.input_line]
    if not override.is_discrete_sweep():
        raise GridError(f"{override.input_line!r}: the grid sweeper enumerates jobs and cannot "
                        "sample an interval; use hydra/sweeper=spectra_optuna for a search")
    key = override.get_key_element()
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan_jobs(overrides: Sequence[Override], baselines: Sequence[str], has_key: Any,
              optional: Sequence[str] = ()) -> list[list[str]]:
    """The jobs: for every combination of the general overrides (outer loop, so one seed
    finishes every cell before the next starts), every cell — the product of the ``attention``
    and ``attention/…`` group overrides, then ``attention=<baseline>`` for each baseline — with
    the ``attention.*`` overrides for which ``has_key(cell, key)`` is true. Later overrides of a
    key replace earlier ones. An ``attention.*`` override that no cell has is an error unless
    its line is in ``optional`` (the sweeper's ``params``, which a narrowed grid may not need)."""
    latest: dict[str, Override] = {}  # a later override of a key replaces an earlier one
    user_tags: list[str] = []
    for override in overrides:
        if override.key_or_group == "tags" and not override.is_sweep_override():
            value = override.value()
            user_tags = [str(v) for v in (value if isinstance(value, list) else [value])]
        else:
            latest[override.get_key_element()] = override
    groups: dict[str, list[str]] = {}
    options: dict[str, tuple[Override, list[str]]] = {}
    general: dict[str, list[str]] = {}
    for key, override in latest.items():
        name = override.key_or_group
        if name == "attention" or name.startswith("attention/"):
            groups[key] = _values(override)
        elif name.startswith("attention."):
            options[key] = (override, _values(override))
        else:
            general[key] = _values(override)
    cells = [list(c) for c in itertools.product(*groups.values())]
    cells += [[f"attention={b}"] for b in dict.fromkeys(baselines)]
    per_cell = [[k for k, (o, _) in options.items() if has_key(cell, o)] for cell in cells]
    unused = [o.input_line for k, (o, _) in options.items()
              if not any(k in keys for keys in per_cell) and o.input_line not in optional]
    if unused:
        raise GridError(f"no cell of the grid has the key of {', '.join(map(repr, unused))}")

    jobs: list[list[str]] = []
    for combo in itertools.product(*general.values()):
        for cell, keys in zip(cells, per_cell):
            value_lists = [*general.values(), *(options[k][1] for k in keys)]
            for option_combo in itertools.product(*(options[k][1] for k in keys)):
                lines = [*combo, *option_combo]
                tags = [*user_tags, *(line.lstrip("+~") for line, values in
                                      zip(lines, value_lists) if len(values) > 1)]
                job = [*cell, *lines]
                if tags:
                    job.append("tags=[" + ",".join(_quote(t) for t in tags) + "]")
                jobs.append(job)
    return jobs


class GridSweeper(Sweeper):
    """Hydra's Cartesian product plus baselines, failures recorded and the sweep going on (see
    the module docstring).

    Args:
        max_batch_size: jobs handed to the launcher at once (None: all; with ``submitit_slurm``
            one Slurm array).
        params: overrides applied to (and swept over) every job, like the basic sweeper's.
        baselines: presets of the ``attention`` config group run beside the product.
    """

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 baselines: Sequence[str] | None = ()) -> None:
        super().__init__()
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise GridError(f"max_batch_size must be null or >= 1, got {max_batch_size}")
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.params = dict(params or {})
        self.baselines = [str(b) for b in (baselines or ())]
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides))

    def _subdir(self, num: int, job: Sequence[str]) -> str:
        """Job ``num``'s directory under the sweep directory: ``hydra.sweep.subdir`` resolved
        (e.g. ``${task.name}/${hydra.job.num}``) as the launcher will resolve it."""
        cfg = self._compose(job)
        with open_dict(cfg):
            cfg.hydra.job.num = num
        return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))

    def plan(self, arguments: Sequence[str]) -> list[list[str]]:
        """Parse ``hydra.sweeper.params`` + ``arguments`` (globs expanded) and list the jobs."""
        assert self.hydra_context is not None
        params = [f"{k}={v}" for k, v in self.params.items()]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*params, *arguments])
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()
                 and not o.key_or_group.startswith("attention") and o.key_or_group != "tags"]
        composed: dict[tuple[str, ...], DictConfig] = {}

        def has_key(cell: list[str], override: Override) -> bool:
            if override.is_add() or override.is_force_add():
                return True
            if tuple(cell) not in composed:  # composed once per cell
                composed[tuple(cell)] = self._compose([*cell, *fixed])
            found = OmegaConf.select(composed[tuple(cell)], override.key_or_group, default=_ABSENT)
            return found is not _ABSENT

        return plan_jobs(overrides, self.baselines, has_key, optional=params)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        jobs = self.plan(arguments)
        if not jobs:
            raise GridError("the grid is empty: no sampler × feature map cell and no baseline")
        # every job composed before anything runs (what validate_batch_is_legal does), once:
        # the same composition gives the job's directory
        manifest = {"jobs": [{"dir": self._subdir(i, job), "overrides": job}
                             for i, job in enumerate(jobs)]}
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("Spectraformer grid: %d jobs → %s", len(jobs), sweep_dir)

        size = self.max_batch_size or len(jobs)
        returns: list[Sequence[JobReturn]] = []
        failures: list[str] = []
        for start in range(0, len(jobs), size):
            results = self.launcher.launch(jobs[start : start + size], initial_job_idx=start)
            for result in results:
                if result.status == JobStatus.FAILED:
                    try:
                        result.return_value  # noqa: B018 - raises the job's exception
                    except Exception as exc:
                        where = result.hydra_cfg.hydra.runtime.output_dir if result.hydra_cfg \
                            else result.overrides
                        failures.append(f"{where}: {type(exc).__name__}: {exc}")
            returns.append(results)
        if failures:
            raise SweepFailedError(
                f"{len(failures)} of {len(jobs)} jobs failed (the others completed; their "
                f"status.json holds the error; `python scripts/report.py {sweep_dir}` reports "
                "them):\n  " + "\n  ".join(failures))
        return returns
