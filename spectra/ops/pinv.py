"""Iterative (Newton–Schulz-type) Moore–Penrose pseudo-inverse, as used by Nyströmformer
(arXiv 2102.03902, §3.3) and Skyformer (arXiv 2111.00035, §4).

Iteration (Razavi et al. 2014, the higher-order Newton–Schulz variant of Nyströmformer)::

    Z_{k+1} = ¼ Z_k (13 I − A Z_k (15 I − A Z_k (7 I − A Z_k)))

started from Z_0 = Aᵀ / (‖A‖₁ ‖A‖_∞) (per matrix). Since σ_max(A)² ≤ ‖A‖₁ ‖A‖_∞, the
eigenvalues of A Z_0 lie in (0, 1], which makes Z_k → A⁺. For symmetric A every eigenvalue μ of
A Z_k moves independently, μ ← μ(13 − 15μ + 7μ² − μ³)/4: ≈ 13/4-fold growth while μ is small,
then cubic convergence, 1 − μ = e ← ¾e³ + ¼e⁴. Starting from μ₀ = λ_min(A)²/(‖A‖₁ ‖A‖_∞),
⌈log(1/μ₀)/log(13/4)⌉ + 3 iterations reach float64 accuracy, so the count needed grows with
log cond(A). Only matmuls: it runs on any device and in any floating dtype, and is
differentiable.
"""

from __future__ import annotations

import torch

__all__ = ["newton_schulz_pinv"]


def newton_schulz_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Approximate pseudo-inverse of ``a`` (…, n, n) by ``iterations`` steps (see module doc)."""
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"newton_schulz_pinv needs square matrices (…, n, n), got {tuple(a.shape)}"
        )
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    n = a.shape[-1]
    if n == 0:  # the pseudo-inverse of a 0×0 matrix is 0×0
        return a.transpose(-1, -2).clone()
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1)  # max column sum
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # max row sum
    scale = norm_1 * norm_inf
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    z = a.transpose(-1, -2) / scale[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z
