"""Optimal positive random features, OPRF (FAVOR++, arXiv 2205.15317).

GERF (:mod:`spectra.features.maps.gerf`) with the A that minimizes the mean over all query–key
pairs of the log second moment of one feature. Per coordinate (divide by d) that objective is

    L(A) = log(1−4A) − ½ log(1−8A) + 2ρ (1−4A)/(1−8A),   ρ = mean_{i,j} ‖x_i + y_j‖² / d,

and L'(A) = 0 ⇔ 16A² − 2(1−2ρ)A − ρ = 0, whose root with A < 1/8 is

    A* = (1 − 2ρ − √((2ρ+1)² + 8ρ)) / 16  ≤ 0.

ρ is computed per (batch, head) over valid tokens only and detached (a constant).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from spectra.features.maps.base import ExponentialFeatureMap
from spectra.features.maps.gerf import gerf_exponent, gerf_pairs_log_second_moment
from spectra.features.maps.stats import query_key_rho
from spectra.registry import FEATURE_MAPS

__all__ = ["OptimalPositiveFeatures", "optimal_a"]


def optimal_a(rho: torch.Tensor | float) -> torch.Tensor:
    """A*(ρ) = (1 − 2ρ − √((2ρ+1)² + 8ρ)) / 16 ≤ 0 for ρ ≥ 0 (FAVOR++, arXiv 2205.15317)."""
    if not isinstance(rho, torch.Tensor) or not rho.is_floating_point():
        rho = torch.as_tensor(rho, dtype=torch.float64)  # Python numbers: full precision
    rho = rho.clamp_min(0.0)
    return (1.0 - 2.0 * rho - ((2.0 * rho + 1.0).square() + 8.0 * rho).sqrt()) / 16.0


@FEATURE_MAPS.register("oprf")
class OptimalPositiveFeatures(ExponentialFeatureMap):
    """OPRF: GERF with A = A*(ρ) from the queries and keys themselves (arXiv 2205.15317).

    Data-dependent (looks at all tokens), so not causal.
    """

    data_dependent: ClassVar[bool] = True

    def optimal_a(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A* per leading index (batch, head), shape (…), detached."""
        return optimal_a(query_key_rho(x, y, x_mask, y_mask))

    def statistics(self, x, y, x_mask=None, y_mask=None):  # type: ignore[override]
        """(A* (…),)."""
        return (self.optimal_a(x, y, x_mask, y_mask),)

    def rowwise_exponents(self, x, y, w, *stats):  # type: ignore[override]
        (a,) = stats
        return gerf_exponent(x, w, a), gerf_exponent(y, w, a)

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """GERF's closed form with this map's A* from all of x and y."""
        return gerf_pairs_log_second_moment(x, y, self.optimal_a(x, y))
