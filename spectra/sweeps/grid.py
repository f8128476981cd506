"""The Spectraformer grid (arXiv 2405.15310): every registered sampler × every registered component
function (feature map), plus exact/non-random-feature baselines (softmax, Skyformer 2111.00035).

The axes come from the registries at sweep time, so a plugin's components (e.g. ``halton``) join
the grid as soon as the plugin is installed. A grid cell is a set of Hydra overrides::

    random-feature cell:  attention=spectraformer attention/sampler=qmc attention/feature_map=oprf
    baseline cell:        attention=softmax

Pure Python (the registries are read lazily, Hydra is not imported), so it can be used to build
W&B sweep specs and reports as well as Hydra sweeps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spectra.registry import FEATURE_MAPS, SAMPLERS, Registry

__all__ = [
    "AXES",
    "DEFAULT_BASELINES",
    "RANDOM_FEATURES_PRESET",
    "Axis",
    "GridCell",
    "GridError",
    "axis_values",
    "check_baselines",
    "check_configs",
    "check_names",
    "grid_cells",
]


class GridError(ValueError):
    """A grid over names that are not registered (or have no config), or a malformed grid."""


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: the attention option it sets, its Hydra config group, its registry."""

    key: str  # option of the random-feature attention: attention.<key>.name
    group: str  # Hydra config group selecting it: attention/<key>
    registry: Registry

    @property
    def kind(self) -> str:
        return self.registry.kind


AXES: dict[str, Axis] = {
    "sampler": Axis("sampler", "attention/sampler", SAMPLERS),
    "feature_map": Axis("feature_map", "attention/feature_map", FEATURE_MAPS),
}
"""The grid's axes, in table order: rows (samplers) then columns (component functions)."""

DEFAULT_BASELINES: tuple[str, ...] = ("softmax", "skyformer")
RANDOM_FEATURES_PRESET = "spectraformer"  # conf/attention/spectraformer.yaml: any sampler × map


@dataclass(frozen=True, order=True)
class GridCell:
    """One grid cell: a random-feature attention (sampler × feature map) or a baseline attention.

    ``attention`` is an option of the ``attention`` config group (a preset YAML), which for a
    random-feature cell is the preset whose sampler and feature map are replaced.
    """

    attention: str
    sampler: str | None = None
    feature_map: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.sampler is None and self.feature_map is None

    def overrides(self) -> list[str]:
        """Hydra overrides selecting this cell."""
        out = [f"attention={self.attention}"]
        for name, axis in AXES.items():
            value = getattr(self, name)
            if value is not None:
                out.append(f"{axis.group}={value}")
        return out

    @property
    def label(self) -> str:
        """``sampler × feature_map`` or the baseline's name."""
        if self.is_baseline:
            return self.attention
        return " × ".join(str(getattr(self, name)) for name in AXES)


def check_names(axis: str, names: Iterable[str]) -> list[str]:
    """``names`` of axis ``axis`` (``sampler`` or ``feature_map``) if all are registered.

    Raises :class:`GridError` listing every unknown name and the registered ones.
    """
    if axis not in AXES:
        raise GridError(f"unknown grid axis {axis!r}; axes: {', '.join(AXES)}")
    registry = AXES[axis].registry
    return _check_registered(registry, names, what=f"{axis} axis")


def _check_registered(registry: Registry, names: Iterable[str], *, what: str) -> list[str]:
    values = [str(n) for n in names]
    if not values:
        raise GridError(f"the {what} is empty; registered {registry.kind}s: "
                        + ", ".join(registry.names()))
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise GridError(f"the {what} lists {', '.join(duplicates)} more than once")
    unknown = [v for v in values if v not in registry]
    if unknown:
        raise GridError(
            f"the {what} names unregistered {registry.kind}(s) {', '.join(map(repr, unknown))}; "
            f"registered {registry.kind}s: {', '.join(registry.names())}"
        )
    return values


def axis_values(axis: str, names: Sequence[str] | None = None) -> list[str]:
    """The values of one axis: ``names`` (checked against the registry), or every registered
    name when ``names`` is None."""
    if axis not in AXES:
        raise GridError(f"unknown grid axis {axis!r}; axes: {', '.join(AXES)}")
    if names is None:
        return AXES[axis].registry.names()
    return check_names(axis, names)


def check_baselines(names: Iterable[str]) -> list[str]:
    """Baseline cells: options of the ``attention`` config group (presets such as ``softmax``,
    ``skyformer``, ``favor_plus``), without duplicates. Whether each preset exists is a question
    for the config search path: :func:`check_configs` answers it."""
    values = [str(n) for n in names]
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise GridError(f"the baselines list names {', '.join(duplicates)} more than once")
    return values


def grid_cells(
    samplers: Sequence[str] | None = None,
    feature_maps: Sequence[str] | None = None,
    baselines: Sequence[str] | None = DEFAULT_BASELINES,
    random_features: str = RANDOM_FEATURES_PRESET,
) -> list[GridCell]:
    """Every sampler × every feature map (random-feature cells, in registry order), then the
    baselines. ``None`` for an axis means every registered name; names are checked."""
    rows = axis_values("sampler", samplers)
    cols = axis_values("feature_map", feature_maps)
    cells = [GridCell(random_features, s, f) for s, f in itertools.product(rows, cols)]
    cells += [GridCell(b) for b in check_baselines(baselines or ())]
    return cells


def check_configs(cells: Sequence[GridCell], group_options: dict[str, Sequence[str]]) -> None:
    """Check that every cell can be selected in Hydra: ``group_options`` maps a config group
    (``attention``, ``attention/sampler``, ``attention/feature_map``) to its options over the
    whole search path. A registered component without a YAML raises :class:`GridError` saying
    which file to add."""
    missing: list[str] = []
    for cell in cells:
        wanted = [("attention", cell.attention)]
        wanted += [(AXES[n].group, getattr(cell, n)) for n in AXES if getattr(cell, n) is not None]
        for group, option in wanted:
            if option not in group_options.get(group, ()):
                line = f"{group}/{option}.yaml"
                if line not in missing:
                    missing.append(line)
    if missing:
        available = "; ".join(
            f"{group}: {', '.join(sorted(opts))}" for group, opts in sorted(group_options.items())
        )
        raise GridError(
            "registered component(s) without a Hydra config: add "
            + ", ".join(missing)
            + " (a YAML with at least `name: <registered name>`) to conf/ or to the plugin's "
            f"conf/. Config options found: {available}"
        )
