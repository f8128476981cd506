"""A Hydra sweeper for the Spectraformer grid: every registered sampler × every registered
component function, plus baseline attentions, in one multirun (arXiv 2405.15310)::

    python train.py -m experiment=spectraformer_grid task=lra_listops
    python train.py -m experiment=spectraformer_grid attention/sampler=qmc,mm seed=0,1

Hydra's basic sweeper takes a Cartesian product, which cannot express "grid *plus* baselines"
(softmax has no sampler). This sweeper builds the jobs itself:

* the cells: :func:`spectra.sweeps.grid.grid_cells` — the sampler and feature-map axes come from
  the registries (plugins included) unless ``attention/sampler=…`` / ``attention/feature_map=…``
  (or ``hydra.sweeper.samplers`` / ``feature_maps``) narrow them; ``hydra.sweeper.baselines``
  lists the baseline presets;
* every other override (``hydra.sweeper.params`` first, then the command line) is applied to
  every cell, and sweeps over them (``seed=0,1``) multiply the cells as usual; an
  ``attention.<key>`` override (e.g. ``attention.num_features=64``) is applied to the cells whose
  attention config has that key (a baseline without ``num_features`` is not duplicated);
* each job gets tags for its swept axes (``seed=1``) in addition to the automatic ones.

Before anything is launched, every name is checked against the registries and the config search
path (a bad name fails listing the valid ones), and every job's config is composed and its
attention and task names checked. A job that crashes does not stop the sweep: its status
(``status.json``, with the error) is recorded, the others run, and the sweep raises
:class:`SweepFailedError` at the end listing the failures. ``grid.json`` in the sweep directory
lists every planned job, so a report can tell a failed or missing run from one that never
existed.

Hydra only instantiates sweepers from the ``hydra_plugins`` package; the class it sees is
``hydra_plugins.spectra_grid_sweeper.SpectraGridSweeper``, a subclass of :class:`GridSweeper`.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from spectra.sweeps.grid import (
    AXES,
    DEFAULT_BASELINES,
    RANDOM_FEATURES_PRESET,
    GridCell,
    GridError,
    check_configs,
    grid_cells,
)
from spectra.sweeps.status import FINAL_STATES, error_info, read_status, write_status

__all__ = ["MANIFEST_FILE", "GridSweeper", "PlannedJob", "SweepFailedError", "plan_jobs"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "grid.json"
_ABSENT = object()


class SweepFailedError(RuntimeError):
    """Raised after a sweep in which some jobs failed (all other jobs did run)."""


@dataclass(frozen=True)
class PlannedJob:
    """One job of the grid: its cell, its Hydra overrides and its swept (non-cell) axes."""

    cell: GridCell
    overrides: tuple[str, ...]
    axes: tuple[tuple[str, str], ...] = field(default=())


def _quote(text: str) -> str:
    """A string as a quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _bare_key(override: Override) -> str:
    return override.key_or_group + (f"@{override.package}" if override.package else "")


def _values(override: Override) -> list[str]:
    """``key=value`` strings of an override (one per value of a choice or range sweep)."""
    key = override.get_key_element()
    if override.is_delete():
        return [override.input_line]
    if override.is_sweep_override():
        if not override.is_discrete_sweep():
            raise GridError(
                f"{override.input_line!r}: the grid sweeper enumerates jobs and cannot sample an "
                "interval; use hydra/sweeper=spectra_optuna for a search"
            )
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    return [f"{key}={override.get_value_element_as_str()}"]


def _forbidden(override: Override) -> str | None:
    """Why an override conflicts with the grid's cells (None when it does not)."""
    key = override.key_or_group
    if key in ("attention", "attention.name"):
        return (
            f"{override.input_line!r}: the grid sets the attention of every cell; choose the "
            "baselines with hydra.sweeper.baselines=[softmax] (or [] for none) and the random-"
            "feature preset with hydra.sweeper.random_features=<preset>"
        )
    for name, axis in AXES.items():
        if key == f"attention.{name}" or key.startswith(f"attention.{name}."):
            if key.startswith(f"attention.{name}.") and not key.endswith(".name"):
                return None  # an option of the component (e.g. attention.feature_map.A) is fine
            return (
                f"{override.input_line!r}: set the {name} axis with {axis.group}=a,b "
                f"(or hydra.sweeper.{name}s=[a,b])"
            )
    return None


def _is_attention_option(override: Override) -> bool:
    key = override.key_or_group
    return key.startswith("attention.") or (key.startswith("attention/") and key not in
                                            {axis.group for axis in AXES.values()})


def plan_jobs(
    cells: Sequence[GridCell],
    overrides: Iterable[Override],
    *,
    applies: Callable[[GridCell, Override], bool] = lambda cell, override: True,
    optional: Sequence[Override] = (),
) -> list[PlannedJob]:
    """The grid's jobs: for every combination of the non-attention overrides (outer loop, so one
    seed finishes every cell before the next starts), every cell with the ``attention.*``
    overrides that ``applies`` to it (those whose key its attention config has). Later overrides
    of a key replace earlier ones; identical jobs are merged. Each job gets a ``tags`` override
    with ``key=value`` for each of its swept keys (user tags kept first). An ``attention.*``
    override that applies to no cell is an error unless it is in ``optional`` (the sweeper's
    ``params``, which a narrowed grid may not need)."""
    general: dict[str, tuple[Override, list[str]]] = {}
    attention: dict[str, tuple[Override, list[str]]] = {}
    user_tags: list[str] = []
    for override in overrides:
        problem = _forbidden(override)
        if problem:
            raise GridError(problem)
        if override.key_or_group == "tags" and not override.is_sweep_override():
            value = override.value()
            user_tags = [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        target = attention if _is_attention_option(override) else general
        key = _bare_key(override)
        general.pop(key, None)
        attention.pop(key, None)
        target[key] = (override, _values(override))

    used = {key: False for key in attention}
    per_cell: dict[GridCell, list[str]] = {}
    for cell in cells:
        per_cell[cell] = [k for k in attention if applies(cell, attention[k][0])]
        used.update({k: True for k in per_cell[cell]})
    optional_lines = {o.input_line for o in optional}
    unused = [attention[k][0].input_line for k, hit in used.items()
              if not hit and attention[k][0].input_line not in optional_lines]
    if unused:
        raise GridError(f"no cell of the grid has the key of {', '.join(map(repr, unused))}")

    def swept(key: str) -> bool:
        override, values = general[key] if key in general else attention[key]
        return override.is_sweep_override() and len(values) > 1

    jobs: list[PlannedJob] = []
    seen: set[tuple[str, ...]] = set()
    general_keys = list(general)
    for combo in itertools.product(*(general[k][1] for k in general_keys)):
        for cell in cells:
            keys = per_cell[cell]
            for attention_combo in itertools.product(*(attention[k][1] for k in keys)):
                pairs = [*zip(general_keys, combo), *zip(keys, attention_combo)]
                axes = [(key, line.split("=", 1)[1]) for key, line in pairs if swept(key)]
                tags = [*user_tags, *(f"{k.lstrip('+~')}={v}" for k, v in axes)]
                job = (*cell.overrides(), *combo, *attention_combo)
                if tags:
                    job = (*job, "tags=[" + ",".join(_quote(t) for t in tags) + "]")
                if job in seen:
                    continue
                seen.add(job)
                jobs.append(PlannedJob(cell=cell, overrides=job, axes=tuple(axes)))
    return jobs


class GridSweeper(Sweeper):
    """Runs the Spectraformer grid (see the module docstring).

    Args:
        max_batch_size: jobs handed to the launcher at once (None: all; with ``submitit_slurm``
            one Slurm array).
        params: extra overrides applied to (and swept over) every job, like the basic
            sweeper's ``hydra.sweeper.params``.
        samplers, feature_maps: the axes; None = every registered name (plugins included).
        baselines: baseline presets of the ``attention`` config group ([] for none).
        random_features: the random-feature preset whose sampler and feature map are swept.
        fail_on_error: raise :class:`SweepFailedError` after the sweep when a job failed.
        validate: compose every job and check its attention and task before launching.
    """

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        samplers: Sequence[str] | None = None,
        feature_maps: Sequence[str] | None = None,
        baselines: Sequence[str] | None = DEFAULT_BASELINES,
        random_features: str = RANDOM_FEATURES_PRESET,
        fail_on_error: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise GridError(f"max_batch_size must be null or >= 1, got {max_batch_size}")
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.params = dict(params or {})
        self.axes: dict[str, list[str] | None] = {
            "sampler": None if samplers is None else [str(s) for s in samplers],
            "feature_map": None if feature_maps is None else [str(f) for f in feature_maps],
        }
        self.baselines = [str(b) for b in (baselines or ())]
        self.random_features = str(random_features)
        self.fail_on_error = bool(fail_on_error)
        self.validate = bool(validate)
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.jobs: list[PlannedJob] = []

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- planning ------------------------------------------------------------------------------
    def _group_options(self, group: str) -> list[str]:
        """Options of ``group`` over the search path of this sweep (``hydra.searchpath`` and
        search-path plugins included)."""
        assert self.hydra_context is not None and self.config is not None
        return list(self.hydra_context.config_loader.get_group_options(
            group, config_name=self.config.hydra.job.config_name,
            overrides=[str(o) for o in self.config.hydra.overrides.hydra]))

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )

    def plan(self, arguments: Sequence[str]) -> list[PlannedJob]:
        """Parse ``hydra.sweeper.params`` + ``arguments``, check every name, and list the jobs."""
        assert self.hydra_context is not None
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(lines)

        axes = dict(self.axes)
        rest: list[Override] = []
        groups = {axis.group: name for name, axis in AXES.items()}
        for override in parsed:
            name = groups.get(override.key_or_group)
            if name is None:
                rest.append(override)
                continue
            if override.is_delete() or (override.is_sweep_override()
                                        and not override.is_discrete_sweep()):
                raise GridError(f"{override.input_line!r}: list the {name}s, e.g. "
                                f"{override.key_or_group}=a,b")
            axes[name] = [line.split("=", 1)[1] for line in _values(override)]

        cells = grid_cells(axes["sampler"], axes["feature_map"], self.baselines,
                           self.random_features)
        check_configs(cells, {group: self._group_options(group)
                              for group in ("attention", *groups)})
        from spectra.sweeps.validate import check_sweep_names

        check_sweep_names([o.input_line for o in rest], self._group_options)

        # Which cells an attention.* override applies to: those whose composed attention config
        # has its key (additions with + apply everywhere). Composed once per cell.
        fixed = [line for o in rest
                 if not o.is_sweep_override() and not _is_attention_option(o)
                 and o.key_or_group != "tags" for line in _values(o)]
        composed: dict[GridCell, DictConfig] = {}

        def applies(cell: GridCell, override: Override) -> bool:
            if override.is_add() or override.is_force_add():
                return True
            if cell not in composed:
                composed[cell] = self._compose([*cell.overrides(), *fixed])
            key = override.key_or_group.replace("/", ".")
            return OmegaConf.select(composed[cell], key, default=_ABSENT) is not _ABSENT

        from_params = [o for o in parsed[: len(self.params)] if _is_attention_option(o)]
        return plan_jobs(cells, rest, applies=applies, optional=from_params)

    def _validate_jobs(self, jobs: Sequence[PlannedJob]) -> None:
        """Compose every job; check each distinct attention config and task name."""
        from spectra.training import attention_spec
        from spectra.training.data import task_spec

        tic = time.perf_counter()
        checked: set[str] = set()
        problems: list[str] = []
        for job in jobs:
            cfg = self._compose(job.overrides)
            for what, node, check in (
                ("attention", cfg.get("attention"), lambda n: attention_spec(n).validate()),
                ("task", cfg.get("task"), lambda n: task_spec(str(n["name"]))),
            ):
                plain = OmegaConf.to_container(node, resolve=True) if node is not None else None
                fingerprint = json.dumps([what, plain], sort_keys=True, default=str)
                if fingerprint in checked:
                    continue
                checked.add(fingerprint)
                try:
                    check(plain)
                except (KeyError, ValueError, TypeError) as exc:
                    problems.append(f"{job.cell.label} ({' '.join(job.overrides)}): {exc}")
        if problems:
            raise GridError("invalid jobs (nothing was launched):\n  " + "\n  ".join(problems))
        log.info("Validated %d jobs in %.1f s", len(jobs), time.perf_counter() - tic)

    # -- running -------------------------------------------------------------------------------
    def _write_manifest(self, sweep_dir: Path, jobs: Sequence[PlannedJob]) -> None:
        manifest = {
            "sweeper": "spectra_grid",
            "created_at": time.time(),
            "random_features": self.random_features,
            "baselines": self.baselines,
            "axes": {
                name: sorted({getattr(j.cell, name) for j in jobs if getattr(j.cell, name)})
                for name in AXES
            },
            "jobs": [
                {
                    "num": i,
                    "dir": str(i),
                    "label": job.cell.label,
                    "attention": job.cell.attention,
                    **{name: getattr(job.cell, name) for name in AXES},
                    "axes": dict(job.axes),
                    "overrides": list(job.overrides),
                }
                for i, job in enumerate(jobs)
            ],
        }
        (sweep_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")

    @staticmethod
    def _record(result: JobReturn) -> str | None:
        """Record a job's final status unless its own process already did; returns an error
        line for a failed job."""
        out_dir = None
        if result.hydra_cfg is not None:
            out_dir = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir")
        failed = result.status == JobStatus.FAILED
        error = result._return_value if failed else None
        if out_dir is not None:
            current = read_status(out_dir) or {}
            if current.get("status") not in FINAL_STATES:
                info = error_info(error) if isinstance(error, BaseException) else {}
                write_status(out_dir, "failed" if failed else "completed", info)
        if not failed:
            return None
        where = out_dir or "?"
        return f"{where}: {type(error).__name__}: {error}"

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        self.jobs = jobs = self.plan(arguments)
        if not jobs:
            raise GridError("the grid is empty: no sampler × feature map cell and no baseline")
        if self.validate:
            self._validate_jobs(jobs)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._write_manifest(sweep_dir, jobs)
        log.info(
            "Spectraformer grid: %d jobs (%d cells) → %s",
            len(jobs), len({j.cell for j in jobs}), sweep_dir,
        )

        size = self.max_batch_size or len(jobs)
        returns: list[Sequence[JobReturn]] = []
        failures: list[str] = []
        for start in range(0, len(jobs), size):
            batch = [list(job.overrides) for job in jobs[start : start + size]]
            results = self.launcher.launch(batch, initial_job_idx=start)
            for result in results:
                line = self._record(result)
                if line:
                    failures.append(line)
                    log.error("job failed: %s", line)
            returns.append(results)
        if failures and self.fail_on_error:
            raise SweepFailedError(
                f"{len(failures)} of {len(jobs)} jobs failed (the others completed; their "
                f"status.json holds the error; `python scripts/report.py {sweep_dir}` reports "
                "them):\n  " + "\n  ".join(failures)
            )
        return returns
