"""Component functions (feature maps) φ with E[φ(x)ᵀφ(y)] = exp(xᵀy)."""

from spectra.features.maps import posrf  # noqa: F401
from spectra.features.maps.base import ExponentialFeatureMap, FeatureMap

__all__ = ["ExponentialFeatureMap", "FeatureMap"]
