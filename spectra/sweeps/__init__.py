"""Sweeps and reports: the Spectraformer grid (every registered sampler × every registered
component function, arXiv 2405.15310) as a Hydra sweeper, a sweep callback that validates names
and records run statuses, W&B sweep specs, and the report / dashboard builder.

Importing this package is cheap: no torch, Lightning, W&B or matplotlib (the submodules that need
Hydra, matplotlib or W&B import them themselves)."""

from spectra.sweeps.grid import (
    AXES,
    DEFAULT_BASELINES,
    RANDOM_FEATURES_PRESET,
    GridCell,
    GridError,
    axis_values,
    grid_cells,
)
from spectra.sweeps.status import read_status, write_status

__all__ = [
    "AXES",
    "DEFAULT_BASELINES",
    "RANDOM_FEATURES_PRESET",
    "GridCell",
    "GridError",
    "axis_values",
    "grid_cells",
    "read_status",
    "write_status",
]
