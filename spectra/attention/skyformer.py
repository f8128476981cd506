"""Skyformer: Gaussian-kernel attention approximated by Nyström (Chen et al., arXiv 2111.00035).

With x = q·d^(-1/4), y = k·d^(-1/4) and the Gaussian kernel κ(a, b) = exp(−‖a − b‖²/2), the
attention is κ(Q, K) V with no row normalization (the Gaussian kernel replaces softmax; the
paper's "Kernelized Attention"). κ(Q, K) is the upper-right block of the PSD kernel matrix
C = κ(X̄, X̄) of the joint set X̄ = [Q; K], so it is approximated by Nyström on C with s
landmarks Z ⊂ X̄ (half from the queries, half from the keys)::

    κ(Q, K) ≈ κ(Q, Z) (κ(Z, Z) + λI)⁻¹ κ(Z, K),     out = κ(Q, Z) [(κ(Z, Z) + λI)⁻¹ (κ(Z, K) V)]

in O(L·s·d). As in the authors' implementation (github.com/pkuzengqi/Skyformer): λ = 0.1, the
landmark matrix is symmetrically normalized, M = D^(-1/2)(κ(Z,Z) + λI)D^(-1/2) with D its row
sums (eigenvalues in (0, 1]), M⁻¹ is computed by the iterative Newton–Schulz pseudo-inverse
(:func:`~spectra.ops.pinv.newton_schulz_pinv`, 6 iterations), and (κ(Z,Z) + λI)⁻¹ =
D^(-1/2) M⁻¹ D^(-1/2).

Landmarks: in training, uniform random real tokens drawn WITHOUT replacement. This is our
choice: the authors' code draws iid uniform indices, i.e. with replacement; without
replacement no landmark is spent on a duplicate, and s ≥ 2L takes every token (see
:func:`~spectra.attention.landmarks.uniform_indices`). In eval: evenly spaced real tokens
(deterministic), or ``landmarks="segment_means"`` (Nyströmformer-style means). Padded tokens
are never landmarks and padded keys are removed from κ(Z, K); padded queries output 0.

Exactness: with s ≥ 2L every query and key is a landmark (in every landmark mode), and for
λ = 0 the Nyström formula is exact, κ(Q,Z) κ(Z,Z)⁺ κ(Z,K) = κ(Q,K). The module reaches it only
once Newton–Schulz has converged: the slowest eigenvalue of M Z_k starts at
μ₀ = λ_min(M)²/‖M‖₁², grows ≈ 13/4-fold per iteration, then converges cubically, so
⌈log(1/μ₀)/log(13/4)⌉ + 3 iterations suffice (in float64; ``tests/test_skyformer.py``). For
random unit-scale inputs with d = 4–16 that is 8–20 iterations, and the default 6 leaves
relative errors up to ≈ 4e-2; only well-conditioned M (e.g. d ≥ 32) is exact after 6.
"""

from __future__ import annotations

import torch

from spectra.attention.base import Attention
from spectra.attention.landmarks import (
    gather_tokens,
    segment_means,
    systematic_indices,
    uniform_indices,
)
from spectra.checks import positive_int
from spectra.ops.pinv import newton_schulz_pinv
from spectra.registry import ATTENTIONS

__all__ = ["SkyformerAttention", "gaussian_kernel"]

_LANDMARKS = ("uniform", "segment_means")


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """κ(a_i, b_j) = exp(−‖a_i − b_j‖²/2) for a (…, n, d), b (…, s, d) → (…, n, s)."""
    sq = (
        a @ b.transpose(-1, -2)
        - 0.5 * a.square().sum(-1, keepdim=True)
        - 0.5 * b.square().sum(-1).unsqueeze(-2)
    )
    return sq.clamp_max(0.0).exp()  # ‖a − b‖² ≥ 0; the clamp removes rounding above 0


@ATTENTIONS.register("skyformer")
class SkyformerAttention(Attention):
    """Skyformer (arXiv 2111.00035): Nyström-approximated Gaussian-kernel attention κ(Q,K)V."""

    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        num_landmarks: int = 128,
        pinv_iterations: int = 6,
        regularization: float = 0.1,
        landmarks: str = "uniform",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.num_landmarks = positive_int(num_landmarks, "num_landmarks")
        if num_landmarks < 2:
            raise ValueError(
                f"num_landmarks must be >= 2 (half from the queries, half from the keys), "
                f"got {num_landmarks}"
            )
        if (
            isinstance(pinv_iterations, bool)
            or not isinstance(pinv_iterations, int)
            or (pinv_iterations < 0)
        ):
            raise ValueError(f"pinv_iterations must be an int >= 0, got {pinv_iterations!r}")
        self.pinv_iterations = pinv_iterations
        if (
            isinstance(regularization, bool)
            or not isinstance(regularization, (int, float))
            or (not regularization >= 0)
        ):
            raise ValueError(f"regularization λ must be a number >= 0, got {regularization!r}")
        self.regularization = float(regularization)
        if landmarks not in _LANDMARKS:
            raise ValueError(f"landmarks must be one of {_LANDMARKS}, got {landmarks!r}")
        self.landmarks = landmarks

    def _select(
        self, x: torch.Tensor, mask: torch.Tensor | None, num: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, length, _ = x.shape
        if self.landmarks == "segment_means":
            return segment_means(x, mask, num)
        if self.training:
            pos, valid = uniform_indices(mask, b, length, num, x.device)
        else:
            pos, valid = systematic_indices(mask, b, length, num, x.device)
        return gather_tokens(x, pos), valid

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        dtype = q.dtype
        scale = self.head_dim**-0.25
        x, y, vv = q * scale, k * scale, v
        s_q = self.num_landmarks // 2
        zq, valid_q = self._select(x, mask, s_q)
        zk, valid_k = self._select(y, mask, self.num_landmarks - s_q)
        z = torch.cat([zq, zk], dim=2)  # (B, H, s, d)
        valid = torch.cat([valid_q, valid_k], dim=1)[:, None, :]  # (B, 1, s)
        vf = valid.to(dtype)

        c_q = gaussian_kernel(x, z) * vf[..., None, :]  # κ(Q, Z), (B, H, L, s)
        c_k = gaussian_kernel(y, z) * vf[..., None, :]  # κ(K, Z)
        if mask is not None:
            c_k = c_k * mask[:, None, :, None].to(dtype)
        s = z.shape[2]
        eye = torch.eye(s, dtype=dtype, device=q.device)
        pair = vf[..., :, None] * vf[..., None, :]
        # invalid landmarks get an identity block: they decouple and are ignored
        a = gaussian_kernel(z, z) * pair + self.regularization * eye * pair
        a = a + eye * (1.0 - vf[..., :, None])
        d_inv_sqrt = a.sum(dim=-1).rsqrt()  # row sums > 0
        normed = d_inv_sqrt[..., :, None] * a * d_inv_sqrt[..., None, :]
        inv = newton_schulz_pinv(normed, self.pinv_iterations)
        inv = d_inv_sqrt[..., :, None] * inv * d_inv_sqrt[..., None, :]
        context = inv @ (c_k.transpose(-1, -2) @ vv)  # (B, H, s, d_v)
        out = c_q @ context
        if mask is not None:
            out = out * mask[:, None, :, None].to(dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_landmarks={self.num_landmarks}, "
            f"pinv_iterations={self.pinv_iterations}, regularization={self.regularization}, "
            f"landmarks={self.landmarks!r}"
        )
