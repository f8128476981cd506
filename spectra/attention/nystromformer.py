"""Nyströmformer (Xiong et al., arXiv 2102.03902): Nyström approximation of softmax attention.

With x = q·d^(-1/4), y = k·d^(-1/4), landmarks Q̃, K̃ = segment means of the queries and keys
(s segments each) and softmax taken row-wise::

    out = softmax(X K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · (softmax(Q̃ Yᵀ) V)

in O(L·s·d); pinv is the iterative Newton–Schulz pseudo-inverse (6 iterations, §3.3;
:func:`~spectra.ops.pinv.newton_schulz_pinv`). Padding: segment means are over real tokens
only, padded keys are masked out of softmax(Q̃ Yᵀ), landmark slots without tokens (fewer real
tokens than landmarks) are removed, padded queries output 0. The optional depthwise-convolution
skip connection of the authors' code is not included (it is not part of the approximation).
With s = L every token is its own landmark and the result equals softmax attention.
"""

from __future__ import annotations

import torch

from spectra.attention.base import Attention
from spectra.attention.landmarks import segment_means
from spectra.checks import positive_int
from spectra.ops.pinv import newton_schulz_pinv
from spectra.registry import ATTENTIONS

__all__ = ["NystromformerAttention", "masked_softmax"]


def masked_softmax(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to ``allowed`` entries; rows with none give 0."""
    has_any = allowed.any(dim=-1, keepdim=True)
    logits = logits.masked_fill(~allowed, float("-inf")).masked_fill(~has_any, 0.0)
    return torch.softmax(logits, dim=-1).masked_fill(~has_any, 0.0)


@ATTENTIONS.register("nystromformer")
class NystromformerAttention(Attention):
    """Nyströmformer (arXiv 2102.03902): softmax attention via segment-mean landmarks."""

    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.num_landmarks = positive_int(num_landmarks, "num_landmarks")
        if (
            isinstance(pinv_iterations, bool)
            or not isinstance(pinv_iterations, int)
            or (pinv_iterations < 0)
        ):
            raise ValueError(f"pinv_iterations must be an int >= 0, got {pinv_iterations!r}")
        self.pinv_iterations = pinv_iterations

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        dtype = q.dtype
        scale = self.head_dim**-0.25
        x, y, vv = q * scale, k * scale, v
        s = self.num_landmarks
        q_land, valid = segment_means(x, mask, s)  # (B, H, s, d), (B, s)
        k_land, _ = segment_means(y, mask, s)
        lm = valid[:, None, None, :]  # landmark columns (B, 1, 1, s)
        f = masked_softmax(x @ k_land.transpose(-1, -2), lm)  # (B, H, L, s)
        key_ok = (
            torch.ones(k.shape[0], 1, 1, k.shape[2], dtype=torch.bool, device=k.device)
            if mask is None
            else mask[:, None, None, :]
        )
        b_mat = masked_softmax(q_land @ y.transpose(-1, -2), key_ok & valid[:, None, :, None])
        eye = torch.eye(s, dtype=dtype, device=q.device)
        a = masked_softmax(q_land @ k_land.transpose(-1, -2), lm)
        row_ok = valid[:, None, :, None].to(dtype)
        a = a * row_ok + eye * (1.0 - row_ok)  # empty landmark slots: identity rows
        out = f @ (newton_schulz_pinv(a, self.pinv_iterations) @ (b_mat @ vv))
        if mask is not None:
            out = out * mask[:, None, :, None].to(dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_landmarks={self.num_landmarks}, "
            f"pinv_iterations={self.pinv_iterations}"
        )
