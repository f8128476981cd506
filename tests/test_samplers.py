"""Weight-matrix samplers and the Walsh–Hadamard transform.

Generic tests run over every registered sampler (plugins included): shape, dtype, device, seeds,
independence across seeds, finiteness, bad input, gradients of learned samplers, and the
marginal N(0, 1) law for samplers that claim ``marginally_gaussian``. Per-sampler tests check the
exact structure (orthogonal blocks, χ_d norms, exact moments of ``mm``) and compare every fast
path (fwht, SORF/Fastfood blocks, whitening) with a plain explicit-matrix reference.

Statistical checks use fixed seeds and Monte-Carlo bounds of 4 standard errors (or KS p-values
above 1e-3 when scipy is installed), so a correct sampler passes deterministically and a wrong
law fails.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from spectra.features.hadamard import fwht, hadamard_matrix, next_power_of_two
from spectra.features.samplers import Sampler, seeded_generator
from spectra.features.samplers.fastfood import draw_fastfood_parts, fastfood_weights
from spectra.features.samplers.mm import column_blocks, moment_match
from spectra.features.samplers.sorf import random_signs, sorf_blocks
from spectra.registry import SAMPLERS

try:
    from scipy import stats as scipy_stats
except ImportError:  # pragma: no cover - scipy is optional
    scipy_stats = None

D = 16
MS = [D // 2, D, 3 * D + 1]
NAMES = SAMPLERS.names()
BUILTIN = [n for n in NAMES if SAMPLERS.entry(n).provider == "spectra"]
F64 = torch.float64


# -- helpers ------------------------------------------------------------------------------------
def build(name: str, m: int, d: int = D, **options: object) -> Sampler:
    return SAMPLERS.build(name, dim=d, num_features=m, **options)


def fresh_draw(name: str, m: int, seed: int, d: int = D, dtype: torch.dtype = F64) -> torch.Tensor:
    """An independent draw for ``seed``: from the generator, or for learned samplers (which
    ignore the generator) from the construction ``seed`` (every sampler takes one)."""
    sampler = build(name, m, d)
    if sampler.learnable:
        sampler = build(name, m, d, seed=seed)
    return sampler.sample(seeded_generator(seed), dtype=dtype).detach()


def assert_mean_within(samples: torch.Tensor, target: float, what: str, k: float = 4.0) -> None:
    """Mean of iid ``samples`` within k standard errors of ``target``."""
    n = samples.numel()
    mean = samples.mean().item()
    se = samples.std().item() / math.sqrt(n)
    message = f"{what}: mean {mean:.5f}, target {target}, SE {se:.5f}"
    assert abs(mean - target) <= k * se + 1e-12, message


def assert_chi2_law(sq_norms: torch.Tensor, d: int, what: str) -> None:
    """iid ``sq_norms`` ~ χ²_d: mean d and variance 2d within 4 SE, and KS if scipy is there."""
    x = sq_norms.double().flatten()
    n = x.numel()
    mean_se = math.sqrt(2 * d / n)
    assert abs(x.mean().item() - d) <= 4 * mean_se, f"{what}: E‖ω‖² = {x.mean().item():.3f} ≠ {d}"
    var_se = math.sqrt((8 * d**2 + 48 * d) / n)  # Var of the sample variance, μ4 = 12d² + 48d
    assert abs(x.var().item() - 2 * d) <= 4 * var_se, f"{what}: Var‖ω‖² = {x.var().item():.3f}"
    if scipy_stats is not None:
        p = scipy_stats.kstest(x.numpy(), scipy_stats.chi2(d).cdf).pvalue
        assert p > 1e-3, f"{what}: KS against χ²_{d} rejects, p = {p:.2e}"


def per_seed_entry_moments(name: str, m: int, d: int, seeds: range) -> tuple[torch.Tensor, ...]:
    """Per-seed mean and mean square of the entries (independent across seeds)."""
    ws = torch.stack([fresh_draw(name, m, s, d) for s in seeds])
    return ws.mean(dim=(1, 2)), ws.square().mean(dim=(1, 2)), ws


# -- generic: every registered sampler ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_device_finite(name: str, m: int, dtype: torch.dtype) -> None:
    sampler = build(name, m)
    assert isinstance(sampler, Sampler)
    w = sampler.sample(seeded_generator(0), device="cpu", dtype=dtype)
    assert w.shape == (m, D)
    assert w.dtype == dtype
    assert w.device == torch.device("cpu")
    assert torch.isfinite(w.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_default_dtype_and_no_generator(name: str) -> None:
    sampler = build(name, 2 * D + 3)
    w = sampler.sample()
    assert w.shape == (2 * D + 3, D)
    assert w.dtype == torch.get_default_dtype()
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_matrix(name: str, m: int) -> None:
    a = build(name, m).sample(seeded_generator(7), dtype=F64)
    b = build(name, m).sample(seeded_generator(7), dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", BUILTIN)
def test_seed_gives_same_matrix_in_every_dtype(name: str) -> None:
    """Built-in samplers draw in float64 and cast, so one seed means one W in any dtype."""
    sampler = build(name, 3 * D + 1)
    w64 = sampler.sample(seeded_generator(3), dtype=F64)
    w32 = sampler.sample(seeded_generator(3), dtype=torch.float32)
    torch.testing.assert_close(w32.double(), w64.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_independent(name: str, m: int) -> None:
    """Different seeds give different W, and entries of two draws are uncorrelated: the mean of
    the correlation over independent seed pairs is 0 within 4 SE (estimated from the pairs)."""
    pairs = 16
    corr = []
    for k in range(pairs):
        a, b = fresh_draw(name, m, 2 * k), fresh_draw(name, m, 2 * k + 1)
        assert not torch.allclose(a, b)
        corr.append(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    r = torch.stack(corr)
    assert r.abs().max() < 0.5, f"{name}: draws for different seeds correlate, r = {r.tolist()}"
    assert_mean_within(r, 0.0, f"{name}: correlation across seeds")


@pytest.mark.parametrize("name", NAMES)
def test_marginally_gaussian_entries(name: str) -> None:
    """Samplers claiming ``marginally_gaussian`` give entries N(0, 1) and ‖ω‖² ~ χ²_d.

    Per-seed statistics are independent across seeds, so their means are compared with 4 SE; KS
    tests use one fixed entry / row across seeds (independent samples of its exact marginal).
    """
    m = D + 5
    if not build(name, m).marginally_gaussian:
        pytest.skip(f"{name} is not marginally Gaussian")
    means, squares, ws = per_seed_entry_moments(name, m, D, range(200))
    assert_mean_within(means, 0.0, f"{name}: entry mean")
    assert_mean_within(squares, 1.0, f"{name}: entry second moment")
    assert_chi2_law(ws[:, 0].square().sum(-1), D, f"{name}: first row")
    assert_chi2_law(ws[:, -1].square().sum(-1), D, f"{name}: last row")
    if scipy_stats is not None:
        for r, c in ((0, 0), (m - 1, D - 1), (D, 3)):
            p = scipy_stats.kstest(ws[:, r, c].numpy(), "norm").pvalue
            assert p > 1e-3, f"{name}: entry ({r}, {c}) not N(0, 1), KS p = {p:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_learned_samplers_ignore_generator_and_get_gradients(name: str) -> None:
    sampler = build(name, 2 * D + 1)
    params = list(sampler.parameters())
    assert sampler.learnable == any(p.requires_grad for p in params)
    if not sampler.learnable:
        assert sampler.sample(seeded_generator(0)).grad_fn is None
        return
    w = sampler.sample(seeded_generator(0))
    torch.testing.assert_close(w, sampler.sample(seeded_generator(1)), rtol=0, atol=0)
    weights = torch.randn(w.shape, generator=seeded_generator(5))
    (w * weights).sum().backward()
    for pname, p in sampler.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient on {pname}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("dim", "num_features"),
    [(0, 4), (-3, 4), (4, 0), (4, -1), (2.5, 4), (4, 8.0), ("4", 4), (4, "8"), (True, 4)],
)
def test_bad_sizes_raise(name: str, dim: object, num_features: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        SAMPLERS.build(name, dim=dim, num_features=num_features)


@pytest.mark.parametrize("name", NAMES)
def test_non_float_dtype_and_unknown_option_raise(name: str) -> None:
    sampler = build(name, D)
    with pytest.raises(ValueError, match="floating-point"):
        sampler.sample(seeded_generator(0), dtype=torch.int64)
    with pytest.raises(ValueError, match="unknown option"):
        SAMPLERS.build(name, dim=D, num_features=D, bogus=1)


def test_marginally_gaussian_flags() -> None:
    expected = {
        "gaussian": True, "orthogonal": True, "qmc": True, "learnable": True,
        "sorf": False, "mm": False, "fastfood": False, "fastfood_learnable": False,
        "scrf": True, "gq": False, "sgq": False, "rom": False,
    }
    for name, flag in expected.items():
        assert build(name, D).marginally_gaussian is flag, name
    assert build("orthogonal", D, scale="sqrt_d").marginally_gaussian is False
    assert {n for n in expected if build(n, D).learnable} == {"learnable", "fastfood_learnable"}


# -- Walsh–Hadamard -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 128])
@pytest.mark.parametrize("normalized", [True, False])
def test_fwht_matches_explicit_hadamard(n: int, normalized: bool) -> None:
    x = torch.randn(3, 2, n, generator=seeded_generator(n), dtype=F64, requires_grad=True)
    h = hadamard_matrix(n, normalized, dtype=F64)
    fast, ref = fwht(x, normalized), x @ h
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(fast.shape, generator=seeded_generator(1), dtype=F64)
    (grad_fast,) = torch.autograd.grad(fast, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-12, atol=1e-12)


def test_hadamard_matrix_is_sylvester() -> None:
    h4 = torch.tensor(
        [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=F64
    )
    torch.testing.assert_close(hadamard_matrix(4, False, dtype=F64), h4)
    h = hadamard_matrix(64, False, dtype=F64)
    torch.testing.assert_close(h @ h.T, 64 * torch.eye(64, dtype=F64))
    torch.testing.assert_close(h, h.T)
    hn = hadamard_matrix(64, dtype=F64)
    torch.testing.assert_close(hn @ hn, torch.eye(64, dtype=F64))
    if scipy_stats is not None:
        from scipy.linalg import hadamard

        torch.testing.assert_close(h, torch.from_numpy(hadamard(64)).to(F64))


@pytest.mark.parametrize("n", [0, 3, 6, 12, 100])
def test_fwht_rejects_non_power_of_two(n: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        fwht(torch.zeros(2, n))
    with pytest.raises(ValueError, match="power of two"):
        hadamard_matrix(n)


def test_numpy_integer_sizes_accepted() -> None:
    np = pytest.importorskip("numpy")
    w = SAMPLERS.build("gaussian", dim=np.int64(4), num_features=np.int32(3)).sample()
    assert w.shape == (3, 4)


def test_next_power_of_two() -> None:
    assert [next_power_of_two(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]


# -- orthogonal ---------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [D, 12])
@pytest.mark.parametrize("scale", ["chi", "sqrt_d"])
@pytest.mark.parametrize("m", MS)
def test_orthogonal_blocks(m: int, scale: str, d: int) -> None:
    w = build("orthogonal", m, d, scale=scale).sample(seeded_generator(1), dtype=F64)
    norms = w.norm(dim=-1)
    if scale == "sqrt_d":
        torch.testing.assert_close(norms, torch.full_like(norms, math.sqrt(d)), rtol=0, atol=1e-12)
    u = w / norms[:, None]
    for start in range(0, m, d):
        block = u[start : start + d]
        torch.testing.assert_close(block @ block.T, torch.eye(len(block), dtype=F64), atol=1e-12,
                                   rtol=0)
    if m > d:  # independent blocks: their cross-Gram matrix is Haar, not 0 and not a ±permutation
        cross = (u[:d] @ u[d : 2 * d].T).abs().max(dim=-1).values
        assert cross.min() > 0.1 and cross.max() < 0.99


def test_orthogonal_row_norms_are_chi() -> None:
    w = torch.cat([build("orthogonal", 3 * D + 1).sample(seeded_generator(s), dtype=F64)
                   for s in range(40)])
    assert_chi2_law(w.square().sum(-1), D, "orthogonal")


def test_orthogonal_rejects_unknown_scale() -> None:
    with pytest.raises(ValueError, match=r"unknown scale 'unit'.*chi, sqrt_d"):
        build("orthogonal", D, scale="unit")


# -- sorf ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", MS)
def test_sorf_blocks_orthogonal_with_norm_sqrt_d(m: int) -> None:
    w = build("sorf", m).sample(seeded_generator(2), dtype=F64)
    for start in range(0, m, D):
        block = w[start : start + D]
        torch.testing.assert_close(block @ block.T, D * torch.eye(len(block), dtype=F64),
                                   atol=1e-12, rtol=0)


@pytest.mark.parametrize("d", [D, 12, 5])
def test_sorf_matches_explicit_product(d: int) -> None:
    """Sampler output = √p · H D₁ H D₂ H D₃ (explicit normalized Hadamard), first d columns."""
    m = 2 * d + 3
    p = next_power_of_two(d)
    blocks = math.ceil(m / p)
    w = build("sorf", m, d).sample(seeded_generator(4), dtype=F64)
    signs = random_signs((3, blocks, p), seeded_generator(4), torch.device("cpu"))
    h = hadamard_matrix(p, dtype=F64)
    ref = torch.cat([
        math.sqrt(p) * (h @ torch.diag(signs[0, b]) @ h @ torch.diag(signs[1, b]) @ h
                        @ torch.diag(signs[2, b]))
        for b in range(blocks)
    ])[:m, :d]
    torch.testing.assert_close(w, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sorf_blocks(*signs, d).reshape(-1, d)[:m], ref)


# -- fastfood -----------------------------------------------------------------------------------
def explicit_fastfood(signs, permutation, gaussian, scales, d):  # type: ignore[no-untyped-def]
    """Plain reference: rows s_i v_i/‖v_i‖, v = (Ĥ G Π Ĥ B)[:, :d] with explicit matrices."""
    p = signs.shape[-1]
    h = hadamard_matrix(p, dtype=signs.dtype)
    eye = torch.eye(p, dtype=signs.dtype)
    mats = []
    for b in range(signs.shape[0]):
        perm_matrix = eye[permutation[b]]  # (Π x)_i = x_{perm[i]}
        mats.append(h @ torch.diag(gaussian[b]) @ perm_matrix @ h @ torch.diag(signs[b]))
    v = torch.cat(mats)[: scales.shape[0], :d]
    return scales[:, None] * v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("d", [D, 12])
def test_fastfood_matches_explicit_product(d: int) -> None:
    m = 3 * d + 1
    w = build("fastfood", m, d).sample(seeded_generator(5), dtype=F64)
    parts = draw_fastfood_parts(d, m, seeded_generator(5), torch.device("cpu"))
    torch.testing.assert_close(w, explicit_fastfood(*parts, d), rtol=1e-12, atol=1e-12)


def test_fastfood_equals_paper_formula_for_power_of_two() -> None:
    """For d = p: W = (1/√d) S H G Π H B with unnormalized H and S_ii = s_i/‖G‖ (Le et al.)."""
    parts = draw_fastfood_parts(D, D, seeded_generator(6), torch.device("cpu"))
    h = hadamard_matrix(D, normalized=False, dtype=F64)
    perm_matrix = torch.eye(D, dtype=F64)[parts.permutation[0]]
    g = parts.gaussian[0]
    s = torch.diag(parts.scales / g.norm())
    paper = s @ h @ torch.diag(g) @ perm_matrix @ h @ torch.diag(parts.signs[0]) / math.sqrt(D)
    torch.testing.assert_close(fastfood_weights(*parts, dim=D), paper, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [D, 12])
def test_fastfood_row_norms_are_chi(d: int) -> None:
    w = torch.cat([build("fastfood", 3 * d + 1, d).sample(seeded_generator(s), dtype=F64)
                   for s in range(40)])
    assert_chi2_law(w.square().sum(-1), d, f"fastfood d={d}")


@pytest.mark.parametrize("d", [D, 12])
@pytest.mark.parametrize("name", ["sorf", "fastfood"])
def test_structured_entries_mean_zero_variance_one(name: str, d: int) -> None:
    """SORF / Fastfood are not exactly Gaussian, but E[W_ij] = 0 and E[mean of W_ij²] = 1."""
    means, squares, _ = per_seed_entry_moments(name, 2 * d + 1, d, range(150))
    assert_mean_within(means, 0.0, f"{name}: entry mean")
    if squares.std() < 1e-12:  # sorf with whole blocks: the mean square is exactly 1
        torch.testing.assert_close(squares, torch.ones_like(squares))
    else:
        assert_mean_within(squares, 1.0, f"{name}: entry second moment")


# -- fastfood_learnable / learnable -------------------------------------------------------------
def test_learnable_fastfood_init_equals_fastfood_draw() -> None:
    learned = build("fastfood_learnable", 3 * D + 1, seed=9)
    drawn = build("fastfood", 3 * D + 1).sample(seeded_generator(9), dtype=F64)
    torch.testing.assert_close(learned.sample(dtype=F64).detach(), drawn, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [D, 12])
def test_learnable_fastfood_fast_path_matches_reference_with_gradients(d: int) -> None:
    sampler = build("fastfood_learnable", 2 * d + 3, d, seed=1).double()
    with torch.no_grad():  # move B off ±1 so the test covers real-valued B
        sampler.signs.mul_(1 + 0.3 * torch.rand(sampler.signs.shape, generator=seeded_generator(2),
                                                dtype=F64))
    params = [sampler.signs, sampler.gaussian, sampler.scales]
    weights = torch.randn(2 * d + 3, d, generator=seeded_generator(3), dtype=F64)
    fast = sampler.sample()
    ref = explicit_fastfood(sampler.signs, sampler.permutation, sampler.gaussian, sampler.scales, d)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    grads_fast = torch.autograd.grad((fast * weights).sum(), params)
    grads_ref = torch.autograd.grad((ref * weights).sum(), params)
    for gf, gr in zip(grads_fast, grads_ref):
        torch.testing.assert_close(gf, gr, rtol=1e-9, atol=1e-10)


def test_learnable_returns_its_parameter() -> None:
    sampler = build("learnable", D, seed=3)
    w = sampler.sample()
    assert w is sampler.weight
    assert sampler.learnable
    other = build("learnable", D, seed=3).sample()
    torch.testing.assert_close(w, other, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["learnable", "fastfood_learnable"])
def test_learned_samplers_reject_bad_seed(name: str) -> None:
    with pytest.raises(ValueError, match="seed must be an int"):
        build(name, D, seed="zero")


# -- qmc ----------------------------------------------------------------------------------------
def test_qmc_is_low_discrepancy() -> None:
    """Each coordinate of a scrambled Sobol set of 2^k points is stratified: the variance of the
    column mean of u = Φ(ω) is far below the iid value 1/(12 m)."""
    m, d, seeds = 64, 4, 60
    col_means = torch.stack([
        torch.special.ndtr(build("qmc", m, d).sample(seeded_generator(s), dtype=F64)).mean(0)
        for s in range(seeds)
    ])
    assert col_means.var() < 0.05 / (12 * m)
    assert_mean_within(col_means.flatten(), 0.5, "qmc: mean of u")


def test_qmc_rejects_too_many_dimensions() -> None:
    with pytest.raises(ValueError, match="21201"):
        build("qmc", 1, 21202)


# -- mm -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [D + 1, 3 * D + 1, 200])
def test_mm_exact_moments_full_rank(m: int) -> None:
    w = build("mm", m).sample(seeded_generator(8), dtype=F64)
    torch.testing.assert_close(w.mean(0), torch.zeros(D, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(w.T @ w / m, torch.eye(D, dtype=F64), rtol=0, atol=1e-10)
    assert w.abs().max() <= math.sqrt(m) + 1e-9


@pytest.mark.parametrize("m", [2, 3, D // 2, D])
def test_mm_exact_moments_blockwise(m: int) -> None:
    """m ≤ d: column blocks of ≤ m − 1 columns partition the columns; each block is whitened."""
    sampler = build("mm", m)
    blocks = sampler.blocks
    assert blocks[0][0] == 0 and blocks[-1][1] == D
    assert all(a < b and b - a <= m - 1 for a, b in blocks)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(blocks))
    w = sampler.sample(seeded_generator(8), dtype=F64)
    torch.testing.assert_close(w.mean(0), torch.zeros(D, dtype=F64), rtol=0, atol=1e-10)
    second = w.T @ w / m
    torch.testing.assert_close(second.diagonal(), torch.ones(D, dtype=F64), rtol=0, atol=1e-10)
    for a, b in blocks:
        torch.testing.assert_close(second[a:b, a:b], torch.eye(b - a, dtype=F64), rtol=0,
                                   atol=1e-10)


@pytest.mark.parametrize("m", [D + 1, 3 * D + 1])
def test_mm_matches_inverse_square_root_reference(m: int) -> None:
    """SVD polar factor √m U Vᵀ = (G − ḡ) C^{-1/2}, C = (G − ḡ)ᵀ(G − ḡ)/m (eigh reference)."""
    g = torch.randn(m, D, generator=seeded_generator(10), dtype=F64)
    centred = g - g.mean(0)
    evals, evecs = torch.linalg.eigh(centred.T @ centred / m)
    ref = centred @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    torch.testing.assert_close(moment_match(g), ref, rtol=1e-9, atol=1e-9)
    w = build("mm", m).sample(seeded_generator(10), dtype=F64)
    torch.testing.assert_close(w, ref, rtol=1e-9, atol=1e-9)


def test_mm_rejects_single_row() -> None:
    with pytest.raises(ValueError, match="num_features must be >= 2"):
        build("mm", 1)
    with pytest.raises(ValueError, match=">= 2"):
        column_blocks(D, 1)


# -- base contract: seed and layer_index ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_takes_seed_and_layer_index(name) -> None:
    sampler = build(name, D, seed=7, layer_index=3)
    assert (sampler.seed, sampler.layer_index) == (7, 3)
    assert sampler.sample(seeded_generator(0)).shape == (D, D)
    assert (build(name, D).seed, build(name, D).layer_index) == (0, None)


LEARNED = [n for n in NAMES if build(n, D).learnable]


@pytest.mark.parametrize("name", LEARNED)
def test_learned_samplers_start_from_their_layers_own_w(name) -> None:
    """Each layer's learned W starts from its own draw (seed, layer), repeatably; an unnumbered
    sampler starts from ``seed`` itself."""
    first = [build(name, D, seed=1, layer_index=i).sample().detach() for i in (0, 1)]
    assert not torch.equal(first[0], first[1])
    assert torch.equal(build(name, D, seed=1, layer_index=0).sample().detach(), first[0])
    assert not torch.equal(build(name, D, seed=1).sample().detach(), first[0])
