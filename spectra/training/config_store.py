"""Config nodes of every registered sampler and feature map, in Hydra's ``ConfigStore``.

The registries are the one source of truth: for each registered name (plugins included) this
stores a node ``{name: <name>, <option>: <default>, …}`` in the config group
``attention/sampler`` or ``attention/feature_map``, so ``attention/sampler=qmc``,
``attention.feature_map.A=-0.2`` and the grid's ``'attention/sampler=glob(*)'`` work for every
component without a YAML file per component, and a plugin's components without a Hydra plugin.
The options listed are the keyword parameters of the component's constructor that have a
default (the ones a user can set), minus those the attention sets itself (``dim``,
``num_features`` and the base contract's ``seed`` and ``layer_index`` for samplers); ``None``
defaults appear as ``null``. This listing is the only place that reads constructor signatures.

:func:`register_configs` is idempotent; ``train.py``, ``eval.py`` and the test suite call it
before Hydra composes (importing :mod:`spectra.training` calls it too).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra

from spectra.registry import FEATURE_MAPS, SAMPLERS, Registry
from spectra.training.schema import SCHEMAS

__all__ = ["GROUPS", "component_node", "group_options", "register_configs"]

GROUPS: dict[str, Registry] = {"attention/sampler": SAMPLERS, "attention/feature_map": FEATURE_MAPS}
# options that the attention passes to every component of the group (not user options)
_SET_BY_ATTENTION = {"attention/sampler": {"dim", "num_features", "seed", "layer_index"}}
_PLAIN = (bool, int, float, str, type(None))


def component_node(registry: Registry, name: str, exclude: set[str] = frozenset()) -> dict:
    """``{"name": name, **defaults}`` of a registered component (plain-valued defaults only)."""
    obj = registry.get(name)
    target = obj.__init__ if inspect.isclass(obj) else obj
    node: dict[str, Any] = {"name": name}
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: no options to list
        return node
    for p in params:
        if p.name == "self" or p.name in exclude or p.default is inspect.Parameter.empty:
            continue
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and isinstance(p.default, _PLAIN):
            node[p.name] = p.default
    return node


def register_configs() -> None:
    """Store one node per registered sampler and feature map (plugins loaded first), and the
    schemas of :mod:`spectra.training.schema` (typed ``optim`` / ``scheduler`` nodes)."""
    store = ConfigStore.instance()
    for (group, name), schema in SCHEMAS.items():
        store.store(group=group, name=name, node=schema, provider="spectra")
    for group, registry in GROUPS.items():
        exclude = _SET_BY_ATTENTION.get(group, set())
        for name in registry.names():
            store.store(
                group=group,
                name=name,
                node=component_node(registry, name, exclude),
                provider=registry.entry(name).provider,
            )


def group_options(group: str, config_dir: str | Path | None = None) -> list[str]:
    """Options of config ``group`` (e.g. ``"attention/sampler"``) as Hydra sees them: the YAML
    files of the config directory plus the ConfigStore nodes — what ``glob(*)`` sweeps over.

    Inside a running Hydra app the app's own search path is used; otherwise ``config_dir``
    (default: the repository's ``conf/``) is initialized for the call (public Hydra API only).
    """
    register_configs()
    hydra = GlobalHydra.instance()
    if hydra.is_initialized():
        return sorted(hydra.config_loader().get_group_options(group))
    path = Path(config_dir) if config_dir else Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(path.resolve()), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
