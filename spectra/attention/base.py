"""Shared contract of attention modules: input validation and padding conventions.

Every attention is an ``nn.Module`` with ``forward(q, k, v, mask=None, causal=False)``:
q (B, H, Lq, d), k (B, H, Lk, d), v (B, H, Lk, d_v) → (B, H, Lq, d_v). ``mask`` (B, L) bool,
True = real token, marks queries and keys of a self-attention (Lq = Lk = L): padded keys never
contribute, padded query positions output exactly 0, and a query with no valid key outputs 0
(never NaN).

:meth:`Attention.forward` validates the inputs, then calls the subclass's :meth:`Attention.attend`
— with ``computes_in_float32`` (the default) on q, k, v cast to float32 (float64 stays float64)
with autocast off, the result cast back to v's dtype; without it on the inputs as given.

Every attention takes ``seed`` and ``layer_index`` (keyword-only, handled here): a model passes
each layer its number, and an attention that draws anything random (random blocks, rotations,
feature weights) seeds those draws from (``seed``, ``layer_index``), so layers draw independently
while every DDP rank draws the same. Attentions that draw nothing ignore both.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from spectra.checks import positive_int, seed_and_layer

__all__ = ["Attention", "compute_dtype", "layer_seed"]

_LAYER_SEED_STRIDE = 1_000_003  # a prime larger than any layer count


def layer_seed(seed: int, layer_index: int | None) -> int:
    """Seed of layer ``layer_index``: ``seed · 1000003 + layer_index`` (distinct for every
    (seed, layer)); ``seed`` itself for an unnumbered module (``layer_index=None``)."""
    if layer_index is None:
        return int(seed)
    return int(seed) * _LAYER_SEED_STRIDE + int(layer_index)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class Attention(nn.Module):
    """Base class: stores ``head_dim``, ``seed`` and ``layer_index`` (see the module), validates
    ``forward`` inputs (:meth:`check_inputs`) and runs :meth:`attend` in the compute dtype."""

    supports_causal: bool = True
    computes_in_float32: ClassVar[bool] = True

    def __init__(self, head_dim: int, *, seed: int = 0, layer_index: int | None = None) -> None:
        super().__init__()
        self.head_dim = positive_int(head_dim, "head_dim")
        self.seed, self.layer_index = seed_and_layer(seed, layer_index)

    @property
    def draw_seed(self) -> int:
        """Seed of this layer's own draws: :func:`layer_seed` (seed, layer_index)."""
        return layer_seed(self.seed, self.layer_index)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """q (B, H, Lq, d), k (B, H, Lk, d), v (B, H, Lk, d_v), mask (B, L) → (B, H, Lq, d_v)."""
        self.check_inputs(q, k, v, mask, causal)
        if not self.computes_in_float32:
            return self.attend(q, k, v, mask, causal)
        dtype = compute_dtype(q)
        with torch.autocast(device_type=q.device.type, enabled=False):
            out = self.attend(q.to(dtype), k.to(dtype), v.to(dtype), mask, causal)
        return out.to(v.dtype)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        """The attention itself, on validated inputs (in the compute dtype, see the module)."""
        raise NotImplementedError(f"{type(self).__name__} must implement attend()")

    def check_inputs(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> None:
        """Raise a ``ValueError`` that names the problem for malformed inputs."""
        name = type(self).__name__
        for label, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name}: {label} must be a (B, H, L, d) tensor, got {shape}")
            if not t.is_floating_point():
                raise ValueError(f"{name}: {label} must be floating point, got {t.dtype}")
        if q.shape[-1] != k.shape[-1] or q.shape[-1] != self.head_dim:
            raise ValueError(
                f"{name}: head dims differ: q has d={q.shape[-1]}, k has d={k.shape[-1]}, "
                f"and this attention was built with head_dim={self.head_dim}"
            )
        if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
            raise ValueError(
                f"{name}: q, k, v must share (B, H), got {tuple(q.shape[:2])}, "
                f"{tuple(k.shape[:2])}, {tuple(v.shape[:2])}"
            )
        if k.shape[2] != v.shape[2]:
            raise ValueError(
                f"{name}: k and v must have the same length, got {k.shape[2]} and {v.shape[2]}"
            )
        if not isinstance(causal, bool):
            raise ValueError(f"{name}: causal must be a bool, got {causal!r}")
        if causal and not self.supports_causal:
            raise ValueError(
                f"{name} does not support causal=True; use softmax, random_features (with a "
                "data-independent feature map) or linear attention"
            )
        if causal and q.shape[2] != k.shape[2]:
            raise ValueError(
                f"{name}: causal attention needs Lq = Lk, got {q.shape[2]} and {k.shape[2]}"
            )
        if mask is None:
            return
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"{name}: mask must be a bool tensor (B, L), True = real token, got {got}"
            )
        if q.shape[2] != k.shape[2]:
            raise ValueError(
                f"{name}: mask (B, L) is for self-attention (Lq = Lk), got Lq={q.shape[2]}, "
                f"Lk={k.shape[2]}"
            )
        want = (q.shape[0], q.shape[2])
        if tuple(mask.shape) != want:
            raise ValueError(
                f"{name}: mask must have shape (B, L) = {want}, got {tuple(mask.shape)}"
            )

    @staticmethod
    def token_mask(mask: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor | None:
        """(B, L) mask → (B, H, L), broadcast over the heads of ``t`` (B, H, L, d)."""
        if mask is None:
            return None
        return mask[:, None, :].expand(t.shape[:3])

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}"
