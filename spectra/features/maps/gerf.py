"""Generalized exponential random features, GERF (FAVOR++ / "Chefs' random tables", 2205.15317).

For ω ~ N(0, I_d) and A < 1/4::

    f(ω, x) = D exp(A‖ω‖² + B ωᵀx − ‖x‖²/2),   B = √(1 − 4A),   D = (1 − 4A)^(d/4),

    E[f(ω, x) f(ω, y)] = D² (1 − 4A)^(−d/2) exp(B²‖x + y‖² / (2(1 − 4A)) − (‖x‖² + ‖y‖²)/2)
                       = exp(xᵀy).

φ(x) = m^(-1/2) [f(ω_r, x)]_r. A = 0 is FAVOR+ (posrf). The second moment of one feature is

    E[f(ω,x)² f(ω,y)²] = (1 − 4A)^d (1 − 8A)^(−d/2) exp(2(1 − 4A)‖x + y‖²/(1 − 8A) − ‖x‖² − ‖y‖²),

finite only for A < 1/8 (:func:`gerf_log_second_moment`); with m iid features the variance of
the estimate is (that − exp(2xᵀy)) / m. The map therefore accepts only A < 1/8
(:func:`check_gerf_a`).
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

__all__ = [
    "GeneralizedExponentialFeatures",
    "gerf_exponent",
    "gerf_log_second_moment",
    "gerf_pairs_log_second_moment",
]


def gerf_exponent(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    """e(x) = A‖ω_r‖² + √(1−4A) ω_rᵀx − ‖x‖²/2 + (d/4) log(1−4A) − ½ log m, shape (…, L, m).

    ``a`` is a float or a tensor broadcastable to the leading dims (…) of ``x`` (one A per
    (batch, head)); ``w`` is (…, m, d).
    """
    d, m = x.shape[-1], w.shape[-2]
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    one_minus_4a = 1.0 - 4.0 * a
    token = (
        -0.5 * x.square().sum(-1)
        + (0.25 * d * one_minus_4a.log() - 0.5 * math.log(m))[..., None]
    )
    x_scaled = x * one_minus_4a.sqrt()[..., None, None]
    return projected_exponent(x_scaled, w, token, a[..., None] * w.square().sum(-1))


def gerf_log_second_moment(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | float
) -> torch.Tensor:
    """log E[f(ω,x)² f(ω,y)²] of one GERF feature (ω ~ N(0, I_d)); +∞ for A ≥ 1/8.

    = d log(1−4A) − (d/2) log(1−8A) + 2(1−4A)‖x+y‖²/(1−8A) − ‖x‖² − ‖y‖², broadcast over
    x (…, d), y (…, d) and ``a``. Var of the m-feature iid average = (exp(this) − exp(2xᵀy)) / m.
    """
    d = x.shape[-1]
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    s = (x + y).square().sum(-1)
    value = (
        d * torch.log1p(-4.0 * a)
        - 0.5 * d * torch.log1p(-8.0 * a)
        + 2.0 * (1.0 - 4.0 * a) * s / (1.0 - 8.0 * a)
        - x.square().sum(-1)
        - y.square().sum(-1)
    )
    return torch.where(a < 0.125, value, torch.full_like(value, math.inf))


def gerf_pairs_log_second_moment(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | float
) -> torch.Tensor:
    """:func:`gerf_log_second_moment` for all pairs (x_i, y_j), shape (…, Lx, Ly), without an
    (Lx, Ly, d) tensor; ``a`` is a float or one A per leading index (…)."""
    d = x.shape[-1]
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)[..., None, None]
    value = (
        d * torch.log1p(-4.0 * a)
        - 0.5 * d * torch.log1p(-8.0 * a.clamp_max(0.125 - 1e-12))
        + 2.0 * (1.0 - 4.0 * a) / (1.0 - 8.0 * a) * pairwise_quadratic(x, y)
        - pairwise_sq_norms(x, y)
    )
    return torch.where(a < 0.125, value, torch.full_like(value, math.inf))


def check_gerf_a(a: object) -> float:
    """Validate a GERF parameter A (a real number < 1/8) and return it as a float.

    A < 1/4 makes f well defined and unbiased; A < 1/8 is also needed for a finite variance
    (E[f²f²] ∝ (1 − 8A)^(−d/2)), so 1/8 ≤ A < 1/4 is rejected too.
    """
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
        raise ValueError(f"gerf: A must be a finite real number < 1/8, got {a!r}")
    if a >= 0.25:
        raise ValueError(
            f"gerf: A must be < 1/4 (B = √(1−4A) and D = (1−4A)^(d/4) need 1−4A > 0), got A={a}; "
            "gerf accepts A < 1/8 (finite variance), and A ≤ 0 keeps features bounded"
        )
    if a >= 0.125:
        raise ValueError(
            f"gerf: A must be < 1/8, got A={a}: for 1/8 ≤ A < 1/4 the estimate is unbiased but its "
            "variance is infinite (E[f(ω,x)² f(ω,y)²] contains E[exp(4A‖ω‖²)] = ∞ for "
            "ω ~ N(0, I)); use A < 1/8, and A ≤ 0 keeps features bounded"
        )
    return float(a)


@FEATURE_MAPS.register("gerf")
class GeneralizedExponentialFeatures(ExponentialFeatureMap):
    """GERF φ(x) = m^(-1/2) D exp(A‖ω‖² + B ωᵀx − ‖x‖²/2), fixed A (arXiv 2205.15317).

    ``A`` < 1/4 is required for unbiasedness and A < 1/8 for finite variance, so A < 1/8 is
    required; A ≤ 0 keeps the exponent bounded above in ω. The default A = −0.1 is close to the
    optimal A* of FAVOR++ for typical attention inputs (ρ ≈ 2/√d, d ≈ 64); a fixed A is
    data-independent, hence usable in causal attention (``oprf`` picks A* from the data instead).
    """

    def __init__(self, A: float = -0.1) -> None:
        super().__init__()
        self.A = check_gerf_a(A)

    def exponents(self, x, y, w, x_mask=None, y_mask=None):  # type: ignore[override]
        return gerf_exponent(x, w, self.A), gerf_exponent(y, w, self.A)

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        return gerf_pairs_log_second_moment(x, y, self.A)

    def extra_repr(self) -> str:
        return f"A={self.A}"
