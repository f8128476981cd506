"""Reformer's LSH attention (Kitaev et al. 2020, arXiv 2001.04451).

Shared-QK: the keys are the length-normalized queries, k̂_j = q_j / ‖q_j‖, and the logits are
q_iᵀk̂_j / √d. Each of ``n_hashes`` rounds hashes every token by a random rotation R
(d × n_buckets/2, seeded): h(q) = argmax([qR, −qR]) (angular LSH; ``n_buckets=1`` puts every
token in one bucket), sorts the tokens by (bucket, position), cuts the sorted sequence into
chunks of ``chunk_size`` and lets each query attend to the keys of its own chunk and of the
previous one (not across the start: the first chunk has no previous chunk). A token does not
attend to itself unless it has no other key (its logit is −10⁵, as in the reference
implementations). With round outputs o_r and log-normalizers ℓ_r the rounds are combined as::

    out_i = Σ_r exp(ℓ_r,i − logsumexp_r ℓ_r,i) o_r,i

(a key that lands next to a query in several rounds is counted in each, as in HF Transformers;
the duplicate-count correction of the trax code is not applied). ``causal=True`` restricts the
keys to positions j ≤ i.

The query vectors are q; **k is not used** (shared-QK), only linked into the autograd graph with a
zero gradient so that a model's key projection still counts as used (DDP). Because keys are the
queries, this is self-attention only (Lq = Lk).

Padding: padded tokens are hashed into an extra last bucket, so they sort after every real token
and the real tokens keep their order and chunks whatever the padding; padded keys are never
attended and padded queries output 0. The rotations are drawn once from ``seed`` (a buffer:
evaluation is deterministic; the authors redraw them at every forward pass).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spectra.attention.base import Attention
from spectra.attention.sparse_utils import empty_output
from spectra.checks import positive_int
from spectra.registry import ATTENTIONS

__all__ = ["ReformerAttention"]

SELF_LOGIT = -1e5  # a token's logit for itself: attended only when it has no other key


@ATTENTIONS.register("reformer")
class ReformerAttention(Attention):
    """Reformer LSH attention (arXiv 2001.04451): shared-QK hashing, sorted chunked attention."""

    self_attention_only = True

    def __init__(
        self,
        head_dim: int,
        n_hashes: int = 2,
        n_buckets: int = 64,
        chunk_size: int = 64,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.n_hashes = positive_int(n_hashes, "n_hashes")
        self.n_buckets = positive_int(n_buckets, "n_buckets")
        if n_buckets > 1 and n_buckets % 2:
            raise ValueError(
                f"n_buckets must be 1 or even (angular LSH hashes by argmax over [xR, −xR]), "
                f"got {n_buckets}"
            )
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        g = torch.Generator().manual_seed(self.draw_seed)
        rotations = torch.randn(n_hashes, head_dim, max(n_buckets // 2, 1), generator=g)
        self.register_buffer("rotations", rotations)

    def buckets(self, q: torch.Tensor) -> torch.Tensor:
        """Bucket of every token in every round: q (B, H, L, d) → (B, H, n_hashes, L)."""
        b, h, length, _ = q.shape
        if self.n_buckets == 1:
            return torch.zeros(b, h, self.n_hashes, length, dtype=torch.long, device=q.device)
        rotated = torch.einsum("bhld,rdn->bhrln", q, self.rotations.to(q.dtype))
        return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        if q.shape[2] != k.shape[2]:
            raise ValueError(
                "reformer is shared-QK self-attention (its keys are the normalized queries): "
                f"it needs Lq = Lk, got {q.shape[2]} and {k.shape[2]}"
            )
        length = q.shape[2]
        if length == 0:
            return empty_output(q, k, v)
        b, h, _, d = q.shape
        dv = v.shape[-1]
        rounds, c = self.n_hashes, self.chunk_size
        device = q.device
        keys = F.normalize(q, dim=-1, eps=1e-12)

        with torch.no_grad():
            bucket = self.buckets(q)  # (B, H, R, L)
            pos = torch.arange(length, device=device)
            if mask is not None:  # padding: an extra last bucket
                bucket = bucket.masked_fill(~mask[:, None, None, :], self.n_buckets)
            perm = (bucket * length + pos).argsort(dim=-1)  # (B, H, R, L)
        n_chunks = -(-length // c)
        padded = n_chunks * c
        extra = padded - length

        def sort(t: torch.Tensor) -> torch.Tensor:  # (B, H, L, e) → (B, H, R, L_pad, e)
            idx = perm[..., None].expand(b, h, rounds, length, t.shape[-1])
            out = t[:, :, None].expand(b, h, rounds, length, t.shape[-1]).gather(3, idx)
            return F.pad(out, (0, 0, 0, extra)) if extra else out

        sq, sk, sv = sort(q * d**-0.5), sort(keys), sort(v)
        valid = torch.ones(b, 1, length, dtype=torch.bool, device=device)
        if mask is not None:
            valid = mask[:, None, :]
        s_valid = valid.expand(b, h, length).gather(2, perm.flatten(2)).view(perm.shape)
        s_valid = F.pad(s_valid, (0, extra))  # (B, H, R, L_pad); the end padding is invalid
        s_pos = F.pad(perm, (0, extra), value=-1)

        def chunks(t: torch.Tensor) -> torch.Tensor:  # (B, H, R, L_pad, …) → (…, n, c, …)
            return t.reshape(b, h, rounds, n_chunks, c, *t.shape[4:])

        def with_previous(t: torch.Tensor, fill) -> torch.Tensor:  # keys of chunks i−1 and i
            prev = torch.cat([torch.full_like(t[:, :, :, :1], fill), t[:, :, :, :-1]], dim=3)
            return torch.cat([prev, t], dim=4)

        ck = with_previous(chunks(sk), 0.0)  # (B, H, R, n, 2c, d)
        cv = with_previous(chunks(sv), 0.0)
        k_ok = with_previous(chunks(s_valid), False)  # (B, H, R, n, 2c)
        key_bias = torch.zeros(k_ok.shape, dtype=q.dtype, device=device)
        key_bias = key_bias.masked_fill(~k_ok, float("-inf"))[..., None, :]
        logits = torch.baddbmm(
            key_bias.expand(b, h, rounds, n_chunks, c, 2 * c).reshape(-1, c, 2 * c),
            chunks(sq).reshape(-1, c, d),
            ck.reshape(-1, 2 * c, d).transpose(-1, -2),
        ).view(b, h, rounds, n_chunks, c, 2 * c)
        if causal:
            q_pos = chunks(s_pos)  # (B, H, R, n, c)
            k_pos = with_previous(q_pos, -1)
            logits = logits.masked_fill(k_pos[..., None, :] > q_pos[..., :, None], float("-inf"))
        # a query's own key sits at column c + p of row p (the current chunk follows the previous
        # one); every row keeps this finite entry, so no row is empty (padded queries included)
        own = torch.eye(c, 2 * c, dtype=torch.bool, device=device).roll(c, dims=1)
        logits = logits.masked_fill(own, SELF_LOGIT)
        probs = torch.softmax(logits, dim=-1)
        out_sorted = (probs @ cv).reshape(b, h, rounds, padded, dv)[:, :, :, :length]
        if rounds > 1:
            lse = logits.logsumexp(dim=-1)
            lse_sorted = lse.reshape(b, h, rounds, padded)[:, :, :, :length]

        # back to positions, then combine the rounds by their normalizers
        out_r = torch.zeros(b, h, rounds, length, dv, dtype=q.dtype, device=device).scatter(
            3, perm[..., None].expand(b, h, rounds, length, dv), out_sorted
        )
        if rounds == 1:
            out = out_r[:, :, 0]
        else:
            lse_r = torch.zeros(b, h, rounds, length, dtype=q.dtype, device=device).scatter(
                3, perm, lse_sorted
            )
            weights = torch.softmax(lse_r, dim=2)  # (B, H, R, L)
            out = (weights[..., None] * out_r).sum(dim=2)
        if mask is not None:
            out = out.masked_fill(~mask[:, None, :, None], 0.0)
        return out + k[..., :0].sum()  # k unused (shared-QK), linked with a zero gradient

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, n_hashes={self.n_hashes}, n_buckets={self.n_buckets}, "
            f"chunk_size={self.chunk_size}, seed={self.seed}"
        )
