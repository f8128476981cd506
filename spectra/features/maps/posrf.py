"""Positive random features, FAVOR+ (Performer, arXiv 2009.14794).

φ(x) = m^(-1/2) exp(Wx − ‖x‖²/2): E[φ(x)ᵀφ(y)] = exp(xᵀy) for ω ~ N(0, I_d), all features > 0.
"""

from __future__ import annotations

import math

import torch

from spectra.features.maps.base import ExponentialFeatureMap
from spectra.features.maps.gerf import gerf_pairs_log_second_moment
from spectra.features.maps.projection import projected_exponent
from spectra.registry import FEATURE_MAPS


def posrf_exponent(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e(x) = Wx − ‖x‖²/2 − ½ log m, shape (…, L, m)."""
    m = w.shape[-2]
    return projected_exponent(x, w, -0.5 * x.square().sum(-1) - 0.5 * math.log(m))


@FEATURE_MAPS.register("posrf")
class PositiveRandomFeatures(ExponentialFeatureMap):
    """FAVOR+ positive features φ(x) = m^(-1/2) exp(Wx − ‖x‖²/2) (arXiv 2009.14794)."""

    def exponents(self, x, y, w, x_mask=None, y_mask=None):  # type: ignore[override]
        return posrf_exponent(x, w), posrf_exponent(y, w)

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """GERF with A = 0: log E[g²] = 2‖x+y‖² − ‖x‖² − ‖y‖²."""
        return gerf_pairs_log_second_moment(x, y, 0.0)
