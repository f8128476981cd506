"""Linear-attention kernels (spectra.ops): every fast path equals its plain reference."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.ops import (
    causal_linear_attention,
    causal_linear_attention_prefix_naive,
    causal_linear_attention_quadratic_naive,
    exp_linear_attention,
    exp_linear_attention_naive,
    linear_attention,
    linear_attention_naive,
    normalize_attention,
    rowwise_exp_linear_attention,
)

DT = torch.float64


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _grads(fn, *inputs: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output of ``fn(*inputs)`` and the gradients of a random linear functional of it."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * probe).sum().backward()
    return out.detach(), [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]


def _features(shape, signed: bool, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=DT)
    return t - 0.3 if signed else t + 0.05


def _masks(b: int, length: int) -> torch.Tensor:
    mask = torch.ones(b, 1, length, dtype=torch.bool)
    mask[0, 0, length - 3 :] = False
    mask[-1, 0, :2] = False
    return mask.expand(b, 2, length)


# -- non-causal ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True])
def test_linear_attention_matches_naive(signed: bool) -> None:
    phi_x = _features((2, 3, 7, 5), signed, 1)
    phi_y = _features((2, 3, 9, 5), signed, 2)
    v = torch.randn(2, 3, 9, 4, dtype=DT)
    positive = not signed

    def fast(a, b, c):
        return linear_attention(a, b, c, positive=positive)

    def naive(a, b, c):
        return linear_attention_naive(a, b, c, positive=positive)

    out_f, g_f = _grads(fast, phi_x, phi_y, v)
    out_n, g_n = _grads(naive, phi_x, phi_y, v)
    _close(out_f, out_n)
    for a, b in zip(g_f, g_n):
        _close(a, b)


@pytest.mark.parametrize("stabilize", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_exp_attention_matches_naive(stabilize: bool, masked: bool) -> None:
    g = torch.Generator().manual_seed(3)
    ex = torch.randn(3, 2, 8, 6, generator=g, dtype=DT) * 2
    ey = torch.randn(3, 2, 8, 6, generator=g, dtype=DT) * 2
    v = torch.randn(3, 2, 8, 5, generator=g, dtype=DT)
    mask = _masks(3, 8) if masked else None

    def fused(a, b, c):
        return exp_linear_attention(a, b, c, x_mask=mask, y_mask=mask, stabilize=stabilize)

    def naive(a, b, c):
        return exp_linear_attention_naive(a, b, c, x_mask=mask, y_mask=mask)

    out_f, g_f = _grads(fused, ex, ey, v)
    out_n, g_n = _grads(naive, ex, ey, v)
    _close(out_f, out_n)
    for a, b in zip(g_f, g_n):
        _close(a, b)
    if masked:
        assert (out_f[~mask] == 0).all()


def test_fused_exp_attention_equals_plain_features() -> None:
    """The fused path on logs equals linear attention on explicit exp(log-features)."""
    g = torch.Generator().manual_seed(4)
    ex = torch.randn(2, 6, 4, generator=g, dtype=DT)
    ey = torch.randn(2, 7, 4, generator=g, dtype=DT)
    v = torch.randn(2, 7, 3, generator=g, dtype=DT)
    ref = linear_attention_naive(ex.exp(), ey.exp(), v)
    _close(exp_linear_attention(ex, ey, v), ref)


def test_fused_and_rowwise_exact_at_log_feature_gaps_beyond_float32_range() -> None:
    """An outlier key 200 above the rest in one feature (e^200 overflows float32, e^-200
    underflows it): the per-feature stabilizer keeps the float32 result equal to the float64
    log-domain reference, and no denominator falls below 1."""
    g = torch.Generator().manual_seed(7)
    ex = torch.randn(1, 6, 5, generator=g, dtype=DT) * 3 - 40.0
    ey = torch.randn(1, 9, 5, generator=g, dtype=DT) * 3 - 40.0
    ey[0, 4, 2] += 200.0
    v = torch.randn(1, 9, 3, generator=g, dtype=DT)
    ref = exp_linear_attention_naive(ex, ey, v)
    fused = exp_linear_attention(ex.float(), ey.float(), v.float())
    torch.testing.assert_close(fused.double(), ref, rtol=1e-5, atol=1e-6)
    w = torch.eye(5, dtype=DT)

    def fn(a, b, c):
        return a, b

    rowwise = rowwise_exp_linear_attention(
        ex.float(), ey.float(), v.float(), w.float(), fn, chunk_rows=2
    )
    torch.testing.assert_close(rowwise.double(), ref, rtol=1e-5, atol=1e-6)


def test_naive_exp_reference_is_the_estimator() -> None:
    """The log-domain reference equals K̂V / K̂1 with K̂ = exp(ex) exp(ey)ᵀ formed directly."""
    g = torch.Generator().manual_seed(8)
    ex, ey = (torch.randn(2, 5, 4, generator=g, dtype=DT) for _ in range(2))
    v = torch.randn(2, 5, 3, generator=g, dtype=DT)
    k = ex.exp() @ ey.exp().transpose(-1, -2)
    _close(exp_linear_attention_naive(ex, ey, v), (k @ v) / k.sum(-1, keepdim=True))
    kc = k.tril()
    _close(exp_linear_attention_naive(ex, ey, v, causal=True), (kc @ v) / kc.sum(-1, keepdim=True))


def test_fused_exp_attention_gradcheck() -> None:
    g = torch.Generator().manual_seed(5)
    ex = torch.randn(1, 2, 5, 3, generator=g, dtype=DT, requires_grad=True)
    ey = torch.randn(1, 2, 4, 3, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn(1, 2, 4, 2, generator=g, dtype=DT, requires_grad=True)
    mask = torch.tensor([[True, True, False, True]]).expand(1, 2, 4)
    assert torch.autograd.gradcheck(
        lambda a, b, c: exp_linear_attention(a, b, c, y_mask=mask), (ex, ey, v)
    )
    # only some inputs needing gradients
    assert torch.autograd.gradcheck(
        lambda c: exp_linear_attention(ex.detach(), ey.detach(), c), (v,)
    )


def test_fused_exp_attention_padding_only_rows_are_zero() -> None:
    ex = torch.randn(2, 4, 3, dtype=DT)
    ey = torch.randn(2, 4, 3, dtype=DT, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=DT)
    mask = torch.tensor([[True, True, False, True], [False] * 4])
    out = exp_linear_attention(ex, ey, v, x_mask=mask, y_mask=mask)
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    out.sum().backward()
    assert torch.isfinite(ey.grad).all()


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="feature dims"):
        linear_attention(torch.rand(1, 3, 4), torch.rand(1, 3, 5), torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="same length"):
        linear_attention(torch.rand(1, 3, 4), torch.rand(1, 3, 4), torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="y_mask"):
        exp_linear_attention(
            torch.rand(1, 3, 4),
            torch.rand(1, 3, 4),
            torch.rand(1, 3, 2),
            y_mask=torch.ones(1, 4, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="chunk_size"):
        causal_linear_attention(
            torch.rand(1, 3, 4), torch.rand(1, 3, 4), torch.rand(1, 3, 2), chunk_size=0
        )


# -- chunked row-wise path ----------------------------------------------------------------------
class _Exponents(torch.nn.Module):
    """posrf-like log-features with a trainable per-feature offset (exercises ``params``)."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.linspace(-0.5, 0.5, m, dtype=DT))

    def forward(self, x, y, w):
        def one(t):
            sq = 0.5 * t.square().sum(-1, keepdim=True)
            return t @ w.transpose(-1, -2) - sq - 0.5 * math.log(w.shape[0]) + self.offset

        return one(x), one(y)


@pytest.mark.parametrize("chunk_rows", [1, 3, 4, 64])
@pytest.mark.parametrize("stabilize", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_rowwise_chunked_matches_naive(chunk_rows: int, stabilize: bool, masked: bool) -> None:
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 10, 4, generator=g, dtype=DT)
    y = torch.randn(2, 3, 7, 4, generator=g, dtype=DT) * 1.5
    v = torch.randn(2, 3, 7, 5, generator=g, dtype=DT)
    w = torch.randn(6, 4, generator=g, dtype=DT)
    fn = _Exponents(6)
    x_mask = y_mask = None
    if masked:
        x_mask = torch.rand(2, 3, 10, generator=g) > 0.3
        y_mask = torch.rand(2, 3, 7, generator=g) > 0.3
        y_mask[1, 2] = False  # a (batch, head) with no valid key

    def fast(a, b, c, d):
        return rowwise_exp_linear_attention(
            a,
            b,
            c,
            d,
            fn,
            x_mask=x_mask,
            y_mask=y_mask,
            stabilize=stabilize,
            chunk_rows=chunk_rows,
            params=[fn.offset],
        )

    def naive(a, b, c, d):
        ex, ey = fn(a, b, d)
        return exp_linear_attention_naive(ex, ey, c, x_mask=x_mask, y_mask=y_mask)

    out_f, g_f = _grads(fast, x, y, v, w)
    off_f = fn.offset.grad.clone()
    fn.offset.grad = None
    out_n, g_n = _grads(naive, x, y, v, w)
    _close(out_f, out_n)
    for a, b in zip(g_f, g_n):
        _close(a, b)
    _close(off_f, fn.offset.grad)
    if masked:
        assert (out_f[~x_mask] == 0).all() and (out_f[1, 2] == 0).all()


def test_rowwise_chunked_gradcheck() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 2, 5, 3, generator=g, dtype=DT, requires_grad=True)
    y = torch.randn(1, 2, 4, 3, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn(1, 2, 4, 2, generator=g, dtype=DT, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=DT, requires_grad=True)
    fn = _Exponents(4)
    mask = torch.tensor([True, False, True, True]).expand(1, 2, 4)
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: rowwise_exp_linear_attention(a, b, c, d, fn, y_mask=mask, chunk_rows=2),
        (x, y, v, w),
    )


# -- row-wise path with data statistics (every registered exponential map) -----------------------
def _exponential_maps() -> list[str]:
    from spectra.features import ExponentialFeatureMap
    from spectra.registry import FEATURE_MAPS

    return [
        n for n in FEATURE_MAPS.names() if issubclass(FEATURE_MAPS.get(n), ExponentialFeatureMap)
    ]


@pytest.mark.parametrize("fmap", _exponential_maps())
@pytest.mark.parametrize("masked", [False, True])
def test_rowwise_with_statistics_matches_naive_for_every_exponential_map(
    fmap: str, masked: bool
) -> None:
    """Statistics fixed once, log-features streamed in chunks of 3 rows == the map's exponents
    on the whole sequence (outputs and gradients of x, y, v, W)."""
    from spectra.registry import FEATURE_MAPS

    fm = FEATURE_MAPS.build(fmap)
    if not fm.has_rowwise_exponents:
        pytest.skip(f"{fmap} has no row-wise form (runs on the fused path)")
    g = torch.Generator().manual_seed(21)
    scales = torch.tensor([0.3, 1.0, 2.0, 0.5], dtype=DT)
    x = torch.randn(2, 3, 10, 4, generator=g, dtype=DT) * 0.8
    y = torch.randn(2, 3, 10, 4, generator=g, dtype=DT) * scales
    v = torch.randn(2, 3, 10, 5, generator=g, dtype=DT)
    w = torch.randn(6, 4, generator=g, dtype=DT)
    mask = None
    if masked:
        mask = torch.rand(2, 3, 10, generator=g) > 0.3
        mask[1, 2] = False  # a (batch, head) with no valid token
    stats = fm.statistics(x, y, mask, mask)
    assert all(t.shape[:2] == (2, 3) and not t.requires_grad for t in stats)

    def fast(a, b, c, d):
        return rowwise_exp_linear_attention(
            a, b, c, d, fm.rowwise_exponents, x_mask=mask, y_mask=mask, chunk_rows=3, stats=stats
        )

    def naive(a, b, c, d):
        ex, ey = fm.exponents(a, b, d, mask, mask)
        return exp_linear_attention_naive(ex, ey, c, x_mask=mask, y_mask=mask)

    out_f, g_f = _grads(fast, x, y, v, w)
    out_n, g_n = _grads(naive, x, y, v, w)
    _close(out_f, out_n, 1e-9)
    for a, b in zip(g_f, g_n):
        _close(a, b, 1e-9)


def test_rowwise_statistics_must_be_constants_with_leading_dims() -> None:
    x = torch.randn(2, 3, 5, 4, dtype=DT)
    w = torch.randn(6, 4, dtype=DT)
    v = torch.randn(2, 3, 5, 2, dtype=DT)

    def fn(a, b, c, s):
        return a @ c.T + s[:, None, None], b @ c.T + s[:, None, None]

    with pytest.raises(ValueError, match="detached"):
        rowwise_exp_linear_attention(x, x, v, w, fn, stats=[torch.zeros(2, 3, requires_grad=True)])
    with pytest.raises(ValueError, match="leading dims"):
        rowwise_exp_linear_attention(x, x, v, w, fn, stats=[torch.zeros(3)])
    out = rowwise_exp_linear_attention(x, x, v, w, fn, stats=[torch.zeros(2, 1, dtype=DT)])
    assert out.shape == (2, 3, 5, 2)


# -- signed denominators ------------------------------------------------------------------------
def test_signed_denominator_keeps_sign_and_magnitude_floor() -> None:
    num = torch.ones(5, 1, dtype=DT)
    den = torch.tensor([[2.0], [-3.0], [1e-9], [-1e-9], [0.0]], dtype=DT)
    out = normalize_attention(torch.cat([num, den], -1), eps=1e-3, positive=False)
    _close(out.squeeze(-1), torch.tensor([0.5, -1 / 3, 1e3, -1e3, 1e3], dtype=DT))


def test_signed_floor_is_on_the_natural_scale() -> None:
    """With log_scale c, the floor is ε·e^(−c): the same result as the unscaled row."""
    nd = torch.tensor([[1.0, 1e-9], [1.0, 2.0], [1.0, -1e-9]], dtype=DT)
    c = torch.tensor([[5.0], [5.0], [-3.0]], dtype=DT)
    scaled = normalize_attention(nd, eps=1e-3, positive=False, log_scale=c)
    natural = normalize_attention(nd * c.exp(), eps=1e-3, positive=False)
    _close(scaled, natural)


def test_positive_denominator_has_no_epsilon() -> None:
    """A tiny positive denominator is used as it is (the estimate), 0 only without keys."""
    nd = torch.tensor([[3e-20, 1e-20], [2.0, 4.0], [0.0, 0.0]], dtype=DT)
    _close(normalize_attention(nd, eps=1e-3).squeeze(-1), torch.tensor([3.0, 0.5, 0.0], dtype=DT))


# -- causal -------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 5, 12, 100])
def test_causal_chunked_equals_prefix_sum_and_masked_quadratic(
    signed: bool, chunk_size: int
) -> None:
    length = 12
    phi_x = _features((2, 2, length, 6), signed, 6)
    phi_y = _features((2, 2, length, 6), signed, 7)
    v = torch.randn(2, 2, length, 3, dtype=DT)
    positive = not signed

    def chunked(a, b, c):
        return causal_linear_attention(a, b, c, chunk_size=chunk_size, positive=positive)

    def prefix(a, b, c):
        return causal_linear_attention_prefix_naive(a, b, c, positive=positive)

    def quadratic(a, b, c):
        return causal_linear_attention_quadratic_naive(a, b, c, positive=positive)

    out_c, g_c = _grads(chunked, phi_x, phi_y, v)
    out_p, g_p = _grads(prefix, phi_x, phi_y, v)
    out_q, g_q = _grads(quadratic, phi_x, phi_y, v)
    _close(out_c, out_p)
    _close(out_c, out_q)
    for a, b, c in zip(g_c, g_p, g_q):
        _close(a, b)
        _close(a, c)


def test_causal_is_causal() -> None:
    """Changing position t changes no output before t."""
    phi_x = _features((1, 10, 4), False, 8)
    phi_y = _features((1, 10, 4), False, 9)
    v = torch.randn(1, 10, 2, dtype=DT)
    out = causal_linear_attention(phi_x, phi_y, v, chunk_size=4)
    phi_y2, v2 = phi_y.clone(), v.clone()
    phi_y2[:, 6:] += 1.0
    v2[:, 6:] -= 3.0
    out2 = causal_linear_attention(phi_x, phi_y2, v2, chunk_size=4)
    _close(out[:, :6], out2[:, :6])
    assert not torch.allclose(out[:, 6:], out2[:, 6:])


def test_causal_chunked_gradcheck() -> None:
    phi_x = _features((1, 7, 3), False, 10).requires_grad_(True)
    phi_y = _features((1, 7, 3), False, 11).requires_grad_(True)
    v = torch.randn(1, 7, 2, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: causal_linear_attention(a, b, c, chunk_size=3), (phi_x, phi_y, v)
    )


# -- causal with log-scaled features (running key max) ------------------------------------------
def _log_scaled(length: int, signed: bool, seed: int, spread: float):
    """Bounded features and per-row log-scales spanning ``spread`` (far beyond float32 range)."""
    g = torch.Generator().manual_seed(seed)
    u = _features((2, length, 5), signed, seed)
    s = (torch.rand(2, length, 1, generator=g, dtype=DT) - 0.5) * spread
    return u, s


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 16])
def test_causal_log_scaled_equals_natural_quadratic(signed: bool, chunk_size: int) -> None:
    """Log-scales in [−10, 10]: the chunked kernel equals the masked quadratic form on the
    natural features u·exp(s) (float64), outputs and gradients (of u, s and v)."""
    length = 11
    ux, sx = _log_scaled(length, signed, 20, 20.0)
    uy, sy = _log_scaled(length, signed, 21, 20.0)
    v = torch.randn(2, length, 3, dtype=DT)
    positive = not signed

    def chunked(a, b, c, d, e):
        return causal_linear_attention(
            a, c, e, chunk_size=chunk_size, positive=positive, x_log_scale=b, y_log_scale=d
        )

    def natural(a, b, c, d, e):
        return causal_linear_attention_quadratic_naive(
            a * b.exp(), c * d.exp(), e, positive=positive
        )

    out_c, g_c = _grads(chunked, ux, sx, uy, sy, v)
    out_n, g_n = _grads(natural, ux, sx, uy, sy, v)
    _close(out_c, out_n, 1e-9)
    for a, b in zip(g_c, g_n):
        _close(a, b, 1e-8)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 40])
def test_causal_log_scaled_float32_exact_where_natural_features_overflow(chunk_size: int) -> None:
    """Key log-scales spanning 400 (e^200 overflows float32, and float64 products too): the
    float32 chunked kernel equals the float64 log-domain reference."""
    length = 40
    g = torch.Generator().manual_seed(22)
    ex = torch.randn(1, length, 6, generator=g, dtype=DT) * 2
    ey = torch.randn(1, length, 6, generator=g, dtype=DT) * 2
    ey[0, 7] += 150.0  # an outlier key; later keys sit far below it
    ey[0, 30] += 200.0
    v = torch.randn(1, length, 3, generator=g, dtype=DT)
    ref = exp_linear_attention_naive(ex, ey, v, causal=True)
    sx = ex.amax(-1, keepdim=True)
    sy = ey.amax(-1, keepdim=True)
    out = causal_linear_attention(
        (ex - sx).exp().float(),
        (ey - sy).exp().float(),
        v.float(),
        chunk_size=chunk_size,
        x_log_scale=sx.float(),
        y_log_scale=sy.float(),
    )
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 64])
def test_causal_log_scaled_no_output_sees_a_later_token(chunk_size: int) -> None:
    """Replacing token j by one with a log-scale 300 above every other changes no output before
    j, bit for bit (a running max over j ≤ i only)."""
    length = 20
    ux, sx = _log_scaled(length, False, 23, 10.0)
    uy, sy = _log_scaled(length, False, 24, 10.0)
    v = torch.randn(2, length, 3, dtype=torch.float32)
    args = [t.float() for t in (ux, sx, uy, sy)]

    def run(uy_, sy_, v_):
        return causal_linear_attention(
            args[0], uy_, v_, chunk_size=chunk_size, x_log_scale=args[1], y_log_scale=sy_
        )

    out = run(args[2], args[3], v)
    for j in (0, 7, length - 1):
        uy2, sy2, v2 = args[2].clone(), args[3].clone(), v.clone()
        uy2[:, j] = 1.0
        sy2[:, j] = 300.0
        v2[:, j] = 1e6
        out2 = run(uy2, sy2, v2)
        assert torch.equal(out[:, :j], out2[:, :j])
        assert not torch.allclose(out[:, j:], out2[:, j:])


def test_causal_padded_keys_and_empty_sequence() -> None:
    """Padded keys (s = −∞, u = 0), including a leading run of them, contribute nothing;
    L = 0 gives an empty output with finite gradients."""
    ux, sx = _log_scaled(9, False, 25, 6.0)
    uy, sy = _log_scaled(9, False, 26, 6.0)
    v = torch.randn(2, 9, 3, dtype=DT)
    keep = torch.tensor([False, False, True, True, False, True, True, True, False])
    uy_m = torch.where(keep[:, None], uy, 0.0)
    sy_m = torch.where(keep[:, None], sy, -math.inf)
    out = causal_linear_attention(ux, uy_m, v, chunk_size=4, x_log_scale=sx, y_log_scale=sy_m)
    ref = causal_linear_attention_quadratic_naive(
        ux * sx.exp(), uy_m * sy_m.exp(), v
    )
    _close(out, ref)
    assert (out[:, :2] == 0).all()
    empty = [torch.zeros(2, 0, k, dtype=DT, requires_grad=True) for k in (5, 1, 5, 1, 3)]
    out0 = causal_linear_attention(
        empty[0], empty[2], empty[4], x_log_scale=empty[1], y_log_scale=empty[3]
    )
    assert out0.shape == (2, 0, 3)
    out0.sum().backward()
    assert empty[4].grad is not None  # the output is connected to the inputs
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in empty)
