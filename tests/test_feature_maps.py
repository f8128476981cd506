"""Feature maps (component functions): formulas, stabilizers, masking, data statistics, errors.

Every test that can is parametrized over ``FEATURE_MAPS.names()`` so plugin maps are checked too;
formula references exist for the built-in maps (docs/design.md §1).
"""

from __future__ import annotations

import math

import pytest
import torch
from stats import assert_mean_close

from spectra.features.maps.base import ExponentialFeatureMap, FeatureMap
from spectra.features.maps.gerf import gerf_log_second_moment
from spectra.features.maps.oprf import optimal_a
from spectra.features.maps.saderf import saderf_psi, saderf_statistics
from spectra.features.maps.sderf import sderf_parameters
from spectra.features.maps.stats import query_key_rho, query_key_second_moment
from spectra.registry import FEATURE_MAPS

MAPS = FEATURE_MAPS.names()
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(shape_x, shape_y, d, seed, scale=0.5, dtype=F64):
    g = _gen(seed)
    x = torch.randn(*shape_x, d, generator=g, dtype=F64) * scale
    y = torch.randn(*shape_y, d, generator=g, dtype=F64) * scale
    return x.to(dtype), y.to(dtype)


def _w(m, d, seed, dtype=F64):
    return torch.randn(m, d, generator=_gen(seed), dtype=F64).to(dtype)


# -- plain references (per formula, statistics by brute force over all pairs) ------------------
def _brute_pairs(x, y):
    """All z_ij = x_i + y_j, shape (Lx·Ly, d) (no batch dims)."""
    return (x[:, None, :] + y[None, :, :]).reshape(-1, x.shape[-1])


def _ref_gerf(t, w, a):
    d, m = t.shape[-1], w.shape[0]
    b = math.sqrt(1 - 4 * a)
    log_d = d / 4 * math.log(1 - 4 * a)
    e = a * (w * w).sum(-1) + b * t @ w.T - 0.5 * (t * t).sum(-1, keepdim=True) + log_d
    return e.exp() / math.sqrt(m)


def _ref_oprf_a(x, y):
    z = _brute_pairs(x, y)
    rho = (z * z).sum(-1).mean() / x.shape[-1]
    r = rho.item()
    return (1 - 2 * r - math.sqrt((2 * r + 1) ** 2 + 8 * r)) / 16


def _ref_sderf(x, y, w):
    """SDERF from the formula; P by brute force over pairs, statistics detached."""
    z = _brute_pairs(x.detach(), y.detach())
    p = z.T @ z / z.shape[0]
    lam, q = torch.linalg.eigh(p)
    a = torch.tensor([optimal_a(v.item()).item() for v in lam], dtype=F64)
    a_mat = q @ torch.diag(a) @ q.T
    b = q @ torch.diag((1 - 4 * a).sqrt()) @ q.T
    log_d = 0.25 * torch.log(1 - 4 * a).sum()
    m = w.shape[0]

    def f(t):
        quad = torch.stack([w_r @ a_mat @ w_r for w_r in w])  # ω_rᵀAω_r
        e = quad + t @ (b @ w.T) - 0.5 * (t * t).sum(-1, keepdim=True) + log_d
        return e.exp() / math.sqrt(m)

    return f(x), f(y)


def _reference(name, x, y, w):
    """φ(x), φ(y) from the documented formulas; statistics are constants (no grad)."""
    m = w.shape[0]
    sq = lambda t: (t * t).sum(-1, keepdim=True)  # noqa: E731
    if name == "trig":
        f = lambda t: (sq(t) / 2).exp() * torch.cat([(t @ w.T).cos(), (t @ w.T).sin()], -1)  # noqa: E731
        return f(x) / math.sqrt(m), f(y) / math.sqrt(m)
    if name == "posrf":
        return _ref_gerf(x, w, 0.0), _ref_gerf(y, w, 0.0)
    if name == "hyperbolic":
        f = lambda t: (-sq(t) / 2).exp() * torch.cat([(t @ w.T).exp(), (-t @ w.T).exp()], -1)  # noqa: E731
        return f(x) / math.sqrt(2 * m), f(y) / math.sqrt(2 * m)
    if name == "gerf":
        return _ref_gerf(x, w, -0.1), _ref_gerf(y, w, -0.1)
    if name == "oprf":
        a = _ref_oprf_a(x.detach(), y.detach())
        return _ref_gerf(x, w, a), _ref_gerf(y, w, a)
    if name == "saderf":
        xd, yd = x.detach(), y.detach()
        psi = ((yd * yd).sum(0) / (xd * xd).sum(0)) ** 0.25
        a = _ref_oprf_a(xd * psi, yd / psi)
        return _ref_gerf(x * psi, w, a), _ref_gerf(y / psi, w, a)
    if name == "sderf":
        return _ref_sderf(x, y, w)
    raise KeyError(name)


REFERENCE_MAPS = ["trig", "posrf", "hyperbolic", "gerf", "oprf", "sderf", "saderf"]


@pytest.mark.parametrize("name", REFERENCE_MAPS)
def test_matches_reference_formula_and_gradients(name):
    """Unstabilized features equal the paper's formula; gradients treat statistics as constants."""
    d, m = 6, 10
    x, y = _data((5,), (5,), d, seed=1)
    x = x * torch.linspace(0.3, 1.6, d, dtype=F64)  # anisotropic, so Ψ and P are non-trivial
    w = _w(m, d, seed=2)
    fmap = FEATURE_MAPS.build(name)
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    px, py = fmap(xs, ys, w, stabilize=False)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    rx, ry = _reference(name, xr, yr, w)
    torch.testing.assert_close(px, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(py, ry, rtol=1e-10, atol=1e-12)
    probe = torch.randn(5, 5, generator=_gen(3), dtype=F64)
    ((px @ py.T) * probe).sum().backward()
    ((rx @ ry.T) * probe).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ys.grad, yr.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", MAPS)
def test_gradcheck_data_independent(name):
    """Data-independent maps: autograd gradients equal finite differences."""
    fmap = FEATURE_MAPS.build(name)
    if fmap.data_dependent:
        pytest.skip("statistics are detached on purpose (checked against the reference)")
    x, y = _data((3,), (4,), 4, seed=4)
    w = _w(5, 4, seed=5)

    def f(x, y):
        px, py = fmap(x, y, w, stabilize=False)
        return px @ py.T

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), y.requires_grad_()))


# -- attributes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAPS)
def test_attributes_output_dim_positive_and_data_dependence(name):
    fmap = FEATURE_MAPS.build(name)
    assert isinstance(fmap, FeatureMap)
    d, m = 8, 12
    x, y = _data((2, 5), (2, 7), d, seed=6, scale=0.6)
    w = _w(m, d, seed=7)
    px, py = fmap(x, y, w)
    assert px.shape == (2, 5, fmap.output_dim(m)) and py.shape == (2, 7, fmap.output_dim(m))
    if fmap.positive:
        assert (px >= 0).all() and (py >= 0).all()
        assert isinstance(fmap, ExponentialFeatureMap) or not fmap.positive
    # data_dependent ⇔ the query features depend on the keys (and vice versa)
    y2 = y * 1.7 + 0.3
    px2, _ = fmap(x, y2, w, stabilize=False)
    px1, _ = fmap(x, y, w, stabilize=False)
    assert (not torch.allclose(px1, px2, rtol=1e-12, atol=0)) == fmap.data_dependent


def test_builtin_attributes():
    expected = {
        "trig": (False, False, 2),
        "posrf": (True, False, 1),
        "hyperbolic": (True, False, 2),
        "gerf": (True, False, 1),
        "oprf": (True, True, 1),
        "sderf": (True, True, 1),
        "saderf": (True, True, 1),
    }
    for name, (positive, data_dependent, factor) in expected.items():
        fmap = FEATURE_MAPS.build(name)
        assert fmap.positive is positive, name
        assert fmap.data_dependent is data_dependent, name
        assert fmap.output_dim(32) == factor * 32, name


# -- stabilizers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAPS)
def test_stabilizer_scales_each_query_row_by_one_constant(name):
    """stab/unstab estimate is constant along keys for each query row (batch, head kept apart):
    normalized attention is unchanged; the per-(batch, head) key shift is shared by all keys."""
    fmap = FEATURE_MAPS.build(name)
    d, m = 8, 16
    x, y = _data((2, 3, 5), (2, 3, 6), d, seed=8, scale=0.9)
    w = _w(m, d, seed=9)
    y_mask = torch.ones(2, 3, 6, dtype=torch.bool)
    y_mask[0, :, 4:] = False
    sx, sy = fmap(x, y, w, y_mask=y_mask)
    ux, uy = fmap(x, y, w, y_mask=y_mask, stabilize=False)
    stab, exact = sx @ sy.transpose(-1, -2), ux @ uy.transpose(-1, -2)
    valid = y_mask[..., None, :].expand_as(stab)
    ratio = torch.where(valid, stab / exact, torch.nan)
    row = ratio.nanmean(-1, keepdim=True)
    torch.testing.assert_close(
        torch.where(valid, ratio, row), row.expand_as(ratio), rtol=1e-9, atol=0
    )
    assert (row > 0).all()
    assert (stab[~valid] == 0).all()
    # normalized attention (positive maps) is identical
    if fmap.positive:
        v = torch.randn(2, 3, 6, 4, generator=_gen(10), dtype=F64)
        torch.testing.assert_close(
            stab @ v / stab.sum(-1, keepdim=True), exact @ v / exact.sum(-1, keepdim=True)
        )


@pytest.mark.parametrize("name", MAPS)
def test_padding_is_zero_and_invisible_to_real_tokens(name):
    """Padded rows are exactly 0; appending padded tokens (with garbage values) changes neither
    the real tokens' features (statistics, maxima) nor produces NaN."""
    fmap = FEATURE_MAPS.build(name)
    d, m = 8, 16
    x, y = _data((2, 5), (2, 6), d, seed=11, scale=0.7)
    w = _w(m, d, seed=12)
    xp = torch.cat([x, 30 * torch.randn(2, 3, d, generator=_gen(13), dtype=F64)], 1)
    yp = torch.cat([y, 30 * torch.randn(2, 4, d, generator=_gen(14), dtype=F64)], 1)
    x_mask = torch.arange(8)[None].expand(2, 8) < 5
    y_mask = torch.arange(10)[None].expand(2, 10) < 6
    for stabilize in (True, False):
        px, py = fmap(x, y, w, stabilize=stabilize)
        ppx, ppy = fmap(xp, yp, w, x_mask, y_mask, stabilize=stabilize)
        assert torch.isfinite(ppx).all() and torch.isfinite(ppy).all()
        assert (ppx[:, 5:] == 0).all() and (ppy[:, 6:] == 0).all()
        torch.testing.assert_close(ppx[:, :5], px, rtol=1e-12, atol=1e-300)
        torch.testing.assert_close(ppy[:, :6], py, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", MAPS)
def test_all_padding_rows_give_zeros_not_nan(name):
    fmap = FEATURE_MAPS.build(name)
    x, y = _data((2, 4), (2, 5), 8, seed=15)
    x_mask = torch.ones(2, 4, dtype=torch.bool)
    y_mask = torch.ones(2, 5, dtype=torch.bool)
    x_mask[1] = False
    y_mask[1] = False
    px, py = fmap(x, y, _w(6, 8, seed=16), x_mask, y_mask)
    assert torch.isfinite(px).all() and torch.isfinite(py).all()
    assert (px[1] == 0).all() and (py[1] == 0).all()
    assert (px[0].abs().sum(-1) > 0).all()


def test_broadcast_mask_accepted():
    """A (B, 1, L) mask for (B, H, L, d) inputs equals the expanded (B, H, L) mask."""
    fmap = FEATURE_MAPS.build("oprf")
    x, y = _data((2, 3, 5), (2, 3, 5), 8, seed=17)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]
    w = _w(6, 8, seed=18)
    a = fmap(x, y, w, mask, mask)
    b = fmap(x, y, w, mask.expand(2, 3, 5), mask.expand(2, 3, 5))
    for s, t in zip(a, b):
        torch.testing.assert_close(s, t, rtol=0, atol=0)


def test_statistics_ignore_padding_and_are_per_batch_head():
    """ρ, P and Ψ over valid tokens equal the statistics of the real tokens alone, per (b, h)."""
    d = 6
    x, y = _data((2, 3, 5), (2, 3, 4), d, seed=19)
    x = x * torch.linspace(0.2, 2.0, d, dtype=F64)
    xp = torch.cat([x, 1e3 * torch.ones(2, 3, 2, d, dtype=F64)], -2)
    yp = torch.cat([y, -1e3 * torch.ones(2, 3, 3, d, dtype=F64)], -2)
    xm = torch.arange(7) < 5
    ym = torch.arange(7) < 4
    xm, ym = xm.expand(2, 3, 7), ym.expand(2, 3, 7)
    torch.testing.assert_close(query_key_rho(xp, yp, xm, ym), query_key_rho(x, y))
    torch.testing.assert_close(
        query_key_second_moment(xp, yp, xm, ym), query_key_second_moment(x, y)
    )
    torch.testing.assert_close(saderf_psi(xp, yp, xm, ym), saderf_psi(x, y))
    # brute force over pairs for one (b, h)
    for b, h in ((0, 0), (1, 2)):
        z = _brute_pairs(x[b, h], y[b, h])
        p = z.T @ z / z.shape[0]
        torch.testing.assert_close(query_key_second_moment(x, y)[b, h], p)
        torch.testing.assert_close(query_key_rho(x, y)[b, h], p.trace() / d)
    # empty sets fall back to zeros / Ψ = 1 without NaN
    none = torch.zeros(2, 3, 7, dtype=torch.bool)
    assert (query_key_rho(xp, yp, none, none) == 0).all()
    assert (saderf_psi(xp, yp, none, ym) == 1).all()
    # SADERF's A* from moments == OPRF's A* on the explicitly transformed pair (Ψx, Ψ⁻¹y)
    psi, a_star = saderf_statistics(xp, yp, xm, ym)
    p = psi.unsqueeze(-2)
    torch.testing.assert_close(a_star, optimal_a(query_key_rho(xp * p, yp / p, xm, ym)))
    torch.testing.assert_close(a_star, optimal_a(query_key_rho(x * p, y / p)))
    psi0, a0 = saderf_statistics(xp, yp, none, none)
    assert (psi0 == 1).all() and (a0 == 0).all()


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("autocast", [False, True])
def test_finite_features_for_large_inputs_fp32(name, autocast):
    """‖x‖ = ‖y‖ = 10·d^(1/4) (d = 16), fp32, also under bf16 autocast: finite fp32 features."""
    fmap = FEATURE_MAPS.build(name)
    d, m = 16, 64
    x, y = _data((2, 8), (2, 8), d, seed=20, dtype=torch.float32)
    x = x / x.norm(dim=-1, keepdim=True) * 10 * d**0.25
    y = y / y.norm(dim=-1, keepdim=True) * 10 * d**0.25
    w = _w(m, d, seed=21, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        px, py = fmap(x, y, w)
        bx, by = fmap(x.bfloat16(), y.bfloat16(), w)
    for t in (px, py, bx, by):
        assert t.dtype == torch.float32
        assert torch.isfinite(t).all()
    if fmap.positive:  # the stabilized maxima are exactly 1
        torch.testing.assert_close(px.amax(-1), torch.ones(2, 8))
        torch.testing.assert_close(py.amax((-2, -1)), torch.ones(2))


# -- GERF / OPRF closed forms -----------------------------------------------------------------
def _objective(rho: float, a: torch.Tensor) -> torch.Tensor:
    """OPRF per-coordinate objective L(A) = log(1−4A) − ½ log(1−8A) + 2ρ(1−4A)/(1−8A)."""
    return torch.log1p(-4 * a) - 0.5 * torch.log1p(-8 * a) + 2 * rho * (1 - 4 * a) / (1 - 8 * a)


@pytest.mark.parametrize("rho", [0.0, 1e-3, 0.05, 0.25, 1.0, 4.0, 50.0])
def test_optimal_a_minimizes_objective_and_is_nonpositive(rho):
    a_star = optimal_a(torch.tensor(rho, dtype=F64))
    assert a_star <= 0
    grid = torch.linspace(min(-3.0, 2 * a_star.item()), 0.124, 200001, dtype=F64)
    values = _objective(rho, grid)
    assert _objective(rho, a_star) <= values.min() + 1e-12
    assert abs(grid[values.argmin()] - a_star) <= 2 * (grid[1] - grid[0])


def test_optimal_a_minimizes_mean_log_second_moment_of_data():
    """A*(ρ of the data) minimizes mean_{i,j} log E[f²(x_i) f²(y_j)] (closed form of GERF), and
    for a single pair it minimizes the variance itself."""
    d = 8
    x, y = _data((6,), (5,), d, seed=22, scale=0.6)
    a_star = optimal_a(query_key_rho(x, y))
    grid = torch.linspace(-1.0, 0.12, 4481, dtype=F64)
    objective = torch.stack([gerf_log_second_moment(x[:, None], y[None], a).mean() for a in grid])
    best = gerf_log_second_moment(x[:, None], y[None], a_star).mean()
    assert best <= objective.min() + 1e-12
    assert abs(grid[objective.argmin()] - a_star) <= 2 * (grid[1] - grid[0])
    x1, y1 = x[:1], y[:1]
    var = torch.stack([gerf_log_second_moment(x1, y1, a) for a in grid]).exp().squeeze(-1)
    a1 = optimal_a(query_key_rho(x1, y1))
    var_star = gerf_log_second_moment(x1, y1, a1).exp() - torch.exp(2 * x1 @ y1.T).squeeze()
    assert var_star <= (var - torch.exp(2 * x1 @ y1.T).squeeze()).min() + 1e-12


def test_gerf_validates_a():
    for bad in (0.25, 0.3, float("nan"), float("inf"), "0.1", None, True):
        with pytest.raises(ValueError, match="A"):
            FEATURE_MAPS.build("gerf", A=bad)
    for infinite_variance in (0.125, 0.2, 0.2499):  # unbiased, but infinite variance
        with pytest.raises(ValueError, match=r"A must be < 1/8, .*variance is infinite"):
            FEATURE_MAPS.build("gerf", A=infinite_variance)
    assert FEATURE_MAPS.build("gerf", A=0.12).A == 0.12
    assert FEATURE_MAPS.build("gerf", A=0).A == 0.0
    assert math.isinf(gerf_log_second_moment(torch.ones(1, 3), torch.ones(1, 3), 0.2).item())


def test_gerf_with_a_zero_is_posrf():
    x, y = _data((4,), (5,), 8, seed=23)
    w = _w(16, 8, seed=24)
    for s, t in zip(
        FEATURE_MAPS.build("gerf", A=0.0)(x, y, w), FEATURE_MAPS.build("posrf")(x, y, w)
    ):
        torch.testing.assert_close(s, t)


# -- SDERF ------------------------------------------------------------------------------------
def _anisotropic(seed):
    x, y = _data((7,), (6,), 5, seed=seed, scale=0.5)
    scale = torch.tensor([1.5, 0.2, 0.8, 1.0, 0.4], dtype=F64)
    mix = torch.linalg.qr(torch.randn(5, 5, generator=_gen(seed + 1), dtype=F64))[0]
    return x * scale @ mix, (y * scale.flip(0) @ mix) + 0.2


def test_sderf_parameters_as_specified():
    """a_l = A*(Λ_l) for P = QΛQᵀ, A = Q diag(a) Qᵀ, B = Q diag(√(1−4a)) Qᵀ, D = Π(1−4a_l)^(1/4),
    and the unbiasedness conditions Bᵀ(I − 4A)⁻¹B = I, D² det(I − 4A)^(−1/2) = 1."""
    x, y = _anisotropic(25)
    a, b, log_d = sderf_parameters(x, y)
    z = _brute_pairs(x, y)
    lam, q = torch.linalg.eigh(z.T @ z / z.shape[0])
    a_l = optimal_a(lam)
    assert (a_l <= 0).all() and a_l.std() > 1e-3  # anisotropic data: distinct a_l
    torch.testing.assert_close(a, q @ torch.diag(a_l) @ q.T)
    torch.testing.assert_close(b, q @ torch.diag((1 - 4 * a_l).sqrt()) @ q.T)
    torch.testing.assert_close(log_d, 0.25 * torch.log(1 - 4 * a_l).sum())
    assert torch.equal(a, a.T) and torch.equal(b, b.T)
    eye = torch.eye(5, dtype=F64)
    torch.testing.assert_close(b.T @ torch.linalg.solve(eye - 4 * a, b), eye)
    log_norm = 2 * log_d - 0.5 * torch.logdet(eye - 4 * a)  # log(D² det(I − 4A)^(−1/2))
    torch.testing.assert_close(log_norm, torch.zeros((), dtype=F64))


def _with_second_moment(lam, q, n, seed):
    """n points x with mean 0 and mean xxᵀ = Q diag(λ/2) Qᵀ, so that P(x, x) = Q diag(λ) Qᵀ."""
    x = torch.randn(n, q.shape[0], generator=_gen(seed), dtype=F64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / n)).T  # mean xxᵀ = I
    return x @ torch.diag((lam / 2).sqrt()) @ q.T


def test_sderf_parameters_do_not_depend_on_the_eigenbasis():
    """A and B are functions of P alone: another eigenbasis of P (flipped signs, a rotation
    inside a repeated eigenvalue's eigenspace) gives the same Q diag(·) Qᵀ. The former form,
    B = diag(√(1−4a))Qᵀ with Σ_l a_l ω_l², changed with the basis eigh happened to return."""
    d = 6
    q = torch.linalg.qr(torch.randn(d, d, generator=_gen(26), dtype=F64))[0]
    lam = torch.tensor([0.3, 0.3, 0.3, 1.0, 2.0, 4.0], dtype=F64)  # a triple eigenvalue
    x = _with_second_moment(lam, q, 40, seed=27)
    a, b, _ = sderf_parameters(x, x)
    a_l, b_l = optimal_a(lam), (1 - 4 * optimal_a(lam)).sqrt()
    flipped = q * torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=F64)
    turn = torch.linalg.qr(torch.randn(3, 3, generator=_gen(28), dtype=F64))[0]
    rotated = torch.cat([q[:, :3] @ turn, q[:, 3:]], dim=1)
    for basis in (q, flipped, rotated):
        torch.testing.assert_close(a, basis @ torch.diag(a_l) @ basis.T)
        torch.testing.assert_close(b, basis @ torch.diag(b_l) @ basis.T)


def test_sderf_unbiased_by_monte_carlo():
    """E[f(ω,x) f(ω,y)] = exp(xᵀy) per pair, from 200k Gaussian ω, within 4 SE."""
    x, y = _anisotropic(27)
    fmap = FEATURE_MAPS.build("sderf")
    n = 200_000
    w = torch.randn(n, 5, generator=_gen(28), dtype=F64)
    ex, ey = fmap.exponents(x, y, w)
    products = (ex[:, None, :] + ey[None, :, :] + math.log(n)).exp().permute(2, 0, 1)
    assert_mean_close(products, (x @ y.T).exp(), what="sderf E[f(ω,x)f(ω,y)]")


def test_sderf_variance_not_above_oprf():
    """OPRF is SDERF with isotropic A, so SDERF's optimal mean log second moment is ≤ OPRF's."""
    x, y = _anisotropic(29)
    z = _brute_pairs(x, y)
    lam, q = torch.linalg.eigh(z.T @ z / z.shape[0])
    a = optimal_a(lam)  # eigenvalues of SDERF's A (1-D OPRF problems in P's eigenbasis)
    xs, ys = x[:, None, :], y[None, :, :]
    bz = (xs + ys) @ q  # Qᵀz
    sderf = (
        (torch.log1p(-4 * a) - 0.5 * torch.log1p(-8 * a)).sum()
        + 2 * ((1 - 4 * a) / (1 - 8 * a) * bz.square()).sum(-1)
        - (xs * xs).sum(-1)
        - (ys * ys).sum(-1)
    )
    oprf = gerf_log_second_moment(xs, ys, optimal_a(query_key_rho(x, y)))
    assert sderf.mean() <= oprf.mean() + 1e-12
    assert sderf.mean() < oprf.mean() - 1e-3  # strictly better on anisotropic data


# -- SADERF -----------------------------------------------------------------------------------
def test_saderf_psi_balances_queries_and_keys():
    """Ψx and Ψ⁻¹y have equal mean squares per coordinate (Google's inverted Ψ does not)."""
    x, y = _data((9,), (9,), 6, seed=30)
    x, y = 4 * x, 0.25 * y * torch.linspace(0.5, 2, 6, dtype=F64)
    psi = saderf_psi(x, y)
    torch.testing.assert_close((x * psi).square().mean(0), (y / psi).square().mean(0))
    assert (psi < 1).all()  # large queries are shrunk, small keys enlarged
    rho = query_key_rho(x * psi, y / psi)
    assert rho < query_key_rho(x, y) and rho < query_key_rho(x / psi, y * psi)
    # Ψ minimizes ρ over diagonal rescalings (check against random perturbations)
    for k in range(20):
        s = psi * torch.exp(0.3 * torch.randn(6, generator=_gen(100 + k), dtype=F64))
        assert query_key_rho(x * s, y / s) >= rho - 1e-12


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAPS)
def test_bad_input_raises_clear_errors(name):
    fmap = FEATURE_MAPS.build(name)
    x, y = _data((2, 4), (2, 5), 8, seed=31)
    w = _w(6, 8, seed=32)
    with pytest.raises(ValueError, match="head dims differ"):
        fmap(x, y[..., :7], w)
    with pytest.raises(ValueError, match="w must be"):
        fmap(x, y, w[:, :7])
    with pytest.raises(ValueError, match="x_mask must have shape"):
        fmap(x, y, w, x_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="y_mask must have shape"):
        fmap(x, y, w, y_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="y_mask must be a bool tensor"):
        fmap(x, y, w, y_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"\(\.\.\., L, d\)"):
        fmap(x[0, 0], y, w)
