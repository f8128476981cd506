"""Simplified asymmetric dense-exponential random features, SADERF (FAVOR#, arXiv 2302.00787).

exp(xᵀy) = exp((Ψx)ᵀ(Ψ⁻¹y)) for any positive diagonal Ψ, so queries are mapped x → Ψx, keys
y → Ψ⁻¹y and OPRF (:mod:`~spectra.features.maps.oprf`) is applied to the transformed pair. The
kernel is unchanged; only the variance moves. OPRF's objective grows with
ρ = (mean‖Ψx_i‖² + mean‖Ψ⁻¹y_j‖² + 2 x̄ᵀȳ)/d (the cross term does not depend on Ψ), i.e. with
Σ_l Ψ_l² a_l + Ψ_l⁻² b_l, a_l = mean_i x_il², b_l = mean_j y_jl², minimized at

    Ψ_l = (b_l / a_l)^(1/4) = (mean_j y_jl² / mean_i x_il²)^(1/4),

which balances the two sides: mean_i (Ψ_l x_il)² = mean_j (y_jl / Ψ_l)² = √(a_l b_l). Large
keys make Ψ_l > 1 and enlarge the queries. (With equal numbers of valid queries and keys, as in
the paper, means and sums agree.) Google's reference code inverts Ψ (DESIGN.md §1), which
squares the imbalance ratio b_l/a_l instead of removing it. Ψ is computed per (batch, head) over
valid tokens and detached; coordinates without signal on one side fall back to Ψ_l = 1, and Ψ_l
is clipped to [1e-4, 1e4] (any positive Ψ keeps the estimator unbiased).
"""

from __future__ import annotations

import torch

from spectra.features.maps.oprf import OptimalPositiveFeatures
from spectra.features.maps.stats import masked_mean
from spectra.registry import FEATURE_MAPS

__all__ = ["SimplifiedAsymmetricDenseExponentialFeatures", "saderf_psi"]

_PSI_MIN, _PSI_MAX = 1e-4, 1e4


@torch.no_grad()
def saderf_psi(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ψ_l = (mean_j y_jl² / mean_i x_il²)^(1/4) over valid tokens, shape (…, d), detached."""
    a = masked_mean(x.detach().square(), x_mask)
    b = masked_mean(y.detach().square(), y_mask)
    tiny = torch.finfo(x.dtype).tiny
    ok = (a > tiny) & (b > tiny)
    ratio = torch.where(ok, b / torch.where(ok, a, torch.ones_like(a)), torch.ones_like(a))
    return ratio.pow(0.25).clamp(_PSI_MIN, _PSI_MAX)


@FEATURE_MAPS.register("saderf")
class SimplifiedAsymmetricDenseExponentialFeatures(OptimalPositiveFeatures):
    """SADERF: OPRF on (Ψx, Ψ⁻¹y), Ψ_l = (mean y_l² / mean x_l²)^(1/4) (arXiv 2302.00787).

    With orthogonal ω this is FAVOR# (bidirectional). Data-dependent, so not causal.
    """

    def exponents(self, x, y, w, x_mask=None, y_mask=None):  # type: ignore[override]
        psi = saderf_psi(x, y, x_mask, y_mask).unsqueeze(-2)  # (…, 1, d)
        return super().exponents(x * psi, y / psi, w, x_mask, y_mask)
