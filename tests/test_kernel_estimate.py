"""``kernel_estimate`` and the statistics of every sampler × feature map (float64, fixed seeds).

Data seeds (≥ 10⁶) never coincide with the W seeds (0 … N−1): a W drawn from the same stream as
x would be correlated with it.
"""

from __future__ import annotations

import math

import pytest
import torch
from stats import assert_mean_close, paired_z, two_sample_z, variance_and_se

from spectra.features import kernel_estimate, seeded_generator
from spectra.features.maps.gerf import gerf_log_second_moment
from spectra.features.maps.oprf import optimal_a
from spectra.features.maps.saderf import saderf_psi
from spectra.features.maps.stats import query_key_rho
from spectra.registry import FEATURE_MAPS, SAMPLERS, UnknownComponentError

F64 = torch.float64
SAMPLER_NAMES = SAMPLERS.names()
MAP_NAMES = FEATURE_MAPS.names()
# rows exactly N(0, I) (unbiased estimators) vs only asymptotically (sorf, mm, fastfood, …)
GAUSSIAN_SAMPLERS = [
    n for n in SAMPLER_NAMES if SAMPLERS.build(n, dim=16, num_features=16).marginally_gaussian
]
STRUCTURED_SAMPLERS = [n for n in SAMPLER_NAMES if n not in GAUSSIAN_SAMPLERS]


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return v / v.norm(dim=-1, keepdim=True)


def _pairs(d: int, seed: int, x_norm=1.0, y_norm=1.0, n: int = 4):
    """n queries and n keys of the given norms (floats or (n,) tensors); y_0 has x_0's direction
    (the largest kernel value)."""
    x_norm, y_norm = torch.as_tensor(x_norm, dtype=F64), torch.as_tensor(y_norm, dtype=F64)
    ux, uy = _unit(n, d, seed), _unit(n, d, seed + 1)
    uy[0] = ux[0]
    return ux * x_norm.reshape(-1, 1), uy * y_norm.reshape(-1, 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _estimates(x, y, sampler, feature_map, m, n_seeds, map_options=None) -> torch.Tensor:
    """kernel_estimate(x, y, seed=s) for s = 0 … n_seeds − 1, shape (n_seeds, Lx, Ly).

    Same computation, vectorized: W_s is drawn exactly as kernel_estimate draws it, and the
    feature map runs once on the stacked (n_seeds, m, d) weights (maps broadcast leading dims of
    w; the first seeds are checked against kernel_estimate itself).
    """
    d = x.shape[-1]
    ws = []
    for s in range(n_seeds):
        draw = SAMPLERS.build(sampler, dim=d, num_features=m, seed=s)
        with torch.no_grad():
            ws.append(draw.sample(seeded_generator(s), dtype=x.dtype))
    phi_x, phi_y = FEATURE_MAPS.build(feature_map, **(map_options or {}))(
        x, y, torch.stack(ws), stabilize=False
    )
    est = phi_x @ phi_y.transpose(-1, -2)
    for s in range(min(2, n_seeds)):
        one = kernel_estimate(x, y, sampler=sampler, feature_map=feature_map, num_features=m,
                              seed=s, feature_map_options=map_options)
        torch.testing.assert_close(est[s], one, rtol=1e-10, atol=1e-300)
    return est


def _marginally_gaussian(name: str, dim: int, m: int) -> bool:
    return bool(SAMPLERS.build(name, dim=dim, num_features=m).marginally_gaussian)


# -- bias -------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature_map", MAP_NAMES)
@pytest.mark.parametrize("sampler", GAUSSIAN_SAMPLERS)
def test_unbiased_for_marginally_gaussian_samplers(sampler, feature_map):
    """mean over 300 seeds (m = 32, d = 16, ‖x‖, ‖y‖ ∈ [0.7, 1.2]) within 4 SE of exp(xᵀy)."""
    d, m = 16, 32
    assert _marginally_gaussian(sampler, d, m)
    norms = torch.tensor([1.2, 0.7, 1.0, 0.85])
    x, y = _pairs(d, seed=1_000_003, x_norm=norms, y_norm=norms.flip(0))
    est = _estimates(x, y, sampler, feature_map, m, 300)
    assert_mean_close(est, (x @ y.T).exp(), what=f"{sampler} × {feature_map}")


# (sampler, map) pairs whose bias does not vanish with d: a fixed A ≠ 0 weights ‖ω‖², and these
# samplers do not give ‖ω‖² the χ²_d law. For sorf (‖ω‖ = √d exactly) the mean is about
# exp(xᵀy)·(1−4A)^(d/2)·e^(2Ad)·e^(−2A‖x+y‖²) ≈ exp(−2A²d)·…, so the bias grows with d.
# Measured with A = −0.1, m = d, 1000 seeds: sorf −75 % at d = 64 (30 % at 16); mm 52 % at 64
# (16 % at 16). Data-dependent maps are not affected at these norms because A* = O(ρ) = O(1/d).
KNOWN_BIASED = {
    ("sorf", "gerf"): "‖ω‖ = √d exactly: fixed-A GERF keeps a factor ≈ exp(−2A²d)",
    ("mm", "gerf"): "whitened rows: ‖ω‖² is not χ²_d; fixed-A GERF is biased, growing with d",
    # The plugin map poisrf (Gaussian copula ω = F⁻¹_Pois(Φ(W))) needs continuous N(0, 1)
    # entries; gq's entries are discrete. Measured (1000 seeds, m = d): 46 % at d = 16, 43 % at 64.
    ("gq", "poisrf"): "discrete Gauss–Hermite entries: Φ(W) is not uniform, so ω is not Poisson",
}
# Samplers biased with every map, by design (measured worst relative bias, 1000 seeds, m = d):
# sgq (signs of the Smolyak weights dropped, rows nearly 0): posrf −85 % / −86 % at d = 16 / 64,
# trig +222 % / +219 %, oprf +136 % / +200 %, gerf +509 % / ×1.75e4 (see spectra/…/sgq.py).
BIASED_SAMPLERS = {
    "sgq": "sparse-grid rows drawn ∝ |weight| with the signs dropped: E‖ω‖² ≈ L/2, not d",
}


@pytest.mark.parametrize("feature_map", MAP_NAMES)
@pytest.mark.parametrize("sampler", STRUCTURED_SAMPLERS)
def test_bias_of_structured_samplers_shrinks_with_d(sampler, feature_map, request):
    """Samplers whose rows are only asymptotically N(0, I) (sorf, mm, fastfood, …).

    Measured relative bias |mean − exact| / exact with kernel_estimate over seeds 0 … 999,
    m = d, float64, 4 × 4 pairs of unit vectors with y_0 = x_0; worst pair (always y = x,
    ‖x + y‖ = 2):

    ========== ======= ======= ====== ======= ====== ======
    d = 16      posrf   hyperb  trig   oprf    sderf  saderf
    ========== ======= ======= ====== ======= ====== ======
    sorf        15.2 %  16.6 %  20.3 % 8.8 %   5.5 %  7.0 %
    mm          11.4 %  10.0 %  8.1 %  4.5 %   4.5 %  3.3 %
    fastfood    8.2 %   4.6 %   5.8 %  3.7 %   2.2 %  3.5 %  (none significant, |z| ≤ 3)
    ========== ======= ======= ====== ======= ====== ======

    At d = 64: sorf 7.9 / 5.8 / 2.6 / 2.8 / 1.4 / 2.9 %, mm 2.1 / 2.7 / 1.6 / 2.2 / 1.2 / 2.4 %,
    fastfood ≤ 5.4 % (not significant). gerf (A = −0.1): see ``KNOWN_BIASED``. SORF's bias is
    O(‖z‖/√d) (Yu et al. 2016, arXiv 1610.09072, Thm. 5), so the bound tested is 1/√d (+ 4 SE):
    25 % at d = 16, 12.5 % at d = 64.

    gq and rom (1000 seeds, same protocol, eight maps incl. the plugin's poisrf): gq ≤ 4.0 % at
    d = 16 and ≤ 3.7 % at 64, none significant (|z| ≤ 2.4; its exact bias at these norms is
    < 1e-8, ``gq_mgf_relative_bias``) except poisrf (``KNOWN_BIASED``); rom ≤ 6.1 % / 4.2 %,
    |z| ≤ 3.2 except poisrf at d = 16 (9.4 %, z = 3.7). sgq: ``BIASED_SAMPLERS``.
    """
    reason = KNOWN_BIASED.get((sampler, feature_map)) or BIASED_SAMPLERS.get(sampler)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    for d, n_seeds in ((16, 300), (64, 200)):
        x, y = _pairs(d, seed=2_000_003)
        exact = (x @ y.T).exp()
        est = _estimates(x, y, sampler, feature_map, d, n_seeds)
        mean, se = est.mean(0), est.std(0) / math.sqrt(n_seeds)
        bound = exact / math.sqrt(d) + 4 * se
        worst = ((mean - exact).abs() / exact).max().item()
        assert ((mean - exact).abs() <= bound).all(), f"d={d}: relative bias {worst:.3f}"


# -- variance ---------------------------------------------------------------------------------
def _rel_sq_err(est: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per-seed mean over pairs of ((est − exact)/exact)², shape (N,)."""
    return ((est - exact) / exact).square().flatten(1).mean(1)


def test_orthogonal_beats_gaussian_posrf():
    """ORF lowers the MSE of FAVOR+ (Performer, arXiv 2009.14794, Thm. 2), m = d = 16.

    Norms 0.6 keep the estimator's tails light enough for a stable comparison; measured MSE
    ratio orthogonal/gaussian ≈ 0.8 (z ≈ 19 at 4000 seeds, 8 × 8 pairs of another draw).
    """
    d = 16
    x, y = _pairs(d, seed=3_000_003, x_norm=0.6, y_norm=0.6, n=8)
    exact = (x @ y.T).exp()
    n = 6000
    gauss = _rel_sq_err(_estimates(x, y, "gaussian", "posrf", d, n), exact)
    orth = _rel_sq_err(_estimates(x, y, "orthogonal", "posrf", d, n), exact)
    assert orth.mean() < 0.92 * gauss.mean()
    assert two_sample_z(gauss, orth) > 4


def test_oprf_beats_posrf_with_iid_features():
    """OPRF's A* lowers the MSE of positive features (FAVOR++, arXiv 2205.15317), ‖x‖ = ‖y‖ = 1,
    m = d = 16, iid Gaussian ω; the same seed gives both maps the same W (paired comparison)."""
    d = 16
    x, y = _pairs(d, seed=4_000_003, n=8)
    exact = (x @ y.T).exp()
    posrf = _rel_sq_err(_estimates(x, y, "gaussian", "posrf", d, 3000), exact)
    oprf = _rel_sq_err(_estimates(x, y, "gaussian", "oprf", d, 3000), exact)
    assert oprf.mean() < 0.9 * posrf.mean()
    assert paired_z(posrf, oprf) > 4


def _closed_form_rel_var(x, y, a, m):
    """Var/exact² of the m-feature iid GERF estimate from the closed-form second moment."""
    exact = (x @ y.T).exp()
    second = gerf_log_second_moment(x[:, None, :], y[None, :, :], a).exp()
    return (second - exact.square()) / m / exact.square()


def test_saderf_far_below_oprf_for_unbalanced_scales():
    """‖x‖ = 4, ‖y‖ = 0.25 (d = 16, m = 16): SADERF rebalances to ‖Ψx‖ ≈ ‖Ψ⁻¹y‖ ≈ 1.

    Closed form (iid ω): OPRF's mean relative variance ≈ 1.3·10², SADERF's ≈ 0.3, Google's
    inverted Ψ ≈ 2·10¹⁰. Monte Carlo (2000 seeds) agrees with SADERF's closed form.
    """
    d, m = 16, 16
    x, y = _pairs(d, seed=5_000_003, x_norm=4.0, y_norm=0.25)
    exact = (x @ y.T).exp()
    psi = saderf_psi(x, y)
    cf_oprf = _closed_form_rel_var(x, y, optimal_a(query_key_rho(x, y)), m)
    cf_saderf = _closed_form_rel_var(
        x * psi, y / psi, optimal_a(query_key_rho(x * psi, y / psi)), m
    )
    cf_inverted = _closed_form_rel_var(
        x / psi, y * psi, optimal_a(query_key_rho(x / psi, y * psi)), m
    )
    assert (cf_saderf < 0.01 * cf_oprf).all()
    assert (cf_inverted > cf_oprf).all()
    n = 2000
    est_s = _estimates(x, y, "gaussian", "saderf", m, n)
    est_o = _estimates(x, y, "gaussian", "oprf", m, n)
    mse_s, mse_o = _rel_sq_err(est_s, exact).mean(), _rel_sq_err(est_o, exact).mean()
    assert mse_s < 0.05 * mse_o  # OPRF's heavy tails make its MC MSE an underestimate
    var, se = variance_and_se(est_s / exact)
    assert ((var - cf_saderf).abs() <= 4 * se).all()


@pytest.mark.parametrize(("feature_map", "options", "a"), [
    ("posrf", {}, 0.0),
    ("gerf", {}, -0.1),
    ("gerf", {"A": 0.02}, 0.02),
])  # fmt: skip
def test_variance_matches_favorpp_closed_form(feature_map, options, a):
    """Empirical Var of the iid estimate = ((1−4A)^d (1−8A)^(−d/2)
    exp(2(1−4A)‖x+y‖²/(1−8A) − ‖x‖² − ‖y‖²) − exp(2xᵀy)) / m (FAVOR++, arXiv 2205.15317),
    each pair within 4 SE of the sample variance (SE from the sample 4th moment)."""
    d, m, n = 16, 4, 20000
    x, y = _pairs(d, seed=6_000_003, x_norm=0.6, y_norm=0.5)
    exact = (x @ y.T).exp()
    est = _estimates(x, y, "gaussian", feature_map, m, n, options) / exact
    var, se = variance_and_se(est)
    cf = _closed_form_rel_var(x, y, a, m)
    assert ((var - cf).abs() <= 4 * se).all(), ((var - cf) / se).abs().max()
    assert (se < 0.1 * cf).all()  # the check has power


# -- API --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_equals_plain_reference_for_every_sampler(sampler):
    """kernel_estimate = φ(x)ᵀφ(y) (unstabilized) with W from seeded_generator(seed); float64
    in → float64 out, float32 → float32; seeds give independent draws, a seed repeats."""
    d, m, seed = 8, 12, 7
    x, y = _pairs(d, seed=7_000_003)
    draw = SAMPLERS.build(sampler, dim=d, num_features=m, seed=seed)
    w = draw.sample(seeded_generator(seed), dtype=F64).detach()
    fmap = FEATURE_MAPS.build("posrf")
    px, py = fmap(x, y, w, stabilize=False)
    got = kernel_estimate(x, y, sampler=sampler, feature_map="posrf", num_features=m, seed=seed)
    assert got.dtype == F64 and got.shape == (4, 4)
    torch.testing.assert_close(got, px @ py.T, rtol=1e-12, atol=0)
    again = kernel_estimate(x, y, sampler=sampler, feature_map="posrf", num_features=m, seed=seed)
    other = kernel_estimate(x, y, sampler=sampler, feature_map="posrf", num_features=m, seed=8)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert not torch.allclose(other, got)
    got32 = kernel_estimate(
        x.float(), y.float(), sampler=sampler, feature_map="posrf", num_features=m, seed=seed
    )
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, got.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("feature_map", MAP_NAMES)
def test_batched_shapes_and_true_estimate(feature_map):
    """(B, H, L, d) inputs give (B, H, Lx, Ly); the estimate is the unstabilized product."""
    x = torch.randn(2, 3, 4, 8, generator=torch.Generator().manual_seed(8_000_003), dtype=F64)
    y = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(8_000_004), dtype=F64)
    x, y = x * 0.3, y * 0.3
    got = kernel_estimate(x, y, sampler="gaussian", feature_map=feature_map, num_features=6)
    assert got.shape == (2, 3, 4, 5) and got.dtype == F64
    w = SAMPLERS.build("gaussian", dim=8, num_features=6).sample(seeded_generator(0), dtype=F64)
    px, py = FEATURE_MAPS.build(feature_map)(x, y, w, stabilize=False)
    torch.testing.assert_close(got, px @ py.transpose(-1, -2), rtol=1e-12, atol=0)


def test_options_go_to_their_component():
    x, y = _pairs(8, seed=9_000_003)
    common = {"sampler": "orthogonal", "num_features": 8, "seed": 3}
    a0 = kernel_estimate(x, y, feature_map="gerf", feature_map_options={"A": 0.0}, **common)
    torch.testing.assert_close(a0, kernel_estimate(x, y, feature_map="posrf", **common))
    sq = kernel_estimate(x, y, feature_map="gerf", feature_map_options={"A": 0.0},
                         sampler_options={"scale": "sqrt_d"}, **common)
    assert not torch.allclose(sq, a0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'bogus'.*allowed: .*A"):
        kernel_estimate(x, y, feature_map="gerf", feature_map_options={"bogus": 1}, **common)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'A'.*allowed: .*scale"):
        kernel_estimate(x, y, feature_map="gerf", sampler_options={"A": 0.0}, **common)
    with pytest.raises(ValueError, match="dim is set by kernel_estimate"):
        kernel_estimate(x, y, feature_map="gerf", sampler_options={"dim": 8}, **common)
    with pytest.raises(ValueError, match="A must be < 1/4"):
        kernel_estimate(x, y, feature_map="gerf", feature_map_options={"A": 0.25}, **common)


def test_learnable_samplers_get_independent_draws_per_seed():
    x, y = _pairs(8, seed=9_100_003)
    for name in SAMPLER_NAMES:  # every sampler takes seed (the base contract)
        a = kernel_estimate(x, y, sampler=name, feature_map="posrf", num_features=8, seed=1)
        b = kernel_estimate(x, y, sampler=name, feature_map="posrf", num_features=8, seed=2)
        assert not torch.allclose(a, b), name


def test_bad_input():
    x, y = _pairs(8, seed=9_200_003)
    with pytest.raises(UnknownComponentError, match="gaussian"):
        kernel_estimate(x, y, sampler="gausian", feature_map="posrf", num_features=4)
    with pytest.raises(UnknownComponentError, match="posrf"):
        kernel_estimate(x, y, sampler="gaussian", feature_map="posrff", num_features=4)
    with pytest.raises(ValueError, match="same head dim"):
        kernel_estimate(x, y[:, :7], sampler="gaussian", feature_map="posrf", num_features=4)
    with pytest.raises(ValueError, match="num_features"):
        kernel_estimate(x, y, sampler="gaussian", feature_map="posrf", num_features=0)
