"""The ``poisrf`` feature map (Poisson random features, DIRF, arXiv 2205.15317).

Checks: the Poisson quantile against a plain loop; the Gaussian copula gives Poisson(λ) counts;
the fast log-domain features (values and gradients) against a plain product reference;
unbiasedness of the kernel estimate on every marginally Gaussian sampler (``halton`` included);
the closed-form variance; the zero-variance case of the optimal rate; masks, stabilizer
invariance, zeros in the inputs, and bad options. The core's generic feature-map tests cover it
too (they are parametrized over ``FEATURE_MAPS.names()``). Fixed seeds, 4-SE bounds.
"""

from __future__ import annotations

import math

import pytest
import torch
from spectra_halton.poisrf import (
    MIN_RATE,
    PoissonRandomFeatures,
    optimal_rate,
    poisrf_log_second_moment,
    poisson_icdf,
)

from spectra.features import FeatureMap, kernel_estimate, seeded_generator
from spectra.registry import FEATURE_MAPS, SAMPLERS

F64 = torch.float64


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=seeded_generator(seed), dtype=F64)


def test_registered_by_the_plugin() -> None:
    entry = FEATURE_MAPS.entry("poisrf")
    assert entry.obj is PoissonRandomFeatures and entry.provider == "spectra_halton"
    fmap = FEATURE_MAPS.build("poisrf")
    assert isinstance(fmap, FeatureMap)
    assert fmap.positive is False and fmap.data_dependent is True
    assert FEATURE_MAPS.build("poisrf", lam=0.5).data_dependent is False
    assert fmap.output_dim(17) == 17


# -- Poisson quantile ---------------------------------------------------------------------------
def plain_quantile(u: float, lam: float) -> int:
    k, p = 0, math.exp(-lam)
    cdf = p
    while cdf < u:
        k += 1
        p *= lam / k
        cdf += p
    return k


@pytest.mark.parametrize("lam", [0.05, 0.5, 3.0, 20.0])
def test_poisson_icdf_matches_plain_loop(lam: float) -> None:
    u = torch.linspace(0.0005, 0.9995, 397, dtype=F64)
    fast = poisson_icdf(u, torch.tensor(lam, dtype=F64))
    ref = torch.tensor([plain_quantile(float(v), lam) for v in u], dtype=F64)
    assert torch.equal(fast, ref)


def plain_survival(k: int, lam: float) -> float:
    """P(Pois(λ) > k) = Σ_{j>k} e^{−λ} λ^j / j!, summed in log space (no underflow issue)."""
    terms = (math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in range(k + 1, k + 80))
    return sum(terms)


@pytest.mark.parametrize("w", [-9.0, -5.0, 5.0, 9.0, 12.0])
def test_copula_quantile_in_the_far_tails(w: float) -> None:
    """ω = F⁻¹(Φ(w)) for |w| up to 12 (Φ(−12) ≈ 1.8e-33): the exact quantile, computed from
    1 − Φ(w) on the upper side (u itself rounds to 1 there)."""
    lam = 0.3
    omega = PoissonRandomFeatures().counts(torch.tensor([[w]], dtype=F64),
                                           torch.tensor([lam], dtype=F64)).item()
    upper = 0.5 * math.erfc(w / math.sqrt(2.0))  # 1 − Φ(w)
    expected = next(k for k in range(200) if plain_survival(k, lam) <= upper)
    assert omega == expected
    if w >= 9:
        assert omega >= 13  # P(X > 12) ≈ 1.9e-17 > 1 − Φ(9) ≈ 1.1e-19


def test_copula_counts_are_poisson() -> None:
    """ω = F⁻¹(Φ(W)) with Gaussian W: mean λ, variance λ and P(ω = 0) = e^{−λ}, 4 SE."""
    lam = torch.tensor([0.1, 0.7, 2.5], dtype=F64)
    w = randn(20000, 3, seed=1)
    omega = PoissonRandomFeatures().counts(w, lam)
    n = omega.shape[0]
    for l, rate in enumerate(lam.tolist()):
        col = omega[:, l]
        assert abs(col.mean().item() - rate) <= 4 * math.sqrt(rate / n)
        # Var of (ω − λ)² for Poisson: μ4 − σ⁴ = λ + 3λ² − λ² = λ + 2λ²
        assert abs((col - rate).square().mean().item() - rate) <= 4 * math.sqrt(
            (rate + 2 * rate**2) / n
        )
        p0 = math.exp(-rate)
        assert abs((col == 0).double().mean().item() - p0) <= 4 * math.sqrt(p0 * (1 - p0) / n)


# -- fast path vs plain reference ---------------------------------------------------------------
def plain_features(t: torch.Tensor, omega: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """φ_r(t) = m^{-1/2} Π_l e^{λ_l/2} (t_l / √λ_l)^{ω_rl}, materializing (…, L, m, d)."""
    m = omega.shape[-2]
    lam = lam[..., None, None, :]  # (…, 1, 1, d)
    base = t[..., :, None, :] / lam.sqrt()  # (…, L, 1, d)
    factors = (0.5 * lam).exp() * torch.pow(base, omega[..., None, :, :])
    return factors.prod(-1) / math.sqrt(m)


@pytest.mark.parametrize("lam", [None, 0.4])
def test_fast_features_match_plain_reference_with_gradients(lam: float | None) -> None:
    fmap = PoissonRandomFeatures(lam=lam)
    x = randn(2, 5, 4, seed=2, scale=0.7).requires_grad_()
    y = randn(2, 6, 4, seed=3, scale=0.7).requires_grad_()
    w = randn(9, 4, seed=4)
    phi_x, phi_y = fmap(x, y, w, stabilize=False)
    rates = fmap.rates(x, y)
    omega = fmap.counts(w, rates)
    assert omega.shape == ((2, 9, 4) if lam is None else (9, 4))
    assert omega.max() >= 2  # powers above 1 are exercised
    ref_x, ref_y = plain_features(x, omega, rates), plain_features(y, omega, rates)
    torch.testing.assert_close(phi_x, ref_x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(phi_y, ref_y, rtol=1e-12, atol=1e-14)
    assert (phi_x < 0).any()  # not a positive map
    gx, gy = randn(*phi_x.shape, seed=5), randn(*phi_y.shape, seed=6)
    grads = torch.autograd.grad((phi_x * gx).sum() + (phi_y * gy).sum(), (x, y))
    ref_grads = torch.autograd.grad((ref_x * gx).sum() + (ref_y * gy).sum(), (x, y))
    for fast, ref in zip(grads, ref_grads):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)


def test_exact_zeros_in_inputs() -> None:
    """0^0 = 1 and 0^k = 0 exactly; gradients stay finite."""
    fmap = PoissonRandomFeatures(lam=1.0)
    x = randn(4, 3, seed=7)
    x[0, 1] = 0.0
    x[2] = 0.0
    x.requires_grad_()
    w = randn(32, 3, seed=8)
    phi_x, _ = fmap(x, x.detach(), w, stabilize=False)
    omega = fmap.counts(w, fmap.rates(x, x))
    ref = plain_features(x.detach(), omega, fmap.rates(x, x))
    torch.testing.assert_close(phi_x.detach(), ref, rtol=1e-12, atol=1e-300)
    (grad,) = torch.autograd.grad(phi_x.sum(), x)
    assert torch.isfinite(grad).all()


def test_weights_get_no_gradient() -> None:
    w = randn(8, 3, seed=9).requires_grad_()
    phi_x, phi_y = PoissonRandomFeatures()(randn(4, 3, seed=1), randn(5, 3, seed=2), w)
    assert not phi_x.requires_grad and not phi_y.requires_grad


# -- unbiasedness and variance ------------------------------------------------------------------
UNBIASED_SAMPLERS = ["gaussian", "orthogonal", "qmc", "halton"]


@pytest.mark.parametrize("lam", [None, 0.3])
@pytest.mark.parametrize("sampler", UNBIASED_SAMPLERS)
def test_kernel_estimate_unbiased(sampler: str, lam: float | None) -> None:
    """Mean over independent seeds within 4 SE of exp(x yᵀ) for every query–key pair."""
    assert SAMPLERS.build(sampler, dim=6, num_features=4).marginally_gaussian
    x, y = randn(3, 6, seed=10, scale=0.45), randn(4, 6, seed=11, scale=0.45)
    exact = (x @ y.T).exp()
    est = torch.stack([
        kernel_estimate(x, y, sampler=sampler, feature_map="poisrf", num_features=16, seed=s,
                        feature_map_options={"lam": lam})
        for s in range(300)
    ])
    se = est.std(0) / math.sqrt(est.shape[0])
    assert ((est.mean(0) - exact).abs() <= 4 * se).all(), (est.mean(0) / exact, se / exact)
    assert est.dtype == F64


def test_variance_matches_closed_form() -> None:
    """iid features (Gaussian rows, fixed λ): mean of m·φ_r(x)φ_r(y) → exp(xᵀy) and mean of its
    square → exp(Σ_l λ + x_l²y_l²/λ), each within 4 SE computed from the exact moments
    (4th moment per coordinate: exp(3λ + (ab)⁴/λ³))."""
    lam, m = 0.6, 40000
    x, y = randn(5, seed=12, scale=0.5), randn(5, seed=13, scale=0.5)
    fmap = PoissonRandomFeatures(lam=lam)
    w = randn(m, 5, seed=14)
    phi_x, phi_y = fmap(x[None], y[None], w, stabilize=False)
    products = m * (phi_x * phi_y)[0]  # one unbiased estimate per feature
    second = poisrf_log_second_moment(x, y, lam).exp().item()
    fourth = (3 * lam + (x * y).pow(4) / lam**3).sum().exp().item()
    mean_exact = (x @ y).exp().item()
    assert abs(products.mean().item() - mean_exact) <= 4 * math.sqrt(
        (second - mean_exact**2) / m
    )
    assert abs(products.square().mean().item() - second) <= 4 * math.sqrt((fourth - second**2) / m)


def test_optimal_rate_minimizes_mean_log_second_moment() -> None:
    x, y = randn(7, 4, seed=15, scale=0.6), randn(9, 4, seed=16, scale=0.6)
    best = optimal_rate(x, y)
    torch.testing.assert_close(best, ((x**2).mean(0) * (y**2).mean(0)).sqrt())

    def objective(lam: torch.Tensor) -> float:
        return poisrf_log_second_moment(x[:, None], y[None], lam).mean().item()

    for factor in (0.8, 0.95, 1.05, 1.25):
        assert objective(best) < objective(best * factor)


def test_optimal_rate_single_token_has_zero_variance() -> None:
    """x = y, one token: λ_l = x_l², so every feature product equals exp(‖x‖²) exactly."""
    x = randn(1, 6, seed=17, scale=0.8)
    assert (x.square() > MIN_RATE).all()
    for seed in range(3):
        est = kernel_estimate(x, x, sampler="halton", feature_map="poisrf", num_features=8,
                              seed=seed)
        torch.testing.assert_close(est, (x @ x.T).exp(), rtol=1e-12, atol=0)


# -- masks, stabilizer, options -----------------------------------------------------------------
def test_masks_exclude_padding_everywhere() -> None:
    """Padded rows are exactly 0 and do not influence λ or the key max: features of the valid
    rows equal those computed without the padding (stabilized and not)."""
    fmap = PoissonRandomFeatures()
    x, y = randn(2, 5, 4, seed=18, scale=0.6), randn(2, 7, 4, seed=19, scale=0.6)
    x_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    y_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    y_padded = y.clone()
    y_padded[~y_mask] = 50.0  # garbage in padding must not matter
    w = randn(12, 4, seed=20)
    for stabilize in (False, True):
        phi_x, phi_y = fmap(x, y_padded, w, x_mask, y_mask, stabilize=stabilize)
        assert (phi_x[~x_mask] == 0).all() and (phi_y[~y_mask] == 0).all()
        for b in range(2):
            vx, vy = x[b][x_mask[b]], y[b][y_mask[b]]
            ref_x, ref_y = fmap(vx, vy, w, stabilize=stabilize)
            torch.testing.assert_close(phi_x[b][x_mask[b]], ref_x, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(phi_y[b][y_mask[b]], ref_y, rtol=1e-12, atol=1e-14)


def test_stabilizer_leaves_normalized_attention_unchanged() -> None:
    fmap = PoissonRandomFeatures()
    x, y = randn(2, 6, 4, seed=21, scale=1.5), randn(2, 8, 4, seed=22, scale=1.5)
    v = randn(2, 8, 3, seed=23)
    w = randn(64, 4, seed=24)

    def attention(stabilize: bool) -> torch.Tensor:
        phi_x, phi_y = fmap(x, y, w, stabilize=stabilize)
        return (phi_x @ (phi_y.transpose(-1, -2) @ v)) / (phi_x @ phi_y.sum(-2)[..., None])

    plain, stable = attention(False), attention(True)
    torch.testing.assert_close(stable, plain, rtol=1e-9, atol=1e-12)
    phi_x, phi_y = fmap(x, y, w)
    assert phi_x.abs().amax(-1).allclose(torch.ones(2, 6, dtype=F64))  # per-row max → 1
    assert phi_y.abs().amax((-2, -1)).allclose(torch.ones(2, dtype=F64))  # one max per batch


def test_float32_inputs_stay_float32_and_finite() -> None:
    fmap = PoissonRandomFeatures()
    x, y = randn(2, 64, 8, seed=25, scale=2.0).float(), randn(2, 64, 8, seed=26, scale=2.0).float()
    phi_x, phi_y = fmap(x, y, randn(32, 8, seed=27).float())
    assert phi_x.dtype == phi_y.dtype == torch.float32
    assert torch.isfinite(phi_x).all() and torch.isfinite(phi_y).all()


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "0.5", True])
def test_bad_rate_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="lam must be"):
        FEATURE_MAPS.build("poisrf", lam=bad)
