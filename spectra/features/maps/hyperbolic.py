"""Hyperbolic positive random features (Performer, arXiv 2009.14794, FAVOR+ "hyp" variant).

φ(x) = (2m)^(-1/2) exp(−‖x‖²/2) [exp(Wx), exp(−Wx)] (2m outputs): feature r and r + m share
ω_r, and ½ E[exp(ωᵀz) + exp(−ωᵀz)] = exp(‖z‖²/2) for z = x + y, so E[φ(x)ᵀφ(y)] = exp(xᵀy).
The antithetic pair ±ω lowers the variance relative to posrf with the same m.
"""

from __future__ import annotations

import math

import torch

from spectra.features.maps.base import (
    ExponentialFeatureMap,
    pairwise_quadratic,
    pairwise_sq_norms,
)
from spectra.features.maps.projection import projected_exponent
from spectra.registry import FEATURE_MAPS

__all__ = ["HyperbolicFeatures", "hyperbolic_exponent"]


def hyperbolic_exponent(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e(x) = [Wx, −Wx] − ‖x‖²/2 − ½ log(2m), shape (…, L, 2m)."""
    m = w.shape[-2]
    token = -0.5 * x.square().sum(-1) - 0.5 * math.log(2 * m)
    return projected_exponent(x, torch.cat([w, -w], dim=-2), token)


@FEATURE_MAPS.register("hyperbolic")
class HyperbolicFeatures(ExponentialFeatureMap):
    """φ(x) = (2m)^(-1/2) exp(−‖x‖²/2) [exp(Wx), exp(−Wx)], positive (arXiv 2009.14794)."""

    def output_dim(self, num_features: int) -> int:
        return 2 * num_features

    def exponents(self, x, y, w, x_mask=None, y_mask=None):  # type: ignore[override]
        return hyperbolic_exponent(x, w), hyperbolic_exponent(y, w)

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """g = e^{−(‖x‖²+‖y‖²)/2} cosh(ωᵀ(x+y)): E[g²] = e^{−‖x‖²−‖y‖²} (1 + e^{2‖x+y‖²}) / 2."""
        z2 = pairwise_quadratic(x, y)
        return (
            torch.logaddexp(torch.zeros_like(z2), 2.0 * z2)
            - math.log(2.0)
            - pairwise_sq_norms(x, y)
        )
