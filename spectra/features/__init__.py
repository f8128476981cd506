"""Random features: weight-matrix samplers × component functions (arXiv 2405.15310)."""

from spectra.features import maps, samplers  # noqa: F401
from spectra.features.estimate import kernel_estimate
from spectra.features.maps import ExponentialFeatureMap, FeatureMap
from spectra.features.samplers import Sampler, seeded_generator

__all__ = [
    "ExponentialFeatureMap",
    "FeatureMap",
    "Sampler",
    "kernel_estimate",
    "seeded_generator",
]
