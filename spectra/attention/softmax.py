"""Exact softmax attention (Vaswani et al. 2017, arXiv 1706.03762) via PyTorch SDPA.

out_i = Σ_j exp(q_iᵀk_j/√d) v_j / Σ_j exp(q_iᵀk_j/√d), i.e. the softmax kernel exp(xᵀy) on
x = q·d^(-1/4), y = k·d^(-1/4): the target that random features approximate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectra.attention.base import Attention
from spectra.registry import ATTENTIONS

__all__ = ["SoftmaxAttention"]


@ATTENTIONS.register("softmax")
class SoftmaxAttention(Attention):
    """Exact softmax attention, ``torch.nn.functional.scaled_dot_product_attention``."""

    computes_in_float32 = False  # SDPA runs in the input dtype (flash kernels in bf16/fp16)

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        length = k.shape[2]
        allowed = mask[:, None, None, :]  # (B, 1, 1, L): real keys
        if causal:
            tri = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            allowed = allowed & tri  # (B, 1, L, L)
        # A row with no allowed key would be a softmax over nothing (NaN): let it see every key,
        # then zero its output. Padded query positions are zeroed too.
        has_key = allowed.any(dim=-1, keepdim=True)  # (B, 1, L or 1, 1)
        allowed = allowed | ~has_key
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        keep = has_key & mask[:, None, :, None]
        return out.masked_fill(~keep, 0.0)
