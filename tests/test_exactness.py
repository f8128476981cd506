"""Exactness at natural input scales, against *independent* float64 references.

The random-feature attention claims to return the estimator φ(X)φ(Y)ᵀV / φ(X)φ(Y)ᵀ1
(causal: the lower-triangular kernel). These tests compute that estimator in float64 on the
natural scale — exact features (``stabilize=False``), the L×L kernel formed explicitly, no
stabilizer and no ε shared with the code under test — and require the float32 module to match it
row by row at q, k, v ~ σ·N(0, 1), σ ∈ {1, 2, 3}, d = 64 (the sizes of real heads), including an
outlier key aligned with a row of W. Every other registered attention must give in float32 what
it gives in float64 (same parameters). Causal modes must not let any output see a later token.
Parametrized over the registries, so new components are covered.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.registry import ATTENTIONS, FEATURE_MAPS

D, M, L = 64, 128, 96
SIGMAS = [1.0, 2.0, 3.0]
ROW_RTOL = 1e-4
MAPS = FEATURE_MAPS.names()
CAUSAL_MAPS = [f for f in MAPS if not FEATURE_MAPS.build(f).data_dependent]
OTHER_ATTENTIONS = [a for a in ATTENTIONS.names() if a != "random_features"]
# options that keep the module cheap and its float64 run comparable (eval mode: no redraws,
# deterministic landmarks)
SMALL = {"skyformer": {"num_landmarks": 16}, "nystromformer": {"num_landmarks": 16}}


def _qkv(sigma: float, seed: int, b: int = 1, h: int = 2, length: int = L, d: int = D):
    g = torch.Generator().manual_seed(seed)
    return tuple(sigma * torch.randn(b, h, length, d, generator=g) for _ in range(3))


def _rf(fmap: str, **options):
    return ATTENTIONS.build(
        "random_features",
        head_dim=D,
        num_features=M,
        sampler="orthogonal",
        feature_map=fmap,
        **options,
    ).eval()


def _outlier_key(attn, k: torch.Tensor, position: int) -> torch.Tensor:
    """k with the key at ``position`` replaced by the row of W with the largest norm · d^(1/4):
    y = ω_max, the key whose feature along ω_max is as large as a key of that norm allows."""
    w = attn.current_weight()
    k = k.clone()
    k[..., position, :] = w[w.norm(dim=-1).argmax()] * D**0.25
    return k


def estimator_float64(attn, q, k, v, mask=None, causal=False) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, condition) of the estimator in float64 on the natural scale, same W as ``attn``.

    condition_i = Σ_j |K̂_ij| / |Σ_j K̂_ij| (1 for positive maps): the sensitivity of row i to
    rounding of its terms, for signed maps whose denominators can cancel.
    """
    q, k, v = q.double(), k.double(), v.double()
    scale = attn.head_dim**-0.25
    tm = None if mask is None else mask[:, None, :].expand(q.shape[:3])
    w = attn.current_weight().double()
    phi_x, phi_y = attn.feature_map(q * scale, k * scale, w, tm, tm, stabilize=False)
    kern = phi_x @ phi_y.transpose(-1, -2)
    if causal:
        kern = kern.tril()
    num, den = kern @ v, kern.sum(-1, keepdim=True)
    if attn.feature_map.positive:
        out = num / torch.where(den > 0, den, torch.ones_like(den))
    else:
        eps = attn.eps
        out = num / torch.where(den >= 0, den.clamp_min(eps), den.clamp_max(-eps))
    cond = kern.abs().sum(-1) / den.abs().squeeze(-1).clamp_min(1e-300)
    return out, cond


def _row_errors(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out.double() - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-300)


def _check_rows(out, ref, cond, what: str, sigma: float = 1.0) -> None:
    """Row i within ROW_RTOL · (1 + (cond_i − 1)·σ), the usual forward-error shape: positive maps
    have cond = 1, so ROW_RTOL; for a signed map the cancelling part of a row (cond − 1)
    amplifies the float32 rounding of the projection ωᵀx, which grows with the input norm (∝ σ).
    Only rows with cond ≤ 100 are compared — a signed row whose terms cancel to 1 % is not a
    well-defined estimate in float32 — and at least half the rows must qualify."""
    good = cond <= 100.0
    assert good.double().mean() >= 0.5, f"{what}: only {good.double().mean():.0%} rows conditioned"
    bound = ROW_RTOL * (1.0 + (cond[good] - 1.0) * sigma)
    ratio = _row_errors(out, ref)[good] / bound
    assert ratio.max() <= 1.0, f"{what}: worst row error {ratio.max():.2f}× its bound"


# -- (a) float32 output == float64 estimator, row-wise ------------------------------------------
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("fmap", MAPS)
def test_random_features_equal_the_float64_estimator(fmap: str, sigma: float) -> None:
    attn = _rf(fmap)
    q, k, v = _qkv(sigma, seed=int(10 * sigma))
    mask = torch.ones(1, L, dtype=torch.bool)
    mask[0, -7:] = False
    with torch.no_grad():
        out = attn(q, k, v, mask=mask)
        ref, cond = estimator_float64(attn, q, k, v, mask=mask)
    real = mask[0]
    _check_rows(out[..., real, :], ref[..., real, :], cond[..., real], f"{fmap} σ={sigma}", sigma)
    assert (out[..., ~real, :] == 0).all()


@pytest.mark.parametrize("fmap", MAPS)
def test_random_features_exact_with_an_outlier_key(fmap: str) -> None:
    """One key aligned with the largest row of W dominates its feature by e^30 or more; the
    other keys' contributions must not vanish in any row (the old ε swamped them)."""
    attn = _rf(fmap)
    q, k, v = _qkv(2.0, seed=3)
    k = _outlier_key(attn, k, L // 2)
    with torch.no_grad():
        out = attn(q, k, v)
        ref, cond = estimator_float64(attn, q, k, v)
    _check_rows(out, ref, cond, f"{fmap} with an outlier key", 2.0)


@pytest.mark.parametrize("chunk_size", [1, 16, 128])
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("fmap", CAUSAL_MAPS)
def test_causal_random_features_equal_the_float64_estimator(
    fmap: str, sigma: float, chunk_size: int
) -> None:
    attn = _rf(fmap, chunk_size=chunk_size)
    q, k, v = _qkv(sigma, seed=int(20 * sigma))
    with torch.no_grad():
        out = attn(q, k, v, causal=True)
        ref, cond = estimator_float64(attn, q, k, v, causal=True)
    _check_rows(out, ref, cond, f"causal {fmap} σ={sigma} C={chunk_size}", sigma)
    # position 0 sees only itself: exactly v₀ for positive maps
    if attn.feature_map.positive:
        torch.testing.assert_close(out[..., 0, :], v[..., 0, :], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("name", OTHER_ATTENTIONS)
def test_other_attentions_float32_equals_float64(name: str, sigma: float) -> None:
    """Same parameters, float32 vs float64 inputs: rows agree to ROW_RTOL (relative to the
    row, with an absolute floor of 1e-6·max|v| for outputs that are themselves ≈ 0)."""
    attn = ATTENTIONS.build(name, head_dim=D, **SMALL.get(name, {})).eval()
    q, k, v = _qkv(sigma, seed=int(30 * sigma), length=64)
    causal_modes = [False, True] if getattr(attn, "supports_causal", True) else [False]
    for causal in causal_modes:
        torch.manual_seed(0)
        with torch.no_grad():
            out = attn(q, k, v, causal=causal)
        torch.manual_seed(0)
        with torch.no_grad():
            ref = attn(q.double(), k.double(), v.double(), causal=causal)
        err = (out.double() - ref).norm(dim=-1)
        bound = ROW_RTOL * ref.norm(dim=-1) + 1e-6 * v.abs().max()
        assert (err <= bound).all(), (
            f"{name} σ={sigma} causal={causal}: worst row error {(err / bound).max():.2f}× bound"
        )


# -- (b) causal: no output sees a later token --------------------------------------------------
CAUSAL_ATTENTIONS = [
    a for a in OTHER_ATTENTIONS if getattr(ATTENTIONS.get(a), "supports_causal", True)
]


def _changed_at(q, k, v, j: int, key: torch.Tensor | None = None):
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[..., j, :] = -3.0 * q[..., j, :]
    k2[..., j, :] = -3.0 * k[..., j, :] if key is None else key
    v2[..., j, :] = 1e3
    return q2, k2, v2


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64])
@pytest.mark.parametrize("fmap", CAUSAL_MAPS)
def test_causal_random_features_never_see_a_later_token(fmap: str, chunk_size: int) -> None:
    """Changing token j — to anything, including a key carrying the largest feature a key of its
    norm can have (the row of W with the largest norm, scaled up further) — leaves every output
    before j bit for bit unchanged."""
    attn = _rf(fmap, chunk_size=chunk_size)
    q, k, v = _qkv(2.0, seed=40, length=40)
    w = attn.current_weight()
    big = w[w.norm(dim=-1).argmax()] * D**0.25 * 1.5
    with torch.no_grad():
        out = attn(q, k, v, causal=True)
        for j in (1, 17, 39):
            for key in (None, big):
                out2 = attn(*_changed_at(q, k, v, j, key), causal=True)
                assert torch.equal(out[..., :j, :], out2[..., :j, :]), (fmap, chunk_size, j)
                assert not torch.equal(out[..., j:, :], out2[..., j:, :])


@pytest.mark.parametrize("name", CAUSAL_ATTENTIONS)
def test_other_causal_attentions_never_see_a_later_token(name: str) -> None:
    attn = ATTENTIONS.build(name, head_dim=D, **SMALL.get(name, {})).eval()
    q, k, v = _qkv(2.0, seed=41, length=40)
    with torch.no_grad():
        out = attn(q, k, v, causal=True)
        for j in (1, 17, 39):
            out2 = attn(*_changed_at(q, k, v, j), causal=True)
            diff = (out[..., :j, :] - out2[..., :j, :]).abs().max()
            assert diff <= 1e-6, (name, j, float(diff))


@settings(max_examples=30, deadline=None)
@given(
    fmap=st.sampled_from(CAUSAL_MAPS),
    chunk_size=st.integers(1, 20),
    length=st.integers(1, 30),
    data=st.data(),
    log_norm=st.floats(-1.0, 1.0),
    log_garbage=st.floats(-2.0, 2.0),
)
def test_causal_prefix_property(fmap, chunk_size, length, data, log_norm, log_garbage) -> None:
    """Property: for any length, chunk size, position j and input scale, replacing every token
    after j by anything (here: noise of another scale, up to 100× larger) leaves the outputs up
    to j bit for bit unchanged."""
    attn = ATTENTIONS.build(
        "random_features", head_dim=8, num_features=16, feature_map=fmap, chunk_size=chunk_size
    ).eval()
    j = data.draw(st.integers(0, length - 1))
    g = torch.Generator().manual_seed(length * 31 + chunk_size)
    q, k, v = (10**log_norm * torch.randn(1, 1, length, 8, generator=g) for _ in range(3))
    later = [t.clone() for t in (q, k, v)]
    for t in later:
        t[..., j + 1 :, :] = 10**log_garbage * torch.randn(t[..., j + 1 :, :].shape, generator=g)
    with torch.no_grad():
        full = attn(q, k, v, causal=True)
        changed = attn(*later, causal=True)
    assert torch.equal(full[..., : j + 1, :], changed[..., : j + 1, :])


# -- (d) empty sequences --------------------------------------------------------------------------
@pytest.mark.parametrize("fmap", MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_random_features_empty_sequence(fmap: str, causal: bool) -> None:
    attn = _rf(fmap)
    if causal and attn.feature_map.data_dependent:
        pytest.skip("data-dependent maps are not causal")
    q, k, v = (torch.zeros(2, 3, 0, D, requires_grad=True) for _ in range(3))
    for mask in (None, torch.zeros(2, 0, dtype=torch.bool)):
        out = attn(q, k, v, mask=mask, causal=causal)
        assert out.shape == (2, 3, 0, D)
        out.sum().backward()
        assert all(t.grad is None or torch.isfinite(t.grad).all() for t in (q, k, v))
