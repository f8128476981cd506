"""Spectra: random-feature ("kernelized") attention as sampler × component function.

Performer (arXiv 2009.14794), FAVOR++ (2205.15317), FAVOR# (2302.00787), Skyformer (2111.00035)
and Spectraformer (2405.15310) in one framework: weight-matrix samplers and feature maps are
registered separately and composed by name into attention modules.
"""

from __future__ import annotations

__version__ = "0.1.0"

_BUILTINS_LOADED = False


def _load_builtin_components() -> None:
    """Import the core modules whose decorators fill the registries (once)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import spectra.attention
    import spectra.features  # noqa: F401


def _load_components() -> None:
    """The registries' loader: built-in components first, then the installed plugins."""
    from spectra.plugins import load_plugins

    _load_builtin_components()
    load_plugins()


def _install_loader() -> None:
    from spectra.registry import LOADERS

    if _load_components not in LOADERS:
        LOADERS.append(_load_components)


_install_loader()
