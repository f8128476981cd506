"""Plugin discovery: third-party packages register components through entry points.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."spectra.plugins"]
    my_plugin = "my_package.spectra_plugin"

The entry point names a module (imported; its ``@SAMPLERS.register`` decorators run) or a
callable (imported and called with no arguments). Plugins are loaded once, lazily, the first time
any registry is read. A plugin that fails to import raises :class:`PluginLoadError` naming the
plugin, its entry point and the original exception; set ``SPECTRA_SKIP_BROKEN_PLUGINS=1`` (or
call ``load_plugins(skip_broken=True)``) to skip broken plugins with a warning instead.
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "spectra.plugins"

_LOADED: dict[str, EntryPoint] = {}
_DONE = False
_LOADING = False


class PluginLoadError(ImportError):
    """A plugin's entry point could not be loaded."""


def discover() -> list[EntryPoint]:
    """The installed ``spectra.plugins`` entry points, sorted by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _skip_broken_default() -> bool:
    return os.environ.get("SPECTRA_SKIP_BROKEN_PLUGINS", "").lower() in {"1", "true", "yes"}


def load_plugins(*, skip_broken: bool | None = None, force: bool = False) -> dict[str, EntryPoint]:
    """Load every installed plugin once; returns ``{plugin name: entry point}`` of loaded ones."""
    global _DONE, _LOADING
    if (_DONE and not force) or _LOADING:
        return dict(_LOADED)
    skip = _skip_broken_default() if skip_broken is None else skip_broken
    _LOADING = True
    try:
        for ep in discover():
            if ep.name in _LOADED and not force:
                continue
            try:
                obj = ep.load()
                if callable(obj):
                    obj()
            except Exception as exc:  # noqa: BLE001 - re-raised with context below
                dist = getattr(getattr(ep, "dist", None), "name", "?")
                message = (
                    f"Spectra plugin {ep.name!r} (package {dist!r}, entry point "
                    f"{ep.group}:{ep.value}) failed to load: {type(exc).__name__}: {exc}"
                )
                if skip:
                    warnings.warn(message + " -- skipped", RuntimeWarning, stacklevel=2)
                    continue
                raise PluginLoadError(
                    message + ". Fix or uninstall the plugin, or set "
                    "SPECTRA_SKIP_BROKEN_PLUGINS=1 to skip broken plugins."
                ) from exc
            _LOADED[ep.name] = ep
        _DONE = True
    finally:
        _LOADING = False
    return dict(_LOADED)


def loaded_plugins() -> dict[str, EntryPoint]:
    """Plugins loaded so far."""
    return dict(_LOADED)
