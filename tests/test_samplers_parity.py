"""The Spectraformer-parity samplers gq, sgq, scrf and rom against plain references.

The generic sampler tests (shape, dtype, seeds, independence, bad sizes, marginal law for the
``marginally_gaussian`` ones) run over every registered sampler in ``test_samplers.py``; the
bias of each sampler × feature map is in ``test_kernel_estimate.py``. Here: each sampler's exact
structure (quadrature laws and their moments, the Smolyak rule against hand-computed rules and
polynomial exactness, the FFT circulant against the explicit circulant matrix, the ROM product
against explicit Hadamard matrices) and its documented bias numbers. Fixed seeds, float64;
statistical checks use 4 standard errors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from stats import assert_mean_close

from spectra.features.hadamard import hadamard_matrix, next_power_of_two
from spectra.features.samplers import seeded_generator
from spectra.features.samplers.base import chi_norms
from spectra.features.samplers.gq import gauss_hermite_law, gq_mgf_relative_bias
from spectra.features.samplers.rom import rom_blocks
from spectra.features.samplers.scrf import circulant_fft
from spectra.features.samplers.sgq import (
    MAX_TERMS,
    sgq_row_second_moment,
    smolyak_rule,
)
from spectra.features.samplers.sorf import random_signs
from spectra.registry import SAMPLERS

F64 = torch.float64
CPU = torch.device("cpu")


def build(name: str, m: int, d: int, **options: object):  # type: ignore[no-untyped-def]
    return SAMPLERS.build(name, dim=d, num_features=m, **options)


def gaussian_moment(alpha: tuple[int, ...]) -> float:
    """E Π_k g_k^{α_k} for g ~ N(0, I): Π (α_k − 1)!! for even α_k, else 0."""
    out = 1.0
    for a in alpha:
        if a % 2:
            return 0.0
        out *= math.prod(range(a - 1, 0, -2))
    return out


# -- gq -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 8, 12])
def test_gq_law_matches_normal_moments_up_to_2n_minus_1(n: int) -> None:
    """Σ p_j t_j^k = E g^k for k ≤ 2n − 1; the 2n-th moment falls short by exactly n!
    (the Gauss rule's error on t^{2n}: ∫ He_n² dN(0, 1) = n!)."""
    nodes, probs = gauss_hermite_law(n)
    assert len(nodes) == n and (probs > 0).all()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-15)
    for k in range(2 * n):
        exact = gaussian_moment((k,))
        got = float((probs * nodes**k).sum())
        scale = gaussian_moment((k + k % 2,))  # size of the terms (odd moments cancel to 0)
        assert got == pytest.approx(exact, rel=1e-10, abs=1e-13 * scale), (n, k)
    deficit = gaussian_moment((2 * n,)) - float((probs * nodes ** (2 * n)).sum())
    assert deficit == pytest.approx(math.factorial(n), rel=1e-9)


def test_gq_nodes_are_the_reference_physicists_rule_scaled() -> None:
    """The reference code's law: hermgauss nodes × √2, weights / √π (same law as hermegauss)."""
    t, w = np.polynomial.hermite.hermgauss(8)
    nodes, probs = gauss_hermite_law(8)
    torch.testing.assert_close(nodes, torch.from_numpy(t * math.sqrt(2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(probs, torch.from_numpy(w / math.sqrt(math.pi)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("degree", [3, 8])
def test_gq_draws_are_nodes_with_the_weights_as_frequencies(degree: int) -> None:
    d, m = 16, 300
    w = build("gq", m, d, degree=degree).sample(seeded_generator(0), dtype=F64)
    nodes, probs = gauss_hermite_law(degree)
    index = (w.reshape(-1, 1) - nodes).abs().argmin(-1)
    torch.testing.assert_close(nodes[index], w.reshape(-1), rtol=0, atol=0)
    n = w.numel()
    freq = torch.bincount(index, minlength=degree).to(F64) / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 4 * se + 1e-12).all(), (freq, probs)
    # marginal moments of the entries: mean 0, second moment 1, fourth 3 (degree ≥ 3)
    flat = w.reshape(-1, 1)
    assert_mean_close(flat, torch.zeros(1, dtype=F64), what="gq mean")
    assert_mean_close(flat.square(), torch.ones(1, dtype=F64), what="gq second moment")
    assert_mean_close(flat**4, torch.full((1,), 3.0, dtype=F64), what="gq fourth moment")


def test_gq_degree_two_is_rademacher() -> None:
    w = build("gq", 50, 8, degree=2).sample(seeded_generator(1), dtype=F64)
    assert set(w.unique().tolist()) == {-1.0, 1.0}


def test_gq_mgf_bias_is_the_exact_finite_sum_and_small() -> None:
    nodes, probs = gauss_hermite_law(8)
    for t in (0.5, 2.0, 3.0):
        direct = float((probs * (nodes * t).exp()).sum()) / math.exp(t * t / 2) - 1
        assert float(gq_mgf_relative_bias(t)) == pytest.approx(direct, rel=1e-9, abs=1e-15)
    # documented values (module docstring): −4.4e−5 at t = 2, −8.0e−3 at t = 3, −0.13 at t = 4
    got = gq_mgf_relative_bias(torch.tensor([2.0, 3.0, 4.0])).tolist()
    assert got == pytest.approx([-4.4467e-5, -7.9935e-3, -0.13429], rel=1e-3)
    assert (gq_mgf_relative_bias(torch.linspace(1.0, 5.0, 41)) < 0).all()


@pytest.mark.parametrize("degree", [1, 0, -2, 2.5, "8", True])
def test_gq_rejects_bad_degree(degree: object) -> None:
    with pytest.raises(ValueError, match="degree"):
        build("gq", 4, 4, degree=degree)


# -- sgq: the Smolyak rule ----------------------------------------------------------------------
def _rule_dict(dim: int, level: int) -> dict[tuple[float, ...], float]:
    rule = smolyak_rule(dim, level)
    return {tuple(np.round(p, 12)): w for p, w in zip(rule.dense_nodes(), rule.weights)}


def test_smolyak_rule_known_values_d2() -> None:
    """Hand-computed rules: level 1 = U₁⊗U₀ + U₀⊗U₁ − U₀⊗U₀; level 2 = U₂⊗U₀ + U₁⊗U₁ + U₀⊗U₂
    − U₁⊗U₀ − U₀⊗U₁ (U_l: (l+1)-point Gauss–Hermite; U₁ = {±1: ½}, U₂ = {0: ⅔, ±√3: ⅙})."""
    s3 = round(math.sqrt(3), 12)
    level1 = {(0.0, 0.0): -1.0, (1.0, 0.0): 0.5, (-1.0, 0.0): 0.5, (0.0, 1.0): 0.5,
              (0.0, -1.0): 0.5}  # fmt: skip
    level2 = {(0.0, 0.0): 4 / 3}
    for a, b in itertools.product((1.0, -1.0), repeat=2):
        level2[(a, b)] = 0.25
    for sign in (1.0, -1.0):
        level2.update({(sign * s3, 0.0): 1 / 6, (0.0, sign * s3): 1 / 6})
        level2.update({(sign, 0.0): -0.5, (0.0, sign): -0.5})
    for level, expected in ((1, level1), (2, level2)):
        got = _rule_dict(2, level)
        assert got.keys() == expected.keys(), level
        for key, weight in expected.items():
            assert got[key] == pytest.approx(weight, abs=1e-13), (level, key)


@pytest.mark.parametrize("level", [1, 2, 4])
def test_smolyak_rule_in_one_dimension_is_the_gauss_rule(level: int) -> None:
    rule = smolyak_rule(1, level)
    nodes, weights = np.polynomial.hermite_e.hermegauss(level + 1)
    order = np.argsort(rule.dense_nodes()[:, 0])
    np.testing.assert_allclose(rule.dense_nodes()[order, 0], nodes, atol=1e-12)
    np.testing.assert_allclose(rule.weights[order], weights / weights.sum(), atol=1e-13)


@pytest.mark.parametrize(("dim", "level"), [(2, 1), (3, 1), (3, 2), (3, 3), (5, 2), (4, 3)])
def test_smolyak_rule_is_exact_for_total_degree_2l_plus_1(dim: int, level: int) -> None:
    """Σ_j a_j ω_j^α = E g^α for every |α| ≤ 2L + 1, and not for ω_1² ⋯ ω_{L+1}² (degree 2L + 2):
    a sparse rule, not the tensor grid."""
    rule = smolyak_rule(dim, level)
    nodes, weights = rule.dense_nodes(), rule.weights
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    for alpha in itertools.product(range(2 * level + 2), repeat=dim):
        if sum(alpha) > 2 * level + 1:
            continue
        got = float((weights * np.prod(nodes ** np.array(alpha), axis=1)).sum())
        assert got == pytest.approx(gaussian_moment(alpha), abs=1e-10), alpha
    if level + 1 <= dim:
        alpha = (2,) * (level + 1) + (0,) * (dim - level - 1)
        got = float((weights * np.prod(nodes ** np.array(alpha), axis=1)).sum())
        assert abs(got - 1.0) > 0.5


@pytest.mark.parametrize("dim", [4, 16, 64])
def test_smolyak_level_one_size_and_mass(dim: int) -> None:
    """Level 1: 2d nodes ±e_k of weight ½ and the origin with weight −(d − 1); S = 2d − 1."""
    rule = smolyak_rule(dim, 1)
    assert len(rule.weights) == 2 * dim + 1
    assert rule.abs_mass == pytest.approx(2 * dim - 1)
    origin = (rule.coords < 0).all(axis=1)
    assert rule.weights[origin] == pytest.approx([-(dim - 1)])
    assert (rule.coords >= 0).sum(axis=1).max() <= 1


def test_smolyak_nodes_are_sparse_and_size_is_limited() -> None:
    rule = smolyak_rule(64, 2)
    assert (rule.coords >= 0).sum(axis=1).max() == 2
    with pytest.raises(ValueError, match="raw points"):
        smolyak_rule(64, 4)
    assert MAX_TERMS >= 1_000_000


# -- sgq: the sampler ---------------------------------------------------------------------------
def test_sgq_rows_are_rule_nodes_drawn_by_absolute_weight() -> None:
    d, m = 16, 4000
    sampler = build("sgq", m, d, level=1)
    w = sampler.sample(seeded_generator(3), dtype=F64)
    nonzero = (w != 0).sum(-1)
    assert nonzero.max() <= 1
    assert set(w[w != 0].abs().unique().tolist()) <= {1.0}
    p_origin = (d - 1) / (2 * d - 1)
    freq = (nonzero == 0).double().mean().item()
    assert abs(freq - p_origin) <= 4 * math.sqrt(p_origin * (1 - p_origin) / m)


def test_sgq_signed_draw_is_unbiased_for_the_rule() -> None:
    """(S/m) Σ_r s_r g(ω_r) averages to Σ_j a_j g(ω_j) (g = e^{ωᵀz}); W equals ``sample()``."""
    d, m, level = 4, 64, 2
    sampler = build("sgq", m, d, level=level)
    rule = smolyak_rule(d, level)
    z = torch.tensor([0.3, -0.5, 0.2, 0.4], dtype=F64)
    target = float((torch.from_numpy(rule.weights) * (torch.from_numpy(rule.dense_nodes()) @ z)
                    .exp()).sum())  # fmt: skip
    ests = []
    for seed in range(400):
        w, signs, mass = sampler.sample_signed(seeded_generator(seed), dtype=F64)
        torch.testing.assert_close(w, sampler.sample(seeded_generator(seed), dtype=F64))
        assert set(signs.unique().tolist()) <= {-1.0, 1.0}
        ests.append(mass / m * (signs * (w @ z).exp()).sum())
    assert_mean_close(
        torch.stack(ests)[:, None], torch.tensor([target], dtype=F64), what="signed sgq estimate"
    )
    assert target == pytest.approx(math.exp(0.5 * float(z @ z)), rel=2e-3)  # the rule is good


def test_sgq_documented_bias_numbers() -> None:
    """Module docstring: E‖ω‖² under |a|/S and the posrf bias for x = y spread, ‖x‖ = 1."""
    moments = [sgq_row_second_moment(16, lv) for lv in (1, 2, 3)]
    assert moments == pytest.approx([0.516, 1.031, 1.542], abs=1e-3)
    for d, expected in ((16, -0.846), (64, -0.860)):
        rule = smolyak_rule(d, 2)
        z = np.full(d, 2 / math.sqrt(d))
        probs = np.abs(rule.weights) / rule.abs_mass
        bias = probs @ np.exp(rule.dense_nodes() @ z) / math.exp(z @ z / 2) - 1
        assert bias == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("level", [0, -1, 1.5, "2"])
def test_sgq_rejects_bad_level(level: object) -> None:
    with pytest.raises(ValueError, match="level"):
        build("sgq", 4, 4, level=level)


# -- scrf ---------------------------------------------------------------------------------------
def explicit_circulant(c: torch.Tensor) -> torch.Tensor:
    """C_ij = c_{(i − j) mod d}, by index arithmetic."""
    d = c.shape[-1]
    i, j = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
    return c[..., (i - j) % d]


@pytest.mark.parametrize("d", [1, 5, 16, 33])
def test_circulant_fft_equals_explicit_circulant_and_convolution(d: int) -> None:
    c = torch.randn(3, d, generator=seeded_generator(d), dtype=F64)
    torch.testing.assert_close(circulant_fft(c), explicit_circulant(c), rtol=0, atol=1e-12)
    x = torch.randn(d, generator=seeded_generator(d + 1), dtype=F64)
    conv = torch.stack([
        torch.stack([sum(c[b, (i - j) % d] * x[j] for j in range(d)) for i in range(d)])
        for b in range(3)
    ])  # fmt: skip
    torch.testing.assert_close(circulant_fft(c) @ x, conv, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [16, 12])
@pytest.mark.parametrize("scale", ["none", "chi", "sqrt_d"])
def test_scrf_matches_explicit_signed_circulant(d: int, scale: str) -> None:
    """W = [diag(σ_b) C(c_b)]_b cut to m rows, then rows rescaled (same generator order)."""
    m = 2 * d + 3
    blocks = math.ceil(m / d)
    w = build("scrf", m, d, scale=scale).sample(seeded_generator(4), dtype=F64)
    gen = seeded_generator(4)
    c = torch.randn(blocks, d, generator=gen, dtype=F64)
    signs = random_signs((blocks, d), gen, CPU)
    ref = torch.cat([signs[b][:, None] * explicit_circulant(c[b]) for b in range(blocks)])[:m]
    if scale == "chi":
        ref = ref / ref.norm(dim=-1, keepdim=True) * chi_norms(m, d, gen, CPU)[:, None]
    elif scale == "sqrt_d":
        ref = ref / ref.norm(dim=-1, keepdim=True) * math.sqrt(d)
    torch.testing.assert_close(w, ref, rtol=1e-12, atol=1e-12)


def test_scrf_structure_and_flags() -> None:
    d = 8
    w = build("scrf", d, d, scale="none").sample(seeded_generator(5), dtype=F64)
    # every row is ± a cyclic shift of the first column's generator c: equal norms, same entries
    norms = w.norm(dim=-1)
    torch.testing.assert_close(norms, norms[0].expand(d), rtol=1e-12, atol=0)
    base = w[:, 0].abs().sort().values
    for r in range(d):
        torch.testing.assert_close(w[r].abs().sort().values, base, rtol=0, atol=1e-12)
    assert build("scrf", d, d).marginally_gaussian
    assert build("scrf", d, d, scale="none").marginally_gaussian
    assert not build("scrf", d, d, scale="sqrt_d").marginally_gaussian
    with pytest.raises(ValueError, match=r"unknown scale 'unit'.*chi, none, sqrt_d"):
        build("scrf", d, d, scale="unit")


# -- rom ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", ["chi", "sqrt_d"])
def test_rom_rows_orthogonal_within_a_block(depth: int, scale: str) -> None:
    d, m = 16, 3 * 16 + 5
    w = build("rom", m, d, depth=depth, scale=scale).sample(seeded_generator(6), dtype=F64)
    norms = w.norm(dim=-1)
    if scale == "sqrt_d":
        torch.testing.assert_close(norms, torch.full_like(norms, 4.0), rtol=0, atol=1e-12)
    u = w / norms[:, None]
    for start in range(0, m, d):
        block = u[start : start + d]
        torch.testing.assert_close(block @ block.T, torch.eye(len(block), dtype=F64),
                                   rtol=0, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("d", [16, 12, 5])
@pytest.mark.parametrize("depth", [1, 3])
def test_rom_matches_explicit_product(d: int, depth: int) -> None:
    """Sampler = rows of (H D_1 ⋯ H D_k)[:, :d] (explicit normalized Hadamard), normalized and
    scaled by χ_d norms drawn after the signs."""
    m, p = 2 * d + 3, next_power_of_two(d)
    blocks = math.ceil(m / p)
    w = build("rom", m, d, depth=depth).sample(seeded_generator(7), dtype=F64)
    gen = seeded_generator(7)
    signs = random_signs((depth, blocks, p), gen, CPU)
    h = hadamard_matrix(p, dtype=F64)
    mats = []
    for b in range(blocks):
        mat = torch.eye(p, dtype=F64)
        for i in range(depth):
            mat = mat @ h @ torch.diag(signs[i, b])
        mats.append(mat)
    v = torch.cat(mats)[:m, :d]
    torch.testing.assert_close(rom_blocks(signs, d).reshape(-1, d)[:m], v, rtol=0, atol=1e-12)
    norms = v.norm(dim=-1, keepdim=True)
    ref = torch.where(norms > 1e-9, v / norms, 0.0) * chi_norms(m, d, gen, CPU)[:, None]
    torch.testing.assert_close(w, ref, rtol=1e-12, atol=1e-12)


def test_rom_cut_rows_can_vanish_for_small_non_power_of_two_dims() -> None:
    """Documented: d = 5 (p = 8), depth 3 gives some all-zero cut rows, which stay 0."""
    w = torch.cat([build("rom", 64, 5).sample(seeded_generator(s), dtype=F64) for s in range(20)])
    zero = (w.norm(dim=-1) == 0).double().mean().item()
    assert 0 < zero < 0.06
    assert torch.isfinite(w).all()


def test_rom_depth3_sqrt_d_equals_sorf() -> None:
    d, m = 16, 40
    rom = build("rom", m, d, depth=3, scale="sqrt_d").sample(seeded_generator(8), dtype=F64)
    sorf = build("sorf", m, d).sample(seeded_generator(8), dtype=F64)
    torch.testing.assert_close(rom, sorf, rtol=1e-12, atol=1e-12)


def test_rom_row_norms_are_chi_and_entries_standardized() -> None:
    d = 16
    ws = torch.stack([build("rom", 2 * d, d).sample(seeded_generator(s), dtype=F64)
                      for s in range(200)])  # fmt: skip
    sq = ws.square().sum(-1)[:, 0]  # one row per seed: iid χ²_d
    assert_mean_close(sq[:, None], torch.tensor([float(d)], dtype=F64), what="rom E‖ω‖²")
    assert_mean_close((sq - d).square()[:, None], torch.tensor([2.0 * d], dtype=F64),
                      what="rom Var‖ω‖²")  # fmt: skip
    assert_mean_close(ws[:, :, 0].reshape(-1, 1)[:200], torch.zeros(1, dtype=F64), what="mean")


@pytest.mark.parametrize(("options", "match"), [
    ({"depth": 0}, "depth"), ({"depth": 2.0}, "depth"), ({"scale": "unit"}, "unknown scale"),
])  # fmt: skip
def test_rom_rejects_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build("rom", 4, 4, **options)


# -- all four ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gq", "sgq", "scrf", "rom"])
def test_parity_samplers_reproduce_per_seed_and_differ_across_seeds(name: str) -> None:
    a = build(name, 20, 8).sample(seeded_generator(11), dtype=F64)
    b = build(name, 20, 8).sample(seeded_generator(11), dtype=F64)
    c = build(name, 20, 8).sample(seeded_generator(12), dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert SAMPLERS.entry(name).provider == "spectra"
