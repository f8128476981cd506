"""Linear (kernelized) attention kernels: fast paths and the plain references they must match.

Given features φ(X) (…, Lx, M), φ(Y) (…, Ly, M) and values V (…, Ly, dv) (Performer,
arXiv 2009.14794; Katharopoulos et al., arXiv 2006.16236)::

    non-causal:  out_i = φ(x_i)ᵀ Σ_j φ(y_j) v_jᵀ / φ(x_i)ᵀ Σ_j φ(y_j)
    causal:      out_i = φ(x_i)ᵀ S_i / φ(x_i)ᵀ z_i,
                 S_i = Σ_{j≤i} φ(y_j) v_jᵀ,  z_i = Σ_{j≤i} φ(y_j)

Numerator and denominator come from one matmul: V is extended by a ones column, [V, 1].

Scales. Features are passed stabilized, i.e. multiplied by detached constants that cancel in
each row's normalization (:mod:`spectra.features.maps.base`); ``log_scale`` (…, Lx, 1), where
given, is log of the factor that takes row i back to the natural scale (the true [num, den] is
exp(log_scale_i) times the computed one). The causal kernel takes log-scaled features
φ = u · exp(s) and keeps a running key max (:func:`causal_linear_attention`).

Denominator guard (:func:`normalize_attention`) — it never changes a well-defined estimate:

* positive features: no ε. The estimate num/den is used wherever den > 0; den = 0 happens only
  when no key is valid (then num = 0 too) and gives 0. The exponential stabilizers keep den ≥ 1
  for every query with a valid key (non-causal), so the quotient is as accurate as its terms.
  An ε added to den — the usual practice — changes the estimate by a factor den/(den + ε), and
  after stabilization den is on an arbitrary scale, so that factor can be anything.
* signed features (e.g. trigonometric RFF): den can be ≈ 0 or negative, where the estimate is
  not well-defined. There den is clamped in magnitude to ε *on the natural scale*:
  den' = sign(den) · max(|den|, ε · exp(−log_scale)) (sign(0) = +1), so the result does not
  depend on the stabilizer and equals the estimate wherever |den| ≥ ε naturally.

Fast paths: :func:`linear_attention` (any features), :func:`exp_linear_attention` (fused:
log-features → stabilized exp → attention in one autograd function with a hand-written
backward, for exponential feature maps), :func:`rowwise_exp_linear_attention` (the same from a
row-wise exponent function and fixed per-(batch, head) statistics, by row chunks with
recomputation: no L×M tensor is ever stored; large L×M temporaries, and their page faults,
dominate the plain version's time on CPU), :func:`causal_linear_attention` (chunked, with a
running key max). References: :func:`linear_attention_naive`, :func:`exp_linear_attention_naive`
(log-domain, an independent stabilizer), :func:`causal_linear_attention_prefix_naive` and
:func:`causal_linear_attention_quadratic_naive`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from spectra.features.maps.base import finite_or_zero, masked_amax

__all__ = [
    "causal_linear_attention",
    "causal_linear_attention_prefix_naive",
    "causal_linear_attention_quadratic_naive",
    "exp_linear_attention",
    "exp_linear_attention_naive",
    "linear_attention",
    "linear_attention_naive",
    "normalize_attention",
    "rowwise_exp_linear_attention",
]


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------
def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """[V, 1] (…, L, dv + 1): one matmul then gives numerator and denominator together."""
    return torch.cat([v, v.new_ones((*v.shape[:-1], 1))], dim=-1)


def normalize_attention(
    nd: torch.Tensor,
    eps: float = 1e-6,
    positive: bool = True,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``nd`` = [num, den] (…, L, dv + 1) → num / den' (…, L, dv) (module docstring).

    Positive: den' = den where den > 0, else 1 (num = 0 there). Signed: den' = sign(den) ·
    max(|den|, ε · exp(−log_scale)) with sign(0) = +1; ``log_scale`` (…, L, 1) is the log of
    the factor that takes the row to its natural scale (None: the row is on its natural scale).
    """
    num, den = nd[..., :-1], nd[..., -1:]
    if positive:
        return num / torch.where(den > 0, den, torch.ones_like(den))
    if log_scale is None:
        floor = torch.full_like(den, eps)
    else:  # padding rows (log_scale −∞) have num = den = 0: any finite floor gives 0
        floor = eps * torch.exp(-finite_or_zero(log_scale))
    den = torch.where(den >= 0, torch.maximum(den, floor), torch.minimum(den, -floor))
    return num / den


def _check_features(phi_x: torch.Tensor, phi_y: torch.Tensor, v: torch.Tensor) -> None:
    if phi_x.shape[-1] != phi_y.shape[-1]:
        raise ValueError(
            f"feature dims differ: φ(x) has {phi_x.shape[-1]}, φ(y) has {phi_y.shape[-1]}"
        )
    if phi_y.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"keys and values must have the same length, got {phi_y.shape[-2]} and {v.shape[-2]}"
        )


def _row_max(ex: torch.Tensor) -> torch.Tensor:
    """Detached per-row max (…, L, 1), 0 where not finite."""
    return finite_or_zero(ex.detach().amax(dim=-1, keepdim=True))


# ---------------------------------------------------------------------------------------------
# non-causal
# ---------------------------------------------------------------------------------------------
def linear_attention(
    phi_x: torch.Tensor,
    phi_y: torch.Tensor,
    v: torch.Tensor,
    *,
    eps: float = 1e-6,
    positive: bool = True,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """out = φ(X) (φ(Y)ᵀ [V, 1]) normalized; O(L·M·dv), never forms the L×L matrix.

    ``eps`` and ``log_scale`` (…, Lx, 1) only matter for signed features
    (:func:`normalize_attention`).
    """
    _check_features(phi_x, phi_y, v)
    kv = phi_y.transpose(-1, -2) @ _with_ones(v)  # (…, M, dv + 1)
    return normalize_attention(phi_x @ kv, eps, positive, log_scale)


def linear_attention_naive(
    phi_x: torch.Tensor,
    phi_y: torch.Tensor,
    v: torch.Tensor,
    *,
    eps: float = 1e-6,
    positive: bool = True,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: K̂ = φ(X) φ(Y)ᵀ explicitly (…, Lx, Ly), out = K̂V / K̂1 (guarded)."""
    _check_features(phi_x, phi_y, v)
    k = phi_x @ phi_y.transpose(-1, -2)
    nd = torch.cat([k @ v, k.sum(-1, keepdim=True)], dim=-1)
    return normalize_attention(nd, eps, positive, log_scale)


def _stabilized_exp(
    ex: torch.Tensor,
    ey: torch.Tensor,
    x_mask: torch.Tensor | None,
    y_mask: torch.Tensor | None,
    stabilize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(φ̃x, φ̃y) of the per-feature stabilizer (fresh buffers; padding rows 0).

    c_r = max_j ey_jr over valid keys, φ̃y = exp(ey − c), φ̃x = exp(ex + c − max_r(ex + c)):
    φ̃x_ir φ̃y_jr = exp(ex_ir + ey_jr − M_i) for every r, and den_i ≥ 1 if a key is valid.
    """
    if stabilize:
        c = masked_amax(ey, y_mask, (-2,))  # (…, 1, M), detached; 0 without a valid key
        phi_x = torch.add(ex, c)
        phi_x.sub_(_row_max(phi_x))
        phi_y = torch.sub(ey, c)
    else:
        phi_x, phi_y = ex.clone(), ey.clone()
    phi_x.exp_()
    phi_y.exp_()
    if x_mask is not None:
        phi_x.masked_fill_(~x_mask[..., None], 0.0)
    if y_mask is not None:
        phi_y.masked_fill_(~y_mask[..., None], 0.0)
    return phi_x, phi_y


def _safe_den(den: torch.Tensor) -> torch.Tensor:
    """den where > 0, else 1 (positive features: den = 0 only without valid keys, num = 0)."""
    return torch.where(den > 0, den, torch.ones_like(den))


class _ExpLinearAttention(torch.autograd.Function):
    """Fused exp + linear attention on log-features (hand-written backward).

    Forward: (φ̃x, φ̃y) of the per-feature stabilizer (:func:`_stabilized_exp`; detached
    shifts), [num, den] = φ̃x (φ̃yᵀ [V, 1]), out = num / den. Saves only φ̃x, φ̃y (the exp is
    done in place on fresh buffers) and small tensors. Backward, with
    G = [g / den, −Σ(g·out) / den] (…, Lx, dv + 1): ∂ex = (G KVᵀ) ⊙ φ̃x, ∂KV = φ̃xᵀ G,
    ∂ey = ([V, 1] ∂KVᵀ) ⊙ φ̃y, ∂V = φ̃y ∂KV[:, :dv].
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        ex: torch.Tensor,
        ey: torch.Tensor,
        v: torch.Tensor,
        x_mask: torch.Tensor | None,
        y_mask: torch.Tensor | None,
        stabilize: bool,
    ) -> torch.Tensor:
        phi_x, phi_y = _stabilized_exp(ex, ey, x_mask, y_mask, stabilize)
        v1 = _with_ones(v)
        kv = phi_y.transpose(-1, -2) @ v1  # (…, M, dv + 1)
        nd = phi_x @ kv  # (…, Lx, dv + 1)
        den = _safe_den(nd[..., -1:])
        out = nd[..., :-1] / den
        ctx.save_for_backward(phi_x, phi_y, v1, kv, den, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        phi_x, phi_y, v1, kv, den, out = ctx.saved_tensors
        need_ex, need_ey, need_v = ctx.needs_input_grad[:3]
        g_num = g / den
        g_den = -(g_num * out).sum(-1, keepdim=True)
        gg = torch.cat([g_num, g_den], dim=-1)  # (…, Lx, dv + 1)
        g_ex = g_ey = g_v = None
        if need_ex:
            g_ex = (gg @ kv.transpose(-1, -2)).mul_(phi_x)
        if need_ey or need_v:
            g_kv = phi_x.transpose(-1, -2) @ gg  # (…, M, dv + 1)
            if need_ey:
                g_ey = (v1 @ g_kv.transpose(-1, -2)).mul_(phi_y)
            if need_v:
                g_v = phi_y @ g_kv[..., :-1]
        return g_ex, g_ey, g_v, None, None, None


def _check_log_features(
    ex: torch.Tensor,
    ey: torch.Tensor,
    v: torch.Tensor,
    x_mask: torch.Tensor | None,
    y_mask: torch.Tensor | None,
) -> None:
    _check_features(ex, ey, v)
    for label, t, mask in (("x_mask", ex, x_mask), ("y_mask", ey, y_mask)):
        if mask is not None and (mask.dtype != torch.bool or mask.shape != t.shape[:-1]):
            raise ValueError(
                f"{label} must be a bool tensor of shape {tuple(t.shape[:-1])}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )


def exp_linear_attention(
    ex: torch.Tensor,
    ey: torch.Tensor,
    v: torch.Tensor,
    *,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    stabilize: bool = True,
) -> torch.Tensor:
    """Non-causal attention with positive features φ = exp(e) given their logs (fused, fast).

    ``ex`` (…, Lx, M), ``ey`` (…, Ly, M) are log-features (e.g.
    :meth:`~spectra.features.ExponentialFeatureMap.exponents`); masks (…, L) bool, True = real
    token. With ``stabilize`` keys are shifted by a per-feature max over valid keys and each
    query row by its max after the compensating per-feature shift (both cancel exactly; the
    denominator stays ≥ 1). Equals :func:`exp_linear_attention_naive` (outputs and gradients)
    to float rounding.
    """
    _check_log_features(ex, ey, v, x_mask, y_mask)
    return _ExpLinearAttention.apply(ex, ey, v.to(ex.dtype), x_mask, y_mask, stabilize)


def exp_linear_attention_naive(
    ex: torch.Tensor,
    ey: torch.Tensor,
    v: torch.Tensor,
    *,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Reference for the exponential kernels, in the log domain (no shared stabilizer).

    log K̂_ij = logsumexp_r (ex_ir + ey_jr) (an explicit (…, Lx, Ly, M) tensor: tiny inputs),
    invalid (masked, or j > i when ``causal``) pairs −∞; out_i = softmax_j(log K̂_ij) V — the
    estimate K̂V / K̂1 with each row shifted by its own max over j. Queries without a valid key
    and padded queries give 0.
    """
    _check_log_features(ex, ey, v, x_mask, y_mask)
    log_k = torch.logsumexp(ex[..., :, None, :] + ey[..., None, :, :], dim=-1)
    invalid = torch.zeros(log_k.shape, dtype=torch.bool, device=log_k.device)
    if y_mask is not None:
        invalid = invalid | ~y_mask[..., None, :]
    if causal:
        invalid = invalid | torch.ones_like(invalid).triu(1)
    has_key = (~invalid).any(dim=-1, keepdim=True)
    log_k = log_k.masked_fill(invalid | ~has_key, float("-inf")).masked_fill(~has_key, 0.0)
    weights = torch.softmax(log_k, dim=-1) * has_key
    out = weights @ v.to(ex.dtype)
    if x_mask is not None:
        out = out.masked_fill(~x_mask[..., None], 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# non-causal, row-wise exponential maps: chunked, recomputing (O(L·d) memory)
# ---------------------------------------------------------------------------------------------
ExponentsFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]

# Elements of one (batch, rows, M) block of log-features: 2^22 = 16 MiB in fp32. Measured on 2 CPU
# cores (B=1, H=8, L=16384, m=256): 2^20 … 2^22 give the same time; 2^24 is ~1.8× slower (blocks
# beyond glibc's 32 MiB mmap threshold are page-faulted afresh on every allocation). Larger
# blocks mean fewer ops, which matters when the cores are shared with other processes (each
# multi-threaded op then waits for all its threads).
_CHUNK_ELEMENTS = 1 << 22


def default_chunk_rows(batch: int, features: int, length: int) -> int:
    """Rows per chunk so that a (batch, rows, features) block holds about 2^22 elements."""
    rows = _CHUNK_ELEMENTS // max(batch * features, 1)
    return max(16, min(max(length, 1), rows))


def _valid_feature_max(e: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-feature max of ``e`` (N, c, M) over valid rows → (N, 1, M); −∞ where none is."""
    if mask is not None:
        e = torch.where(mask[..., None], e, float("-inf"))
    return e.amax(dim=1, keepdim=True)


class _RowwiseExpLinearAttention(torch.autograd.Function):
    """Linear attention with φ = exp(e), e from a row-wise exponent function, by row chunks.

    Forward: keys chunk by chunk, KV = Σ_j φ̃(y_j) v_jᵀ and z = Σ_j φ̃(y_j) with a running
    per-feature key max c (when a chunk raises c_r, feature r of the sums so far is rescaled by
    exp(c_r,old − c_r,new), so the result is that of one per-feature max over all valid keys);
    then queries chunk by chunk, e_x + c shifted by its row max, [num, den] = φ̃(x_i)ᵀ [KV, z]
    (den ≥ 1; :func:`_stabilized_exp`). Nothing of size L×M is stored: backward recomputes each
    chunk's exponents (with autograd, for the exponent function's gradient) and applies the
    formulas of :class:`_ExpLinearAttention` chunk-wise. Saved: the inputs, out and den
    (O(L·(d + dv))) and the small [KV, z] and c.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        y: torch.Tensor,
        v: torch.Tensor,
        w: torch.Tensor,
        fn: ExponentsFn,
        x_mask: torch.Tensor | None,
        y_mask: torch.Tensor | None,
        stabilize: bool,
        chunk: int,
        *params: torch.Tensor,
    ) -> torch.Tensor:
        n, lx, _ = x.shape
        ly, dv = y.shape[1], v.shape[-1]
        x0, y0 = x[:, :0], y[:, :0]
        features = fn(x0, y0, w)[1].shape[-1]
        kv = x.new_zeros(n, features, dv)
        z = x.new_zeros(n, 1, features)
        run = x.new_full((n, 1, features), float("-inf"))
        for s in range(0, ly, chunk):
            e = fn(x0, y[:, s : s + chunk], w)[1]
            ym = None if y_mask is None else y_mask[:, s : s + chunk]
            if stabilize:
                new = torch.maximum(run, _valid_feature_max(e, ym))
                new_eff = finite_or_zero(new)
                rescale = torch.where(torch.isfinite(run), (run - new_eff).exp(), 1.0)
                kv.mul_(rescale.transpose(1, 2))
                z.mul_(rescale)
                e.sub_(new_eff)
                run = new
            e.exp_()
            if ym is not None:
                e.masked_fill_(~ym[..., None], 0.0)
            kv.baddbmm_(e.transpose(1, 2), v[:, s : s + chunk])
            z.add_(e.sum(dim=1, keepdim=True))
        key_shift = finite_or_zero(run) if stabilize else torch.zeros_like(run)
        kvz = torch.cat([kv, z.transpose(1, 2)], dim=-1)  # (n, M, dv + 1)
        out = x.new_empty(n, lx, dv)
        den = x.new_empty(n, lx, 1)
        for s in range(0, lx, chunk):
            e = fn(x[:, s : s + chunk], y0, w)[0]
            if stabilize:
                e.add_(key_shift)
                e.sub_(_row_max(e))
            e.exp_()
            if x_mask is not None:
                e.masked_fill_(~x_mask[:, s : s + chunk, None], 0.0)
            nd = torch.bmm(e, kvz)
            den_c = _safe_den(nd[..., -1:])
            den[:, s : s + chunk] = den_c
            torch.div(nd[..., :-1], den_c, out=out[:, s : s + chunk])
        ctx.fn, ctx.chunk, ctx.stabilize = fn, chunk, stabilize
        ctx.has_masks = (x_mask is not None, y_mask is not None)
        masks = [m for m in (x_mask, y_mask) if m is not None]
        ctx.save_for_backward(x, y, v, w, kvz, key_shift, den, out, *masks, *params)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, y, v, w, kvz, key_shift, den, out, *rest = ctx.saved_tensors
        it = iter(rest)
        x_mask = next(it) if ctx.has_masks[0] else None
        y_mask = next(it) if ctx.has_masks[1] else None
        params = list(it)
        fn, chunk, stabilize = ctx.fn, ctx.chunk, ctx.stabilize
        need_x, need_y, need_v, need_w = ctx.needs_input_grad[:4]
        need_p = list(ctx.needs_input_grad[9:])
        x0, y0 = x[:, :0].detach(), y[:, :0].detach()
        w_leaf = w.detach().requires_grad_(need_w)
        extra = ([w_leaf] if need_w else []) + [p for p, need in zip(params, need_p) if need]
        g_extra = [torch.zeros_like(t) for t in extra]

        def accumulate(e: torch.Tensor, leaf: torch.Tensor, need_leaf: bool, g_e: torch.Tensor):
            inputs = ([leaf] if need_leaf else []) + extra
            grads = torch.autograd.grad(e, inputs, g_e, allow_unused=True)
            for acc, gr in zip(g_extra, grads[int(need_leaf) :]):
                if gr is not None:
                    acc.add_(gr)
            return grads[0] if need_leaf else None

        # queries: ∂KVZ = Σ φ̃xᵀ G and ∂ex = (G KVZᵀ) ⊙ φ̃x, G = [g/den, −Σ(g·out)/den]
        g_kvz = torch.zeros_like(kvz)
        kvz_t = kvz.transpose(1, 2)
        q_graph = need_x or bool(extra)
        g_x = torch.empty_like(x) if need_x else None
        for s in range(0, x.shape[1], chunk):
            xc = x[:, s : s + chunk].detach().requires_grad_(need_x)
            with torch.set_grad_enabled(q_graph):
                e = fn(xc, y0, w_leaf)[0]
            if stabilize:
                p = e.detach() + key_shift
                p.sub_(_row_max(p))
            else:
                p = e.detach().clone()
            p.exp_()
            if x_mask is not None:
                p.masked_fill_(~x_mask[:, s : s + chunk, None], 0.0)
            g_num = g[:, s : s + chunk] / den[:, s : s + chunk]
            g_den = -(g_num * out[:, s : s + chunk]).sum(-1, keepdim=True)
            gc = torch.cat([g_num, g_den], dim=-1)
            g_kvz.baddbmm_(p.transpose(1, 2), gc)
            if q_graph:
                gx_c = accumulate(e, xc, need_x, torch.bmm(gc, kvz_t).mul_(p))
                if need_x:
                    g_x[:, s : s + chunk] = gx_c
        # keys: ∂ey = (V ∂KVᵀ + ∂z) ⊙ φ̃y, ∂V = φ̃y ∂KV
        k_graph = need_y or bool(extra)
        g_y = torch.empty_like(y) if need_y else None
        g_v = torch.empty_like(v) if need_v else None
        g_kv = g_kvz[..., :-1].contiguous()
        g_kv_t = g_kv.transpose(1, 2)
        g_z = g_kvz[..., -1][:, None, :]  # (n, 1, M)
        for s in range(0, y.shape[1], chunk):
            yc = y[:, s : s + chunk].detach().requires_grad_(need_y)
            with torch.set_grad_enabled(k_graph):
                e = fn(x0, yc, w_leaf)[1]
            p = e.detach() - key_shift
            p.exp_()
            if y_mask is not None:
                p.masked_fill_(~y_mask[:, s : s + chunk, None], 0.0)
            if need_v:
                torch.bmm(p, g_kv, out=g_v[:, s : s + chunk])
            if k_graph:
                g_e = torch.baddbmm(g_z, v[:, s : s + chunk], g_kv_t).mul_(p)
                gy_c = accumulate(e, yc, need_y, g_e)
                if need_y:
                    g_y[:, s : s + chunk] = gy_c
        it_extra = iter(g_extra)
        g_w = next(it_extra) if need_w else None
        g_params = [next(it_extra) if need else None for need in need_p]
        return (g_x, g_y, g_v, g_w, None, None, None, None, None, *g_params)


def _flatten_leading(t: torch.Tensor, lead: torch.Size, n: int) -> torch.Tensor:
    """A statistic (…, *) with leading dims ``lead`` (or broadcastable to them) → (n, *)."""
    if t.requires_grad:
        raise ValueError("stats must be constants (detached); pass trainable tensors as params")
    if t.dim() < len(lead):
        raise ValueError(
            f"each statistic needs the leading dims {tuple(lead)} of x, got shape {tuple(t.shape)}"
        )
    rest = t.shape[len(lead) :]
    return t.expand(*lead, *rest).reshape(n, *rest)


def _with_stats(
    exponents: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    stats: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return exponents(x, y, w, *stats)


def rowwise_exp_linear_attention(
    x: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    exponents: ExponentsFn,
    *,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    stabilize: bool = True,
    chunk_rows: int | None = None,
    params: Sequence[torch.Tensor] = (),
    stats: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Non-causal attention with φ = exp(e), computed by row chunks with O(L·d) memory.

    ``exponents(x, y, w, *stats) -> (e_x, e_y)`` must be row-wise: the log-features of a token
    depend only on that token, ``w`` and ``stats`` (true of every exponential feature map once
    its data statistics are fixed, :meth:`~spectra.features.ExponentialFeatureMap.
    rowwise_exponents`; it is also called with an empty x or y). x (…, Lx, d), y (…, Ly, d),
    v (…, Ly, dv); masks (…, L) bool; ``stats``: constant (detached) tensors of shape (…, *)
    with the leading dims of x, one value per (batch, head) (e.g. OPRF's A*); ``params``:
    tensors that ``exponents`` uses besides x, y, w and that need gradients (e.g. a map's
    parameters). Same result, stabilizers and gradients as :func:`exp_linear_attention` on
    ``exponents(x, y, w, *stats)`` (to float rounding).
    """
    if x.shape[-1] != y.shape[-1] or y.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"shapes do not fit: x {tuple(x.shape)}, y {tuple(y.shape)}, v {tuple(v.shape)}"
        )
    lead = x.shape[:-2]
    n = math.prod(lead)
    lx, ly, dv = x.shape[-2], y.shape[-2], v.shape[-1]
    xs = x.reshape(n, lx, x.shape[-1])
    ys = y.reshape(n, ly, y.shape[-1])
    vs = v.to(x.dtype).reshape(n, ly, dv)
    xm = None if x_mask is None else x_mask.expand(*lead, lx).reshape(n, lx)
    ym = None if y_mask is None else y_mask.expand(*lead, ly).reshape(n, ly)
    flat = [_flatten_leading(t, lead, n) for t in stats]
    if flat:
        exponents = functools.partial(_with_stats, exponents, flat)
    if chunk_rows is None:
        features = exponents(xs[:, :0], ys[:, :0], w)[0].shape[-1]
        chunk_rows = default_chunk_rows(n, features, max(lx, ly))
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    out = _RowwiseExpLinearAttention.apply(
        xs, ys, vs, w, exponents, xm, ym, stabilize, chunk_rows, *params
    )
    return out.reshape(*lead, lx, dv)


# ---------------------------------------------------------------------------------------------
# causal
# ---------------------------------------------------------------------------------------------
def _check_causal(phi_x: torch.Tensor, phi_y: torch.Tensor, v: torch.Tensor) -> None:
    _check_features(phi_x, phi_y, v)
    if phi_x.shape[-2] != phi_y.shape[-2]:
        raise ValueError(
            "causal attention needs as many queries as keys, got "
            f"{phi_x.shape[-2]} and {phi_y.shape[-2]}"
        )


def causal_linear_attention(
    phi_x: torch.Tensor,
    phi_y: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int = 128,
    eps: float = 1e-6,
    positive: bool = True,
    x_log_scale: torch.Tensor | None = None,
    y_log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal linear attention by chunks of C = ``chunk_size`` positions, with a running key max.

    Features are log-scaled: φ(x_i) = φx_i · exp(sx_i), φ(y_j) = φy_j · exp(sy_j) with
    ``x_log_scale`` sx (…, L, 1) and ``y_log_scale`` sy (…, L, 1) (None: 0; padded keys
    sy = −∞). With the running max t_i = max_{j≤i} sy_j (detached), every term is computed as
    φx_iᵀφy_j · exp(sy_j − t_i) ≤ |φx_i||φy_j|, so nothing overflows, and the [num, den] of
    query i — scaled by exp(−sx_i − t_i), a constant of row i — depends on keys j ≤ i only:
    no output sees a later token, at any chunk size (the leak of one max over the sequence).

    Inside a chunk: the masked quadratic form (φX_c φY_cᵀ ⊙ D) [V_c, 1] with
    D_ij = exp(sy_j − t_i) for j ≤ i, else 0; across chunks: the state
    S_c = Σ_{j < start(c)} exp(sy_j − T_c) φy_j [v_j, 1]ᵀ at the max T_c of the keys before the
    chunk, carried forward with the online-softmax rescaling S ← S·exp(T_c − T_{c+1}) + …, and
    entering query i as exp(T_c − t_i) φx_iᵀ S_c. Memory O(L·C + (L/C)·M·dv).
    """
    _check_causal(phi_x, phi_y, v)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    length = phi_x.shape[-2]
    lead = phi_x.shape[:-2]
    c = min(chunk_size, max(length, 1))
    n = math.ceil(length / c)
    pad = n * c - length
    zeros = phi_y.new_zeros((*lead, length, 1))
    sx = zeros if x_log_scale is None else x_log_scale.expand(*lead, length, 1)
    sy = zeros if y_log_scale is None else y_log_scale.expand(*lead, length, 1)
    v1 = _with_ones(v.to(phi_x.dtype))
    # running key max t_i (…, L), detached; −∞ until the first valid key
    sy_d = sy.detach()[..., 0]
    t = sy_d.cummax(dim=-1).values if length else sy_d
    t_eff = finite_or_zero(t)

    def chunks(a: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        if pad:
            a = torch.cat([a, a.new_full((*a.shape[:-2], pad, a.shape[-1]), fill)], dim=-2)
        return a.reshape(*lead, n, c, a.shape[-1])

    qx, ky, vv = chunks(phi_x), chunks(phi_y), chunks(v1)
    sy_c = chunks(sy, float("-inf"))[..., 0]  # (…, n, C)
    t_c = chunks(t_eff[..., None])[..., 0]  # (…, n, C); padded queries are dropped below
    # intra-chunk: D_ij = exp(sy_j − t_i) for j ≤ i (≤ 1), 0 above the diagonal
    tri = torch.ones(c, c, dtype=torch.bool, device=phi_x.device).tril()
    decay = torch.where(tri, (sy_c[..., None, :] - t_c[..., :, None]).clamp_max(0.0), -math.inf)
    intra = ((qx @ ky.transpose(-1, -2)) * decay.exp()) @ vv  # (…, n, C, dv + 1)
    # chunk sums at the max after each chunk, then the carried state
    t_end = t_c[..., -1:]  # (…, n, 1): T_{c+1}, the max of keys up to the chunk's end
    if pad:  # the last chunk's end is a padded slot: its t is that of the last real key
        t_end = torch.cat([t_end[..., :-1, :], t_eff[..., -1:, None]], dim=-2) if n else t_end
    scaled_keys = ky * (sy_c - t_end).exp()[..., None]  # (…, n, C, M)
    sums = scaled_keys.transpose(-1, -2) @ vv  # (…, n, M, dv + 1)
    states = [torch.zeros_like(sums[..., :1, :, :])]
    for i in range(n - 1):
        ratio = (t_end[..., i - 1, :] - t_end[..., i, :]).clamp_max(0.0).exp() if i else None
        prev = states[-1] if ratio is None else states[-1] * ratio[..., None, None]
        states.append(prev + sums[..., i : i + 1, :, :])
    state = torch.cat(states, dim=-3) if n else sums  # S_c at scale T_c = t_end[c − 1]
    t_start = torch.cat([torch.zeros_like(t_end[..., :1, :]), t_end[..., :-1, :]], dim=-2)
    carry = (t_start - t_c).clamp_max(0.0).exp()[..., None]  # (…, n, C, 1): exp(T_c − t_i)
    nd = (qx @ state) * carry + intra
    nd = nd.reshape(*lead, n * c, v1.shape[-1])[..., :length, :]
    return normalize_attention(nd, eps, positive, sx + t_eff[..., None])


def causal_linear_attention_prefix_naive(
    phi_x: torch.Tensor,
    phi_y: torch.Tensor,
    v: torch.Tensor,
    *,
    eps: float = 1e-6,
    positive: bool = True,
) -> torch.Tensor:
    """Reference: S_i = cumsum_j φ(y_j)[v_j, 1]ᵀ materialized (…, L, M, dv + 1) (tiny inputs)."""
    _check_causal(phi_x, phi_y, v)
    prefix = (phi_y[..., :, :, None] * _with_ones(v)[..., :, None, :]).cumsum(dim=-3)
    nd = torch.einsum("...lm,...lme->...le", phi_x, prefix)
    return normalize_attention(nd, eps, positive)


def causal_linear_attention_quadratic_naive(
    phi_x: torch.Tensor,
    phi_y: torch.Tensor,
    v: torch.Tensor,
    *,
    eps: float = 1e-6,
    positive: bool = True,
) -> torch.Tensor:
    """Reference: lower-triangular K̂ = tril(φ(X) φ(Y)ᵀ) (…, L, L), out = K̂[V, 1] normalized."""
    _check_causal(phi_x, phi_y, v)
    k = (phi_x @ phi_y.transpose(-1, -2)).tril()
    return normalize_attention(k @ _with_ones(v), eps, positive)
