"""Check the component names of a sweep before anything is launched.

A sweep over ``attention/sampler=orthogonl,qmc`` (or ``attention.feature_map.name=…``) must fail
at once, listing the registered names, instead of after hours of other jobs. The keys checked are
derived from :data:`spectra.sweeps.grid.AXES` (``attention/<axis>`` config groups and
``attention.<axis>.name`` values) plus ``attention.name`` (the attention registry) and the
``attention`` / ``task`` config groups (their config files). Hydra is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from spectra.registry import ATTENTIONS, Registry
from spectra.sweeps.grid import AXES, GridError

__all__ = ["check_sweep_names", "group_options_for", "name_keys", "override_values"]

GroupOptions = Callable[[str], Sequence[str]]


def name_keys() -> dict[str, tuple[Registry | None, str | None]]:
    """Override key → (registry its values must be registered in, config group they select)."""
    keys: dict[str, tuple[Registry | None, str | None]] = {
        "attention": (None, "attention"),
        "attention.name": (ATTENTIONS, None),
        "task": (None, "task"),
    }
    for name, axis in AXES.items():
        keys[axis.group] = (axis.registry, axis.group)
        keys[f"attention.{name}.name"] = (axis.registry, None)
    return keys


def override_values(override: Any) -> list[str] | None:
    """The string values of a parsed Hydra override (a choice sweep lists each value); None when
    they cannot be listed without a config (glob, range and interval sweeps)."""
    if override.is_delete():
        return None
    if override.is_sweep_override():
        from hydra.core.override_parser.types import ValueType

        if override.value_type not in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            return None
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def group_options_for(config: Any) -> GroupOptions | None:
    """Options of a config group over the search path a composed config was made with
    (``hydra.runtime.config_sources``: the app's ``conf/``, plugins, ``hydra.searchpath``);
    None when the config does not record its sources."""
    from omegaconf import OmegaConf

    sources = OmegaConf.select(config, "hydra.runtime.config_sources", default=None)
    if not sources:
        return None
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    search_path = ConfigSearchPathImpl()
    for source in sources:
        search_path.append(str(source["provider"]), f"{source['schema']}://{source['path']}")
    loader = ConfigLoaderImpl(config_search_path=search_path)
    cache: dict[str, list[str]] = {}

    def options(group: str) -> list[str]:
        if group not in cache:
            cache[group] = sorted(loader.get_group_options(group))
        return cache[group]

    return options


def check_sweep_names(lines: Iterable[str], group_options: GroupOptions | None = None) -> None:
    """Raise :class:`~spectra.sweeps.grid.GridError` if an override in ``lines`` names an
    unregistered component or a missing config option; the message lists the valid names.

    ``group_options(group)`` lists a config group's options over the search path (``None``:
    configs are not checked, only the registries).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = name_keys()
    problems: list[str] = []
    for override in parser.parse_overrides(list(lines)):
        key = override.key_or_group
        if key not in keys:
            continue
        values = override_values(override)
        if not values:
            continue
        registry, group = keys[key]
        if registry is not None:
            unknown = [v for v in values if v not in registry]
            if unknown:
                problems.append(
                    f"{key}: unregistered {registry.kind}(s) {', '.join(map(repr, unknown))}; "
                    f"registered {registry.kind}s: {', '.join(registry.names())}"
                )
                continue
        if group is not None and group_options is not None:
            options = list(group_options(group))
            missing = [v for v in values if v not in options]
            if missing:
                problems.append(
                    f"{key}: no config {', '.join(f'{group}/{v}.yaml' for v in missing)}; "
                    f"options of {group}: {', '.join(sorted(options))}"
                )
    if problems:
        raise GridError("the sweep names unknown components (nothing was launched):\n  "
                        + "\n  ".join(problems))
