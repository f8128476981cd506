"""Linformer (Wang et al. 2020, arXiv 2006.04768): softmax attention over projected keys/values.

Learned projections E, F ∈ R^(k × n_max) (``proj_length`` k, ``max_length`` n_max) compress the
keys and values along the sequence::

    out = softmax(Q (E K)ᵀ / √d) (F V)          (E K, F V ∈ R^(k × d))

in O(L·k·d). E and F are shared by the heads of a layer (the paper's "headwise sharing");
``share_kv=True`` uses one matrix for both (E = F, "key-value sharing", as in the LRA code of
Nyströmformer / Skyformer). They are initialized like fairseq's Linformer, Xavier-uniform with
gain 1/√2.

Padding: column r of E, F multiplies the real token of rank r (its position among the real
tokens), and padded keys get a zero column, so padded keys never contribute and the output does
not depend on where the padding sits. Padded queries output 0.

Sequence length: E and F have ``max_length`` columns, so at most ``max_length`` real tokens are
supported (a longer padded length is fine, e.g. ListOps pads 2000 tokens to 2048), and a
clear ``ValueError`` is raised beyond. The training app passes the task's maximum length through
the preset ``conf/attention/linformer.yaml``: ``max_length: ${task.max_length}`` (Hydra
interpolation, like ``head_dim: ${model.head_dim}``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spectra.attention.base import Attention
from spectra.attention.sparse_utils import empty_output
from spectra.checks import positive_int
from spectra.registry import ATTENTIONS

__all__ = ["LinformerAttention"]


@ATTENTIONS.register("linformer")
class LinformerAttention(Attention):
    """Linformer (arXiv 2006.04768): learned (k × max_length) projections of keys and values."""

    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        proj_length: int = 256,
        max_length: int = 4096,
        share_kv: bool = False,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.proj_length = positive_int(proj_length, "proj_length")
        self.max_length = positive_int(max_length, "max_length")
        if not isinstance(share_kv, bool):
            raise ValueError(f"share_kv must be a bool, got {share_kv!r}")
        self.share_kv = share_kv
        self.E = nn.Parameter(torch.empty(proj_length, max_length))
        self.F = None if share_kv else nn.Parameter(torch.empty(proj_length, max_length))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform with gain 1/√2 (fairseq's Linformer)."""
        for p in (self.E, self.F):
            if p is not None:
                nn.init.xavier_uniform_(p, gain=1 / math.sqrt(2))

    def _projection(
        self, weight: torch.Tensor, length: int, mask: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """(k, L) or (B, 1, k, L): the columns of ``weight`` for the keys (rank-indexed)."""
        w = weight.to(dtype)
        if mask is None:
            return w[:, :length]
        rank = (mask.long().cumsum(dim=-1) - 1).clamp(0, self.max_length - 1)  # (B, L)
        cols = w[:, rank]  # (k, B, L)
        cols = cols * mask.to(dtype)  # padded keys: zero columns
        return cols.permute(1, 0, 2).unsqueeze(1)

    def _check_length(self, length: int, mask: torch.Tensor | None) -> None:
        if length <= self.max_length:
            return
        real = length if mask is None else int(mask.sum(dim=-1).max())
        if real > self.max_length:
            raise ValueError(
                f"linformer: a sequence has {real} real tokens but max_length={self.max_length} "
                f"(E, F are ({self.proj_length} × max_length) learned projections); raise "
                "attention.max_length (conf/attention/linformer.yaml sets it to "
                "${task.max_length}) or shorten the inputs"
            )

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        length = k.shape[2]
        if q.shape[2] == 0 or length == 0:
            return empty_output(q, k, v)
        self._check_length(length, mask)
        dtype = q.dtype
        e = self._projection(self.E, length, mask, dtype)
        f = e if self.F is None else self._projection(self.F, length, mask, dtype)
        k_proj = e @ k  # (B, H, k, d)
        v_proj = f @ v  # (B, H, k, d_v)
        logits = (q * self.head_dim**-0.5) @ k_proj.transpose(-1, -2)
        out = torch.softmax(logits, dim=-1) @ v_proj
        if mask is not None:
            out = out.masked_fill(~mask[:, None, :, None], 0.0)
        return out

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, proj_length={self.proj_length}, "
            f"max_length={self.max_length}, share_kv={self.share_kv}"
        )
