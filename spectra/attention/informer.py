"""Informer's ProbSparse self-attention (Zhou et al. 2021, arXiv 2012.07436).

Each query q_i is scored by its sparsity measurement on U = c·⌈ln L_K⌉ sampled keys S_i::

    M̄(q_i) = max_{j∈S_i} q_iᵀk_j/√d − mean_{j∈S_i} q_iᵀk_j/√d

and only the u = c·⌈ln L_Q⌉ queries with the largest M̄ ("active" queries) get full softmax
attention over all keys; every other ("lazy") query outputs mean(V), the mean of the values
(the non-causal variant). c is ``factor`` (5 in the paper); U ≤ L_K, u ≤ L_Q and both are ≥ 1.
With u = L_Q every query is active and the result is softmax attention. Cost O(L·U·d) for the
scores (computed without gradient: they only select) plus O(u·L·d) for the active queries.

Sampling: query i's U keys are drawn uniformly with replacement among the real keys, as a pure
function of (``seed``, query rank, sample number) — fixed for the module's lifetime and shared
by the batch and the heads, like the authors' per-forward ``torch.randint`` sample (they redraw
it at every call). :meth:`InformerAttention.sample_ranks` gives the sample, for tests.

Padding: L_Q and L_K count the real tokens of each sequence; ranks and samples are over the real
tokens in order, so padding changes nothing; padded keys are never sampled nor attended,
padded queries are never active and output 0. The official code divides the sampled sum by L_K
(not by U); here the mean is over the sample, the estimate of the paper's M̄. ProbSparse is
non-causal here (``causal=True`` raises).
"""

from __future__ import annotations

import torch

from spectra.attention.base import Attention
from spectra.attention.nystromformer import masked_softmax
from spectra.attention.sparse_utils import empty_output, stateless_uniform, valid_first_order
from spectra.checks import positive_int
from spectra.registry import ATTENTIONS

__all__ = ["InformerAttention"]

_SCORE_CHUNK = 1024  # queries per chunk of the (no-grad) sparsity scores


def _log_count(factor: int, n: torch.Tensor) -> torch.Tensor:
    """min(max(c·⌈ln n⌉, 1), n) for counts n ≥ 1 (elementwise, long)."""
    logs = torch.ceil(torch.log(n.clamp_min(1).to(torch.float64))).long()
    return torch.minimum((factor * logs).clamp_min(1), n.clamp_min(1))


@ATTENTIONS.register("informer")
class InformerAttention(Attention):
    """Informer ProbSparse attention (arXiv 2012.07436): top-u queries by M̄, others mean(V)."""

    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        factor: int = 5,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.factor = positive_int(factor, "factor")

    def sample_counts(self, n_queries: torch.Tensor, n_keys: torch.Tensor):
        """(u, U): active queries and sampled keys per sequence, from real-token counts."""
        return _log_count(self.factor, n_queries), _log_count(self.factor, n_keys)

    def sample_ranks(self, num_queries: int, num_samples: int, n_keys: torch.Tensor):
        """Key ranks (B, num_queries, num_samples) sampled for query ranks 0 … num_queries − 1.

        Sample s of query rank r is ⌊u(seed, r, s)·n⌋ with u a stateless uniform in [0, 1) and n
        the number of real keys of the sequence (``n_keys``, (B,)).
        """
        device = n_keys.device
        r = torch.arange(num_queries, device=device)[:, None]
        s = torch.arange(num_samples, device=device)[None, :]
        u = stateless_uniform(self.draw_seed, r, s)  # (Lq, U)
        ranks = (u[None] * n_keys[:, None, None].to(u.dtype)).long()
        return torch.minimum(ranks, (n_keys[:, None, None] - 1).clamp_min(0))

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        b, h, lq, d = q.shape
        lk = k.shape[2]
        if lq == 0 or lk == 0:
            return empty_output(q, k, v)
        device = q.device
        if mask is not None:
            order = valid_first_order(mask)  # rank → position
            n_q = n_k = mask.sum(dim=-1)
            key_ok = mask
        else:
            order = None
            n_q = torch.full((b,), lq, dtype=torch.long, device=device)
            n_k = torch.full((b,), lk, dtype=torch.long, device=device)
            key_ok = torch.ones(b, lk, dtype=torch.bool, device=device)
        u, big_u = self.sample_counts(n_q, n_k)  # (B,), (B,)
        u_max = int(_log_count(self.factor, torch.tensor(lq)))
        big_u_max = int(_log_count(self.factor, torch.tensor(lk)))

        with torch.no_grad():  # sparsity scores M̄ (they only select queries)
            ranks = self.sample_ranks(lq, big_u_max, n_k)  # (B, Lq, U), query-rank major
            sample_ok = torch.arange(big_u_max, device=device) < big_u[:, None, None]
            keys_at = ranks if order is None else order.gather(1, ranks.flatten(1)).view_as(ranks)
            q_rank = q if order is None else q.gather(2, order[:, None, :, None].expand_as(q))
            q_rank = q_rank.transpose(1, 2) * d**-0.5  # (B, Lq, H, d)
            k_rows = k.transpose(1, 2).reshape(b * lk, h * d)  # one row copy per sample
            offset = (torch.arange(b, device=device) * lk)[:, None, None]
            ok = sample_ok[:, :, None]  # (B, 1, 1, U)
            scores = []
            for start in range(0, lq, _SCORE_CHUNK):
                stop = min(start + _SCORE_CHUNK, lq)
                rows = (keys_at[:, start:stop] + offset).flatten()
                ks = k_rows.index_select(0, rows).view(b, stop - start, big_u_max, h, d)
                ks.mul_(q_rank[:, start:stop, None])
                dots = ks.sum(-1).transpose(-1, -2)  # (B, c, H, U)
                top = dots.masked_fill(~ok, float("-inf")).amax(dim=-1)
                mean = dots.masked_fill(~ok, 0.0).sum(-1) / big_u[:, None, None].to(dots.dtype)
                scores.append((top - mean).transpose(1, 2))  # (B, H, c)
            m_bar = torch.cat(scores, dim=2)  # (B, H, Lq) by query rank
            q_real = torch.arange(lq, device=device) < n_q[:, None]
            m_bar = m_bar.masked_fill(~q_real[:, None, :], float("-inf"))
            active = m_bar.topk(u_max, dim=-1).indices  # query ranks (B, H, u_max)
            active_ok = torch.arange(u_max, device=device) < u[:, None, None]
            if order is not None:
                active = order[:, None, :].expand(b, h, lq).gather(2, active)  # → positions

        v_real = v.masked_fill(~key_ok[:, None, :, None], 0.0)
        mean_v = v_real.sum(dim=2, keepdim=True) / n_k.clamp_min(1)[:, None, None, None]
        q_act = q.gather(2, active[..., None].expand(b, h, u_max, d))
        probs = masked_softmax(q_act @ k.transpose(-1, -2) * d**-0.5, key_ok[:, None, None, :])
        full = probs @ v  # (B, H, u_max, d_v)
        full = torch.where(active_ok[..., None], full, mean_v)  # extra slots keep mean(V)
        out = mean_v.expand(b, h, lq, v.shape[-1])
        out = out.scatter(2, active[..., None].expand_as(full), full)
        if mask is not None:
            out = out.masked_fill(~mask[:, None, :, None], 0.0)
        return out

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, factor={self.factor}, seed={self.seed}"
