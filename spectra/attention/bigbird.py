"""BigBird block-sparse attention (Zaheer et al. 2020, arXiv 2007.14062), the ITC variant.

The real tokens are cut into blocks of ``block_size`` b. Query block i attends, with softmax
attention (logits qᵀk/√d), to the key blocks

* window: i − w … i + w (``num_window_blocks`` = 2w + 1, default 3),
* global: the first g blocks (``num_global_blocks``), and
* random: ``num_random_blocks`` r other blocks, per head and query block, drawn from ``seed``
  (a pure function of (seed, head, query block, key block), fixed for the module's lifetime, as
  the original code fixes them per layer);

and the g global query blocks attend to every key. A key block appears at most once per query
block (window ∩ global blocks count as global; random blocks are drawn outside both). Cost
O(L·(2w + 1 + g + r)·b·d) plus O(g·b·L·d) for the global rows. With g ≥ L/b every block is
global and the result is softmax attention.

Padding: blocks are formed over the real tokens in order (their rank among the real tokens), so
the pattern and the output do not depend on where the padding sits; blocks past the last real
token do not exist, padded keys are never attended and padded queries output 0. The block
pattern is defined for self-attention (Lq = Lk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectra.attention.base import Attention
from spectra.attention.sparse_utils import empty_output, stateless_uniform, valid_first_order
from spectra.checks import positive_int
from spectra.registry import ATTENTIONS

__all__ = ["BigBirdAttention"]


_NEG = -1e30  # logit bias of excluded keys: weight exactly 0; key-less (padding) rows stay finite


def _key_bias(ok: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``ok``, a huge negative number elsewhere."""
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, _NEG)


def _non_negative_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return value


@ATTENTIONS.register("bigbird")
class BigBirdAttention(Attention):
    """BigBird (arXiv 2007.14062): window + global + random block-sparse softmax attention."""

    supports_causal = False
    self_attention_only = True

    def __init__(
        self,
        head_dim: int,
        block_size: int = 64,
        num_window_blocks: int = 3,
        num_global_blocks: int = 2,
        num_random_blocks: int = 3,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.block_size = positive_int(block_size, "block_size")
        self.num_window_blocks = positive_int(num_window_blocks, "num_window_blocks")
        if num_window_blocks % 2 == 0:
            raise ValueError(
                f"num_window_blocks must be odd (the block itself and w on each side), got "
                f"{num_window_blocks}"
            )
        self.num_global_blocks = _non_negative_int(num_global_blocks, "num_global_blocks")
        self.num_random_blocks = _non_negative_int(num_random_blocks, "num_random_blocks")

    def key_blocks(
        self, num_real_blocks: torch.Tensor, num_blocks: int, heads: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Key blocks of every non-global query block.

        num_real_blocks (B,) → indices (B, H, n_q, S) and valid (B, H, n_q, S), for query blocks
        g … num_blocks − 1 (n_q of them) and S = window + global + random slots.
        """
        device = num_real_blocks.device
        g, w = self.num_global_blocks, self.num_window_blocks // 2
        qb = torch.arange(g, num_blocks, device=device)  # (n_q,)
        nb = num_real_blocks[:, None, None, None]  # (B, 1, 1, 1)
        window = qb[:, None] + torch.arange(-w, w + 1, device=device)  # (n_q, 2w + 1)
        window = window[None, None].expand(*nb.shape[:1], heads, -1, -1)
        window_ok = (window >= g) & (window < nb)
        glob = torch.arange(g, device=device).expand(*window.shape[:3], g)
        glob_ok = glob < nb
        parts, oks = [window.clamp(0, max(num_blocks - 1, 0)), glob], [window_ok, glob_ok]
        r = self.num_random_blocks
        if r:
            cand = torch.arange(num_blocks, device=device)
            head = torch.arange(heads, device=device)
            score = stateless_uniform(self.draw_seed, head[:, None, None], qb[:, None], cand)
            blocked = (cand - qb[:, None]).abs() <= w  # (n_q, n): the window
            blocked = blocked | (cand < g)
            allowed = ~blocked[None, None] & (cand < nb)  # (B, H or 1, n_q, n)
            score = torch.where(allowed, score[None], torch.full_like(score[None], -1.0))
            take = min(r, num_blocks)
            top, idx = score.topk(take, dim=-1)
            ok = top >= 0
            if take < r:
                idx = F.pad(idx, (0, r - take))
                ok = F.pad(ok, (0, r - take), value=False)
            parts.append(idx)
            oks.append(ok)
        shape = (num_real_blocks.shape[0], heads, qb.numel())
        idx = torch.cat([p.expand(*shape, p.shape[-1]) for p in parts], dim=-1)
        ok = torch.cat([o.expand(*shape, o.shape[-1]) for o in oks], dim=-1)
        return idx, ok

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        if q.shape[2] != k.shape[2]:
            raise ValueError(
                "bigbird's block pattern is defined for self-attention: it needs Lq = Lk, got "
                f"{q.shape[2]} and {k.shape[2]}"
            )
        length = q.shape[2]
        if length == 0:
            return empty_output(q, k, v)
        b, h, _, d = q.shape
        dv = v.shape[-1]
        bs, g = self.block_size, self.num_global_blocks
        device = q.device
        if mask is not None:  # real tokens first, in order
            order = valid_first_order(mask)
            gather = order[:, None, :, None]
            q, k, v = (t.gather(2, gather.expand(*t.shape)) for t in (q, k, v))
            n_real = mask.sum(dim=-1)
        else:
            n_real = torch.full((b,), length, dtype=torch.long, device=device)
        n_blocks = -(-length // bs)
        padded = n_blocks * bs
        key_ok = torch.arange(padded, device=device) < n_real[:, None]  # (B, L_pad)
        q = q * d**-0.5
        if padded > length:
            q, k, v = (F.pad(t, (0, 0, 0, padded - length)) for t in (q, k, v))
        out = torch.zeros(b, h, padded, dv, dtype=q.dtype, device=device)
        n_global_rows = min(g, n_blocks) * bs

        if g < n_blocks:  # block-sparse rows: query blocks g … n − 1
            idx, slot_ok = self.key_blocks(-(-n_real // bs), n_blocks, h)  # (B, H, n_q, S)
            n_q, slots = idx.shape[2], idx.shape[3]
            kb = k.view(b, h, n_blocks, bs, d)
            vb = v.view(b, h, n_blocks, bs, dv)
            bi = torch.arange(b, device=device)[:, None, None, None]
            hi = torch.arange(h, device=device)[None, :, None, None]
            kg = kb[bi, hi, idx].view(b, h, n_q, slots * bs, d)  # whole blocks: (B, H, n_q, S, …)
            vg = vb[bi, hi, idx].view(b, h, n_q, slots * bs, dv)
            ok = key_ok.view(b, n_blocks, bs)[bi, idx] & slot_ok[..., None]
            bias = _key_bias(ok.view(b, h, n_q, 1, slots * bs), q.dtype)
            qb = q[:, :, n_global_rows:].reshape(-1, bs, d)
            logits = torch.baddbmm(
                bias.expand(b, h, n_q, bs, slots * bs).reshape(-1, bs, slots * bs),
                qb,
                kg.reshape(-1, slots * bs, d).transpose(-1, -2),
            )
            probs = torch.softmax(logits, dim=-1).view(b, h, n_q, bs, slots * bs)
            out[:, :, n_global_rows:] = (probs @ vg).view(b, h, n_q * bs, dv)

        if n_global_rows:  # global query blocks attend to every real key
            logits = q[:, :, :n_global_rows] @ k.transpose(-1, -2)
            logits = logits + _key_bias(key_ok[:, None, None, :], q.dtype)
            out[:, :, :n_global_rows] = torch.softmax(logits, dim=-1) @ v

        out = out[:, :, :length].masked_fill(~key_ok[:, None, :length, None], 0.0)
        if mask is not None:  # back to positions (padded positions get the zero rows)
            out = torch.zeros_like(out).scatter(2, order[:, None, :, None].expand(*out.shape), out)
        return out

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, block_size={self.block_size}, "
            f"num_window_blocks={self.num_window_blocks}, "
            f"num_global_blocks={self.num_global_blocks}, "
            f"num_random_blocks={self.num_random_blocks}, seed={self.seed}"
        )
