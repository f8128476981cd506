"""Plugin discovery: third-party packages register components through entry points.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."spectra.plugins"]
    my_plugin = "my_package"

The entry point names a module (imported; its ``@SAMPLERS.register(...)`` decorators run) or a
function ``"my_package.setup:register"`` (imported and called with no arguments). Plugins are
loaded once, lazily, the first time any registry is read (``Registry._ensure_loaded``), after the
built-in components; an application that composes configs (``train.py``) calls
:func:`load_plugins` itself before Hydra composes, so a broken plugin fails before anything else.

Errors:

* A plugin that fails to load raises :class:`PluginLoadError` naming the plugin, its
  distribution, its entry point and the original exception (chained as ``__cause__``); whatever
  it registered before failing is removed again. Set ``SPECTRA_SKIP_BROKEN_PLUGINS=1`` (or call
  ``load_plugins(skip_broken=True)``) to skip broken plugins with a ``RuntimeWarning`` instead;
  :func:`broken_plugins` lists what was skipped.
* Two packages registering the same name raise :class:`~spectra.registry.DuplicateComponentError`
  naming both packages (and the plugin being loaded). This is never skipped: which component a
  name means must not depend on load order.

Hydra configs of plugin components need nothing from the plugin: the training layer stores a
config node for every registered component in Hydra's ConfigStore
(:mod:`spectra.training.config_store`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points

from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, DuplicateComponentError, Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "SKIP_ENV",
    "PluginLoadError",
    "broken_plugins",
    "describe",
    "discover",
    "load_plugins",
    "loaded_plugins",
]

ENTRY_POINT_GROUP = "spectra.plugins"
SKIP_ENV = "SPECTRA_SKIP_BROKEN_PLUGINS"
_REGISTRIES: tuple[Registry, ...] = (SAMPLERS, FEATURE_MAPS, ATTENTIONS)

_LOADED: dict[str, EntryPoint] = {}
_BROKEN: dict[str, str] = {}
_DONE = False
_LOADING = False


class PluginLoadError(ImportError):
    """A plugin's entry point could not be loaded (the message names plugin and entry point)."""


def discover() -> list[EntryPoint]:
    """The installed ``spectra.plugins`` entry points, sorted by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def describe(ep: EntryPoint) -> str:
    """``'name' (package 'dist' version, entry point spectra.plugins:value)``."""
    dist = getattr(ep, "dist", None)
    package = f"{dist.name} {dist.version}" if dist is not None else "unknown package"
    return f"{ep.name!r} (package {package!r}, entry point {ep.group}:{ep.value})"


def _skip_broken_default() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def _rollback_on_error(ep: EntryPoint) -> Iterator[None]:
    """Undo a failed plugin load: unregister what it added and forget its half-imported modules
    (so a later retry imports it afresh)."""
    before = {id(reg): set(reg.names()) for reg in _REGISTRIES}
    modules_before = set(sys.modules)
    try:
        yield
    except BaseException:
        for reg in _REGISTRIES:
            for name in set(reg.names()) - before[id(reg)]:
                if reg.entry(name).provider != "spectra":
                    reg.unregister(name)
        top = ep.value.split(":")[0].split(".")[0]
        for mod in set(sys.modules) - modules_before:
            if mod == top or mod.startswith(top + "."):
                del sys.modules[mod]
        raise


def _load_one(ep: EntryPoint) -> None:
    with _rollback_on_error(ep):
        obj = ep.load()
        if ep.attr is not None and callable(obj):  # "module:function" → call it
            obj()


def load_plugins(*, skip_broken: bool | None = None, force: bool = False) -> dict[str, EntryPoint]:
    """Load every installed plugin once; returns ``{plugin name: entry point}`` of loaded ones.

    ``skip_broken`` (default: the ``SPECTRA_SKIP_BROKEN_PLUGINS`` environment variable) turns
    load failures into warnings. ``force`` re-runs discovery (e.g. after installing a plugin).
    """
    global _DONE, _LOADING
    if (_DONE and not force) or _LOADING:
        return dict(_LOADED)
    from spectra import _load_builtin_components

    _load_builtin_components()  # built-ins first: a clash is then reported against the core
    skip = _skip_broken_default() if skip_broken is None else skip_broken
    _LOADING = True
    try:
        for ep in discover():
            if not force and ep.name in _LOADED and _LOADED[ep.name] == ep:
                continue
            try:
                _load_one(ep)
            except DuplicateComponentError as exc:
                raise DuplicateComponentError(
                    f"{exc} (while loading Spectra plugin {describe(ep)}). Uninstall one of the "
                    "two packages or rename the component in one of them."
                ) from exc
            except Exception as exc:
                message = (
                    f"Spectra plugin {describe(ep)} failed to load: {type(exc).__name__}: {exc}"
                )
                if skip:
                    _BROKEN[ep.name] = message
                    warnings.warn(f"{message} -- skipped ({SKIP_ENV}=1)", RuntimeWarning,
                                  stacklevel=2)
                    continue
                raise PluginLoadError(
                    f"{message}. Fix or uninstall the plugin, or set {SKIP_ENV}=1 to skip "
                    "broken plugins with a warning."
                ) from exc
            _LOADED[ep.name] = ep
            _BROKEN.pop(ep.name, None)
        _DONE = True
    finally:
        _LOADING = False
    return dict(_LOADED)


def loaded_plugins() -> dict[str, EntryPoint]:
    """Plugins loaded so far, ``{name: entry point}``."""
    return dict(_LOADED)


def broken_plugins() -> dict[str, str]:
    """Plugins skipped because they failed to load, ``{name: error message}``."""
    return dict(_BROKEN)
