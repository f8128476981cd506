"""Hydra search-path plugin of spectra-halton: makes ``spectra_halton/conf`` visible to Hydra.

Hydra imports every module under the ``hydra_plugins`` namespace package at startup and calls
``manipulate_search_path`` before it composes a config, so ``attention/sampler=halton`` and
``attention/feature_map=poisrf`` resolve without the application importing this plugin. The
config directory is located with ``importlib.util.find_spec`` (no import of torch or of the
plugin's components here); it is appended, so the application's own configs take precedence.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "spectra-halton"


def config_dir() -> Path:
    """Directory of the plugin's Hydra configs (``…/spectra_halton/conf``)."""
    spec = importlib.util.find_spec("spectra_halton")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("spectra_halton is not importable: reinstall the spectra-halton package")
    return Path(next(iter(spec.submodule_search_locations))) / "conf"


class SpectraHaltonSearchPathPlugin(SearchPathPlugin):
    """Appends ``file://<spectra_halton>/conf`` to Hydra's config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=PROVIDER, path=f"file://{config_dir()}")
