"""``FeatureMap.iid_log_second_moment``: every closed form against a Monte-Carlo estimate of
E[K̂²] over iid Gaussian draws of W (fixed seed), parametrized over the registry."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.features import kernel_estimate
from spectra.features.maps.gerf import gerf_log_second_moment, gerf_pairs_log_second_moment
from spectra.registry import FEATURE_MAPS

D, LX, LY, M, TRIALS = 8, 6, 5, 4, 400


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two input sets (…=2): balanced norms, and queries ×1.5 / keys ÷1.5 (SADERF's Ψ ≠ 1)."""
    gen = torch.Generator().manual_seed(2**40 + 11)  # disjoint from the W seeds 0…TRIALS−1
    x = torch.randn(LX, D, generator=gen, dtype=torch.float64) * 0.3 / math.sqrt(D)
    y = torch.randn(LY, D, generator=gen, dtype=torch.float64) * 0.3 / math.sqrt(D)
    return torch.stack([x, 1.5 * x]), torch.stack([y, y / 1.5])


@pytest.mark.parametrize("name", FEATURE_MAPS.names())
def test_closed_form_second_moment_matches_monte_carlo(name: str) -> None:
    """With m iid rows E[(K̂_ij − K_ij)²] = (E[g²]_ij − K_ij²)/m. The statistic
    S = mean_ij (K̂_ij − K_ij)² of one draw is averaged over TRIALS draws; its mean must lie
    within 4 standard errors (estimated from the draws) of the closed form, and the standard
    error must be below 1/8 of the value, so that a closed form off by a factor 2 is > 4 SE off.
    Small norms keep the tails light, so the standard error is reliable."""
    x, y = _inputs()
    log_m2 = FEATURE_MAPS.build(name).iid_log_second_moment(x, y)
    if log_m2 is None:
        pytest.skip(f"{name}: no closed form (iid_log_second_moment returns None)")
    assert log_m2.shape == (2, LX, LY) and log_m2.dtype == torch.float64
    k = (x @ y.mT).exp()
    expected = ((log_m2.exp() - k.square()) / M).mean(dim=(-2, -1))  # (2,)
    draws = torch.stack(
        [
            (
                kernel_estimate(x, y, sampler="gaussian", feature_map=name, num_features=M, seed=t)
                - k
            )
            .square()
            .mean(dim=(-2, -1))
            for t in range(TRIALS)
        ]
    )  # (TRIALS, 2)
    se = draws.std(dim=0) / math.sqrt(TRIALS)
    z = (draws.mean(dim=0) - expected) / se
    assert z.abs().max() < 4.0, (name, z, expected)
    assert (se < 0.125 * expected).all(), (name, se, expected)


def test_builtin_maps_all_have_a_closed_form() -> None:
    x, y = _inputs()
    builtin = [n for n in FEATURE_MAPS.names() if FEATURE_MAPS.entry(n).provider == "spectra"]
    assert {"posrf", "gerf", "oprf", "saderf", "sderf", "hyperbolic", "trig"} <= set(builtin)
    for name in builtin:
        assert FEATURE_MAPS.build(name).iid_log_second_moment(x, y) is not None, name


def test_gerf_pairwise_second_moment_matches_the_elementwise_formula() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64) * 0.4
    y = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64) * 0.4
    a = torch.tensor([-0.05, 0.07], dtype=torch.float64)  # one A per leading index
    pairs = gerf_pairs_log_second_moment(x, y, a)
    want = gerf_log_second_moment(x[:, :, None], y[:, None], a[:, None, None])
    torch.testing.assert_close(pairs, want)
    assert torch.isinf(gerf_pairs_log_second_moment(x, y, 0.2)).all()  # A ≥ 1/8
