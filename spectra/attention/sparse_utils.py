"""Helpers shared by the baseline attentions (kernelized, linformer, reformer, bigbird, informer).

* :func:`empty_output` — the (B, H, Lq, d_v) zero output for an empty query or key set, kept in
  the autograd graph (finite, all-zero gradients).
* :func:`valid_first_order` — the permutation that puts a sequence's real tokens first, in order
  (token rank among the real tokens), so that structures defined on positions (blocks, learned
  projections, key samples) do not depend on where the padding sits.
* :func:`stateless_uniform` — seeded uniform numbers that are a pure function of (seed, indices):
  the same (seed, i, j) always gives the same number, whatever the shape of the tensor it is
  computed in (so a random pattern does not change when a batch is padded to another length).
"""

from __future__ import annotations

import torch

__all__ = ["empty_output", "stateless_uniform", "valid_first_order"]

_MASK32 = 0xFFFFFFFF


def empty_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Zeros (B, H, Lq, d_v) connected to q, k, v (their gradients are zeros, never NaN)."""
    b, h, lq, _ = q.shape
    # sums over an empty slice are exactly 0 and keep every input in the graph
    link = q[..., :0].sum() + k[..., :0].sum() + v[..., :0].sum()
    return v.new_zeros(b, h, lq, v.shape[-1]) + link


def valid_first_order(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool mask → (B, L) positions: the real tokens in order, then the padding."""
    return torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x·c mod 2³² for int64 x in [0, 2³²) without int64 overflow (16-bit halves of c)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash ("lowbias32", C. Wellons) on int64 tensors in [0, 2³²)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def stateless_uniform(seed: int, *indices: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Uniform numbers in [0, 1) that depend only on ``seed`` and the broadcast ``indices``.

    ``indices`` are integer tensors (values in [0, 2³²)), broadcast together; the result has
    their broadcast shape. Deterministic on every device (integer arithmetic only).
    """
    if not indices:
        raise ValueError("stateless_uniform needs at least one index tensor")
    state = _mix32_int(_mix32_int(seed & _MASK32) ^ _mix32_int((seed >> 32) + 0x9E3779B9))
    h = None
    for i, index in enumerate(indices):
        part = index.to(torch.int64) & _MASK32
        mixed = _mix32(part ^ _mix32_int(state + i))
        h = mixed if h is None else _mix32(h ^ mixed)
    assert h is not None
    return h.to(dtype) * 2.0**-32
