"""Landmark selection for Nyström-type attentions, over valid (non-padding) tokens only.

Every selector works on the ranks of the valid tokens (their order among the real tokens), so
the landmarks do not depend on how much padding follows or precedes them. Each returns the
landmarks and a (B, s) bool ``valid`` mask: when a sequence has fewer real tokens than
landmarks, the extra landmark slots are invalid and must be ignored by the caller.
"""

from __future__ import annotations

import torch

__all__ = ["gather_tokens", "segment_means", "systematic_indices", "uniform_indices"]


def _valid_counts(mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    if mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    return mask.sum(dim=-1)


def segment_means(
    x: torch.Tensor, mask: torch.Tensor | None, num: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of ``num`` contiguous segments of the valid tokens (Nyströmformer, 2102.03902).

    x (B, H, L, d), mask (B, L) → landmarks (B, H, num, d), valid (B, num). The valid token of
    rank r (0-based) of a sequence with n real tokens goes to segment ⌊r·num/n⌋: all segments
    are non-empty when n ≥ num; when n < num every token is its own landmark and the other
    num − n slots are invalid.
    """
    b, h, length, d = x.shape
    n = _valid_counts(mask, b, length, x.device)  # (B,)
    if mask is None:
        rank = torch.arange(length, device=x.device).expand(b, length)
    else:
        rank = mask.long().cumsum(dim=-1) - 1
    seg = torch.div(rank * num, n.clamp_min(1)[:, None], rounding_mode="floor")
    if mask is not None:
        seg = torch.where(mask, seg, torch.full_like(seg, num))  # padding → dump bucket
    index = seg[:, None, :, None].expand(b, h, length, d)
    sums = x.new_zeros(b, h, num + 1, d).scatter_add(2, index, x)[:, :, :num]
    counts = torch.zeros(b, num + 1, dtype=x.dtype, device=x.device)
    counts = counts.scatter_add(1, seg, torch.ones_like(seg, dtype=x.dtype))[:, :num]
    valid = counts > 0
    return sums / counts.clamp_min(1)[:, None, :, None], valid


def _rank_to_position(mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """(B, L): position of the valid token of each rank (valid tokens first, in order)."""
    if mask is None:
        return torch.arange(length, device=device).expand(batch, length)
    return torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)


def systematic_indices(
    mask: torch.Tensor | None, batch: int, length: int, num: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` evenly spaced valid tokens: ranks ⌊(i + ½)·n/num⌋ (all n tokens if n ≤ num).

    Returns positions (B, num) and valid (B, num). The deterministic counterpart of uniform
    sampling (used at evaluation, so predictions do not depend on a random draw).
    """
    n = _valid_counts(mask, batch, length, device)[:, None]  # (B, 1)
    i = torch.arange(num, device=device)[None, :]
    spaced = torch.div((2 * i + 1) * n, 2 * num, rounding_mode="floor")
    rank = torch.where(n >= num, spaced, i.expand(batch, num))
    valid = rank < n
    if length == 0:  # no tokens at all: every slot is invalid (position 0 is a placeholder)
        return torch.zeros(batch, num, dtype=torch.long, device=device), valid
    order = _rank_to_position(mask, batch, length, device)
    pos = order.gather(1, rank.clamp_max(length - 1))
    return pos, valid


def uniform_indices(
    mask: torch.Tensor | None,
    batch: int,
    length: int,
    num: int,
    device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` valid tokens drawn uniformly without replacement (our choice for Skyformer).

    Returns positions (B, num) and valid (B, num); slots beyond the number of real tokens are
    invalid. The Skyformer authors' code (github.com/pkuzengqi/Skyformer, ``uniform_sketching``:
    ⌊u·n⌋ for iid uniform u) draws with replacement; without replacement no landmark is wasted
    on a duplicate (a repeated landmark adds a zero eigenvalue to κ(Z, Z) at λ = 0), and
    num ≥ n takes every real token, which makes s = 2L Skyformer exact.
    """
    gen_device = generator.device if generator is not None else device
    scores = torch.rand(batch, length, generator=generator, device=gen_device).to(device)
    if mask is not None:
        scores = scores.masked_fill(~mask, -1.0)
    take = min(num, length)
    pos = scores.topk(take, dim=-1).indices  # (B, take)
    valid = torch.ones_like(pos, dtype=torch.bool) if mask is None else mask.gather(1, pos)
    if take < num:
        pad = num - take
        pos = torch.cat([pos, pos.new_zeros(batch, pad)], dim=1)
        valid = torch.cat([valid, valid.new_zeros(batch, pad)], dim=1)
    return pos, valid


def gather_tokens(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, d), positions (B, s) → (B, H, s, d); zeros when L = 0 (no token to take:
    the selectors mark every slot invalid then)."""
    b, h, length, d = x.shape
    if length == 0:
        return x.new_zeros(b, h, pos.shape[1], d)
    index = pos[:, None, :, None].expand(b, h, pos.shape[1], d)
    return x.gather(2, index)
