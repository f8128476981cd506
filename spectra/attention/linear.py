"""Linear attention with φ(x) = elu(x) + 1 (Katharopoulos et al., arXiv 2006.16236).

out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + ε) — a positive, deterministic feature
map applied to q and k as given (the paper uses no d^(-1/4) scaling); causal mode sums over
j ≤ i by chunks (:func:`~spectra.ops.causal_linear_attention`). Padded tokens get φ = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectra.attention.base import Attention
from spectra.checks import positive_int
from spectra.ops.linear import causal_linear_attention, linear_attention
from spectra.registry import ATTENTIONS

__all__ = ["LinearAttention", "elu_feature_map"]


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 > 0 elementwise."""
    return F.elu(x) + 1.0


@ATTENTIONS.register("linear")
class LinearAttention(Attention):
    """Katharopoulos et al. (arXiv 2006.16236) linear attention, φ = elu + 1."""

    def __init__(
        self,
        head_dim: int,
        eps: float = 1e-6,
        chunk_size: int = 128,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.chunk_size = positive_int(chunk_size, "chunk_size")

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
        if mask is not None:
            keep = mask[:, None, :, None]
            phi_q = phi_q.masked_fill(~keep, 0.0)
            phi_k = phi_k.masked_fill(~keep, 0.0)
        if causal:
            return causal_linear_attention(
                phi_q, phi_k, v, chunk_size=self.chunk_size, eps=self.eps
            )
        return linear_attention(phi_q, phi_k, v, eps=self.eps)
