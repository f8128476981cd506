"""W&B sweep specs (``wandb sweep spec.yaml`` then ``wandb agent <id>``) from the Spectraformer
grid or from an Optuna search space. The agent runs ``train.py`` with Hydra overrides: W&B's
``${args_no_hyphens}`` renders each parameter as ``key=value``, which is Hydra's syntax.

W&B's grid method is a Cartesian product too, so the baselines (which have no sampler) get a
spec of their own: :func:`grid_specs` returns the random-feature grid and, if any, the baselines.
``scripts/wandb_sweep.py`` takes the defaults (baselines, random-feature preset) from the composed
``hydra/sweeper=spectra_grid`` config, the one place they are written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spectra.registry import FEATURE_MAPS, SAMPLERS, Registry

__all__ = ["METRIC", "grid_specs", "optuna_spec", "parameter_from_override"]

METRIC = "summary/objective"  # logged by train.py at the end of a run: best validation accuracy
_PROGRAM = "train.py"


def _command(fixed: Sequence[str]) -> list[str]:
    return ["${env}", "${interpreter}", "${program}", *fixed, "logger=wandb",
            "logger.wandb.mode=online", "${args_no_hyphens}"]


def _base(method: str, project: str | None, entity: str | None, goal: str,
          name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"program": _PROGRAM, "method": method}
    if name:
        spec["name"] = name
    if project:
        spec["project"] = project
    if entity:
        spec["entity"] = entity
    spec["metric"] = {"name": METRIC, "goal": goal}
    return spec


def _values_param(values: Sequence[Any]) -> dict[str, Any]:
    return {"values": list(values)}


def _registered(registry: Registry, names: Sequence[str] | None) -> list[str]:
    """``names`` (every registered name when None), checked against ``registry``."""
    if names is None:
        return registry.names()
    unknown = [n for n in names if n not in registry]
    if unknown or not names:
        raise ValueError(f"unregistered {registry.kind}(s) {', '.join(map(repr, unknown))}"
                         if unknown else f"no {registry.kind}s given"
                         f"; registered {registry.kind}s: {', '.join(registry.names())}")
    return list(dict.fromkeys(names))


def grid_specs(
    *,
    samplers: Sequence[str] | None = None,
    feature_maps: Sequence[str] | None = None,
    baselines: Sequence[str] = (),
    seeds: Sequence[int] = (0,),
    tasks: Sequence[str] = ("lra_listops",),
    overrides: Sequence[str] = (),
    random_features: str = "spectraformer",
    project: str | None = None,
    entity: str | None = None,
    name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """``{"grid": spec}`` (every sampler × feature map × seed × task) plus ``{"baselines": spec}``
    when there are baselines. Axes default to every registered name; names are checked."""
    if not tasks:
        raise ValueError("at least one task is needed (e.g. lra_listops)")
    if not seeds:
        raise ValueError("at least one seed is needed")
    shared: dict[str, Any] = {"seed": _values_param([int(s) for s in seeds])}
    fixed = list(overrides)
    if len(tasks) == 1:
        fixed.insert(0, f"task={tasks[0]}")
    else:
        shared["task"] = _values_param(list(tasks))
    grid = _base("grid", project, entity, "maximize", name and f"{name}-grid")
    grid["parameters"] = {
        "attention/sampler": _values_param(_registered(SAMPLERS, samplers)),
        "attention/feature_map": _values_param(_registered(FEATURE_MAPS, feature_maps)),
        **shared,
    }
    grid["command"] = _command([f"attention={random_features}", *fixed])
    specs = {"grid": grid}
    names = list(dict.fromkeys(baselines))
    if names:
        base = _base("grid", project, entity, "maximize", name and f"{name}-baselines")
        base["parameters"] = {"attention": _values_param(names), **shared}
        base["command"] = _command(fixed)
        specs["baselines"] = base
    return specs


def parameter_from_override(key: str, value: str) -> dict[str, Any]:
    """A W&B parameter from a Hydra sweep value: ``choice(a,b)`` / ``a,b`` / ``range(…)`` →
    ``values``; ``interval(lo,hi)`` → uniform (``int_uniform`` inside ``int(…)``), with the
    ``log`` tag → ``log_uniform_values``; a plain value → ``value``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, ValueType

    override = OverridesParser.create().parse_override(f"{key}={value}")
    if not override.is_sweep_override():
        return {"value": override.value()}
    if override.value_type == ValueType.INTERVAL_SWEEP:
        sweep = override.value()
        assert isinstance(sweep, IntervalSweep)
        is_int = isinstance(sweep.start, int) and isinstance(sweep.end, int)
        if "log" in sweep.tags:
            if sweep.start <= 0:
                raise ValueError(f"{key}: a log interval needs a positive lower bound")
            kind = "q_log_uniform_values" if is_int else "log_uniform_values"
            param: dict[str, Any] = {"distribution": kind, "min": sweep.start, "max": sweep.end}
            if is_int:
                param["q"] = 1
            return param
        kind = "int_uniform" if is_int else "uniform"
        return {"distribution": kind, "min": sweep.start, "max": sweep.end}
    if override.is_discrete_sweep():
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            raise ValueError(f"{key}: glob sweeps need a config to expand; list the values")
        return {"values": [_plain(v) for v in override.sweep_iterator()]}
    raise ValueError(f"{key}={value}: unsupported sweep for a W&B spec")


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def optuna_spec(
    params: Mapping[str, str],
    *,
    direction: str = "maximize",
    method: str = "bayes",
    overrides: Sequence[str] = (),
    run_cap: int | None = None,
    project: str | None = None,
    entity: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A W&B spec of the same search as an Optuna sweeper's ``params`` (Hydra sweep syntax)."""
    if method not in ("bayes", "random", "grid"):
        raise ValueError(f"method must be bayes, random or grid, got {method!r}")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    if not params:
        raise ValueError("the search space is empty (no hydra.sweeper.params)")
    spec = _base(method, project, entity, direction, name)
    spec["parameters"] = {str(k): parameter_from_override(str(k), str(v))
                          for k, v in params.items()}
    if method == "grid":
        continuous = [k for k, p in spec["parameters"].items() if "distribution" in p]
        if continuous:
            raise ValueError(f"method grid needs listed values; continuous: {continuous}")
    if run_cap is not None:
        spec["run_cap"] = int(run_cap)
    spec["command"] = _command(list(overrides))
    return spec
