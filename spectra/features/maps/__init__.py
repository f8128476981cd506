"""Component functions (feature maps) φ with E[φ(x)ᵀφ(y)] = exp(xᵀy)."""

from spectra.features.maps import (  # noqa: F401  (imports register the maps)
    gerf,
    hyperbolic,
    oprf,
    posrf,
    saderf,
    sderf,
    trig,
)
from spectra.features.maps.base import ExponentialFeatureMap, FeatureMap

__all__ = ["ExponentialFeatureMap", "FeatureMap"]
