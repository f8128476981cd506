"""Exact Gaussian-kernel ("kernelized") attention, the target of Skyformer (arXiv 2111.00035).

With x = q·d^(-1/4), y = k·d^(-1/4) and the Gaussian kernel κ(a, b) = exp(−‖a − b‖²/2)::

    out_i = Σ_j κ(x_i, y_j) v_j          (no row normalization)

the "Kernelized Attention" of the Skyformer paper, which :mod:`spectra.attention.skyformer`
approximates by Nyström. Padded keys are left out of the sum, padded queries output 0, a query
without any key outputs 0. ``causal=True`` restricts the sum to j ≤ i.

Two implementations of the same formula (``implementation``):

* ``"sdpa"`` (default): O(L) memory through ``scaled_dot_product_attention``. Since
  −‖x − y‖²/2 = (xᵀy − ‖y‖²/2) − ‖x‖²/2, SDPA on the augmented vectors x' = [x, 1, ‖x‖²/2],
  y'_j = [y_j, −‖y_j‖²/2, 0] plus one "sink" key s = [0, 0, 1] with value [0, 1] (logit ‖x‖²/2,
  never below any real logit) returns [Σ_j κ_ij v_j, 1] / (1 + Σ_j κ_ij); dividing by its last
  column removes the normalization exactly. The sink also keeps key-less rows finite.
* ``"dense"``: the explicit (Lq × Lk) matrix :func:`~spectra.attention.skyformer.gaussian_kernel`
  times V (O(Lq·Lk) memory), the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectra.attention.base import Attention
from spectra.attention.skyformer import gaussian_kernel
from spectra.attention.sparse_utils import empty_output
from spectra.registry import ATTENTIONS

__all__ = ["KernelizedAttention"]

_IMPLEMENTATIONS = ("sdpa", "dense")


@ATTENTIONS.register("kernelized")
class KernelizedAttention(Attention):
    """Exact Gaussian-kernel attention κ(Q, K) V (Skyformer's kernelized attention, 2111.00035)."""

    def __init__(
        self,
        head_dim: int,
        implementation: str = "sdpa",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        if implementation not in _IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.implementation = implementation

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        if q.shape[2] == 0 or k.shape[2] == 0:
            return empty_output(q, k, v)
        scale = self.head_dim**-0.25
        x, y = q * scale, k * scale
        if self.implementation == "dense":
            out = self._dense(x, y, v, mask, causal)
        else:
            out = self._sdpa(x, y, v, mask, causal)
        if mask is not None:
            out = out.masked_fill(~mask[:, None, :, None], 0.0)
        return out

    @staticmethod
    def _dense(x, y, v, mask, causal) -> torch.Tensor:
        kern = gaussian_kernel(x, y)  # (B, H, Lq, Lk)
        if mask is not None:
            kern = kern * mask[:, None, None, :].to(kern.dtype)
        if causal:
            kern = kern.tril()
        return kern @ v

    @staticmethod
    def _sdpa(x, y, v, mask, causal) -> torch.Tensor:
        lq, lk, dv = x.shape[2], y.shape[2], v.shape[-1]
        # one head dim for q, k, v, a multiple of 8 (what the fused SDPA kernels take)
        width = -(-max(x.shape[-1] + 2, dv + 1) // 8) * 8
        half_x = 0.5 * x.square().sum(-1, keepdim=True)
        half_y = 0.5 * y.square().sum(-1, keepdim=True)
        qa = F.pad(
            torch.cat([x, torch.ones_like(half_x), half_x], dim=-1), (0, width - x.shape[-1] - 2)
        )
        ka = F.pad(
            torch.cat([y, -half_y, torch.zeros_like(half_y)], dim=-1), (0, width - y.shape[-1] - 2)
        )
        sink_k = torch.zeros_like(ka[:, :, :1])
        sink_k[..., x.shape[-1] + 1] = 1.0
        ka = torch.cat([sink_k, ka], dim=2)  # (B, H, 1 + Lk, width): the sink is key 0
        va = F.pad(v, (0, width - dv))
        sink_v = torch.zeros_like(va[:, :, :1])
        sink_v[..., dv] = 1.0
        va = torch.cat([sink_v, va], dim=2)
        allowed = None
        if mask is not None:  # (B, 1, 1, 1 + Lk): real keys and the sink
            allowed = F.pad(mask, (1, 0), value=True)[:, None, None, :]
        if causal:
            tri = torch.ones(lq, lk, dtype=torch.bool, device=x.device).tril()
            tri = F.pad(tri, (1, 0), value=True)
            allowed = tri if allowed is None else allowed & tri
        out = F.scaled_dot_product_attention(qa, ka, va, attn_mask=allowed, scale=1.0)
        return out[..., :dv] / out[..., dv : dv + 1]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, implementation={self.implementation!r}"
