"""The ``halton`` sampler: registration, exact Halton digits, exact uniformity of each randomized
point, low discrepancy, and the large-base decorrelation that digit permutation buys.

The generic sampler tests of the core (shape, dtype, seeds, independence, N(0, 1) marginals, bad
input) run over ``halton`` too, because they are parametrized over ``SAMPLERS.names()``.
Statistical checks use fixed seeds and 4-standard-error bounds.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from spectra_halton.halton import (
    HaltonSampler,
    first_primes,
    num_digits,
    radical_inverse_digits,
)

from spectra.features import Sampler, seeded_generator
from spectra.registry import SAMPLERS

F64 = torch.float64


def test_registered_by_the_plugin() -> None:
    assert "halton" in SAMPLERS.names()
    entry = SAMPLERS.entry("halton")
    assert entry.obj is HaltonSampler
    assert entry.provider == "spectra_halton"
    assert "Halton" in entry.description
    sampler = SAMPLERS.build("halton", dim=6, num_features=10)
    assert isinstance(sampler, Sampler) and sampler.marginally_gaussian


def test_first_primes() -> None:
    assert first_primes(0) == []
    assert first_primes(10) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    primes = first_primes(300)
    assert len(primes) == 300 and primes[-1] == 1987
    assert all(all(p % q for q in range(2, math.isqrt(p) + 1)) for p in primes)


def plain_radical_inverse(r: int, base: int) -> Fraction:
    """h_b(r) = Σ_k a_k b^{−k−1}, exact rational arithmetic."""
    value, scale = Fraction(0), Fraction(1, base)
    while r:
        r, digit = divmod(r, base)
        value += digit * scale
        scale /= base
    return value


@pytest.mark.parametrize("base", [2, 3, 5, 131])
def test_digits_give_the_radical_inverse(base: int) -> None:
    n = 300
    k = num_digits(base)
    assert base ** (-k) <= 2.0**-53 < base ** (-(k - 1))
    digits = radical_inverse_digits(torch.arange(n), base, k)
    weights = torch.tensor([float(base) ** -(j + 1) for j in range(k)], dtype=F64)
    fast = digits.to(F64) @ weights
    ref = torch.tensor([float(plain_radical_inverse(r, base)) for r in range(n)], dtype=F64)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-15)
    assert [plain_radical_inverse(r, 2) for r in range(4)] == [0, Fraction(1, 2), Fraction(1, 4),
                                                               Fraction(3, 4)]


def plain_permuted_points(m: int, d: int, seed: int) -> torch.Tensor:
    """Reference for ``randomization="permute"``: same random draws, Python digit loops."""
    gen = seeded_generator(seed)
    bases = first_primes(d)
    perms = []
    for base in bases:
        k = num_digits(base)
        perms.append(torch.rand(k, base, generator=gen, dtype=F64).argsort(-1).tolist())
    jitter = torch.rand(m, d, generator=gen, dtype=F64)
    out = torch.empty(m, d, dtype=F64)
    for l, base in enumerate(bases):
        k = num_digits(base)
        for r in range(m):
            rest, value = r, 0.0
            for j in range(k):
                rest, digit = divmod(rest, base)
                value += perms[l][j][digit] * float(base) ** -(j + 1)
            out[r, l] = value + jitter[r, l] * float(base) ** -k
    return out


def test_permuted_points_match_plain_reference() -> None:
    m, d = 40, 5
    fast = HaltonSampler(d, m).points(seeded_generator(3))
    torch.testing.assert_close(fast, plain_permuted_points(m, d, 3), rtol=0, atol=1e-15)


def test_shifted_points_are_rotated_halton() -> None:
    m, d = 50, 4
    sampler = HaltonSampler(d, m, randomization="shift")
    u = sampler.points(seeded_generator(2))
    shift = torch.rand(d, generator=seeded_generator(2), dtype=F64)
    plain = torch.tensor(
        [[float(plain_radical_inverse(r, b)) for b in first_primes(d)] for r in range(m)], dtype=F64
    )
    torch.testing.assert_close(u, torch.remainder(plain + shift, 1.0), rtol=0, atol=1e-15)


def test_sample_is_ndtri_of_points() -> None:
    sampler = HaltonSampler(7, 33)
    w = sampler.sample(seeded_generator(4), dtype=F64)
    torch.testing.assert_close(w, torch.special.ndtri(sampler.points(seeded_generator(4))))


@pytest.mark.parametrize("randomization", ["permute", "shift"])
def test_each_point_is_exactly_uniform(randomization: str) -> None:
    """Across independent randomizations a fixed point's coordinate has mean ½ and variance 1/12
    (4 SE, SE from the exact uniform moments), and P(u < ¼) = ¼."""
    m, d, seeds = 12, 5, 400
    sampler = HaltonSampler(d, m, randomization=randomization)
    u = torch.stack([sampler.points(seeded_generator(s)) for s in range(seeds)])  # (S, m, d)
    n = seeds
    for r, l in [(0, 0), (5, 2), (11, 4), (7, 1)]:
        col = u[:, r, l]
        assert abs(col.mean().item() - 0.5) <= 4 * math.sqrt(1 / 12 / n), (r, l)
        centred_sq = (col - 0.5).square()
        assert abs(centred_sq.mean().item() - 1 / 12) <= 4 * math.sqrt((1 / 80 - 1 / 144) / n)
        frac = (col < 0.25).double().mean().item()
        assert abs(frac - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / n)


@pytest.mark.parametrize("randomization", ["permute", "shift"])
def test_low_discrepancy_column_means(randomization: str) -> None:
    """Column means of u vary far less across randomizations than for iid points (1/(12m))."""
    m, d = 64, 4
    sampler = HaltonSampler(d, m, randomization=randomization)
    means = torch.stack([sampler.points(seeded_generator(s)).mean(0) for s in range(200)])
    ratio = means.var(0) * 12 * m  # 1 for iid uniforms
    assert (ratio < 0.2).all(), ratio


def test_permutation_decorrelates_large_bases() -> None:
    """For m < b the plain sequence is h_b(r) = r/b: the coordinates with bases 127 and 131 are
    nearly collinear, and a random shift keeps that; digit permutation removes it."""
    m, d, seeds = 64, 32, 50

    def mean_abs_corr(randomization: str) -> float:
        sampler = HaltonSampler(d, m, randomization=randomization)
        corr = [torch.corrcoef(sampler.points(seeded_generator(s))[:, -2:].T)[0, 1]
                for s in range(seeds)]
        return torch.stack(corr).abs().mean().item()

    assert mean_abs_corr("shift") > 0.4
    assert mean_abs_corr("permute") < 0.2  # ≈ E|corr| of independent columns, √(2/π)/√m ≈ 0.1


def test_generator_device_and_no_generator() -> None:
    w = HaltonSampler(3, 8).sample()
    assert w.shape == (8, 3) and torch.isfinite(w).all()


def test_bad_randomization_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown randomization 'owen'; allowed: permute, shift"):
        SAMPLERS.build("halton", dim=4, num_features=4, randomization="owen")
