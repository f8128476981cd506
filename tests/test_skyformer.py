"""Skyformer (arXiv 2111.00035), Nyströmformer (2102.03902), their pseudo-inverse and landmarks."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.attention.landmarks import segment_means, systematic_indices, uniform_indices
from spectra.attention.skyformer import gaussian_kernel
from spectra.ops.pinv import newton_schulz_pinv
from spectra.registry import ATTENTIONS

DT = torch.float64


def _qkv(b: int, h: int, length: int, d: int, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, length, d, generator=g, dtype=DT) * scale for _ in range(3))


def _exact_gaussian_attention(q, k, v):
    d = q.shape[-1]
    return gaussian_kernel(q * d**-0.25, k * d**-0.25) @ v


# -- Newton–Schulz pseudo-inverse ---------------------------------------------------------------
def test_newton_schulz_matches_pinv_on_spd() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 12, 12, generator=g, dtype=DT)
    spd = a @ a.transpose(-1, -2) / 12 + torch.eye(12, dtype=DT)  # condition number ≲ 10
    ref = torch.linalg.pinv(spd)
    approx = newton_schulz_pinv(spd, iterations=12)
    torch.testing.assert_close(approx, ref, rtol=1e-8, atol=1e-8)
    # the default 6 iterations are already close on a well-conditioned matrix
    rel = (newton_schulz_pinv(spd, 6) - ref).norm() / ref.norm()
    assert rel < 1e-3


def test_newton_schulz_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        newton_schulz_pinv(torch.rand(3, 4))
    with pytest.raises(ValueError, match="iterations"):
        newton_schulz_pinv(torch.eye(3), iterations=-1)


# -- landmarks ----------------------------------------------------------------------------------
def test_segment_means_ignore_padding_and_cover_all_tokens() -> None:
    x = torch.arange(10, dtype=DT).reshape(1, 1, 10, 1)
    mask = torch.tensor([[True, False, True, True, False, True, True, True, False, True]])
    means, valid = segment_means(x, mask, 3)  # real 0 2 3 5 6 7 9: ⌊3r/7⌋ → {0,2,3} {5,6} {7,9}
    assert valid.all()
    torch.testing.assert_close(means.flatten(), torch.tensor([5 / 3, 5.5, 8.0], dtype=DT))
    means, valid = segment_means(x, mask, 9)  # more slots than tokens: one token each
    assert valid.sum() == 7
    kept = means.flatten()[valid.flatten()]
    torch.testing.assert_close(kept, torch.tensor([0, 2, 3, 5, 6, 7, 9], dtype=DT))


def test_landmark_indices_pick_real_tokens_only() -> None:
    mask = torch.tensor([[True, False, True, True, False, True], [False] * 6])
    for pos, valid in (
        systematic_indices(mask, 2, 6, 3, "cpu"),
        uniform_indices(mask, 2, 6, 3, "cpu", torch.Generator().manual_seed(0)),
    ):
        assert valid[0].all() and not valid[1].any()
        assert mask[0, pos[0]].all()
        assert len(set(pos[0].tolist())) == 3  # without replacement (ours; the authors: with)
    pos, valid = uniform_indices(mask, 2, 6, 8, "cpu")
    assert valid[0].sum() == 4 and mask[0, pos[0][valid[0]]].all()


# -- Skyformer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("landmarks", ["uniform", "segment_means"])
@pytest.mark.parametrize("training", [False, True])
def test_skyformer_with_all_tokens_as_landmarks_is_exact(landmarks: str, training: bool) -> None:
    """s = 2L landmarks (every query and key), λ = 0: Nyström reproduces κ(Q, K) V exactly,
    given enough Newton–Schulz iterations (40 here; how many are needed: the next test)."""
    length, d = 6, 4
    q, k, v = _qkv(2, 2, length, d, seed=1, scale=2.0)  # spread-out points: κ(X̄, X̄) ≈ I
    attn = ATTENTIONS.build(
        "skyformer",
        head_dim=d,
        num_landmarks=2 * length,
        regularization=0.0,
        pinv_iterations=40,
        landmarks=landmarks,
    ).train(training)
    torch.testing.assert_close(
        attn(q, k, v), _exact_gaussian_attention(q, k, v), rtol=1e-7, atol=1e-9
    )


def _newton_schulz_start(q, k) -> float:
    """μ₀ = λ_min(M)²/‖M‖₁² (smallest over heads) for Skyformer's normalized landmark matrix
    M = D^(-1/2) κ(X̄, X̄) D^(-1/2) with all tokens as landmarks and λ = 0."""
    d = q.shape[-1]
    z = torch.cat([q, k], dim=2) * d**-0.25
    c = gaussian_kernel(z, z)
    d_inv_sqrt = c.sum(-1).rsqrt()
    m = d_inv_sqrt[..., :, None] * c * d_inv_sqrt[..., None, :]
    mu0 = torch.linalg.eigvalsh(m)[..., 0] ** 2 / m.abs().sum(-1).amax(-1) ** 2
    return float(mu0.min())


@pytest.mark.parametrize(
    ("length", "d", "scale", "seed"), [(6, 4, 1.0, 1), (32, 8, 1.0, 1), (64, 8, 0.7, 2)]
)
def test_skyformer_exact_after_enough_newton_schulz_iterations(length, d, scale, seed) -> None:
    """s = 2L, λ = 0 is exact once ⌈log(1/μ₀)/log(13/4)⌉ + 3 Newton–Schulz iterations have run
    (here 13, 13 and 20); the default 6 is far from exact on the same inputs, and two fewer
    iterations than the rule are not exact either (so the rule is not loose)."""
    q, k, v = _qkv(1, 2, length, d, seed=seed, scale=scale)
    exact = _exact_gaussian_attention(q, k, v)
    needed = math.ceil(math.log(1 / _newton_schulz_start(q, k)) / math.log(13 / 4)) + 3

    def err(iterations: int) -> float:
        attn = ATTENTIONS.build(
            "skyformer",
            head_dim=d,
            num_landmarks=2 * length,
            regularization=0.0,
            pinv_iterations=iterations,
        ).eval()
        return float((attn(q, k, v) - exact).norm() / exact.norm())

    assert needed >= 12
    assert err(needed) < 1e-10
    assert err(needed - 2) > 1e-9
    assert err(6) > 1e-3


def test_skyformer_error_shrinks_with_landmarks() -> None:
    length, d = 96, 8
    q, k, v = _qkv(1, 2, length, d, seed=2, scale=0.7)
    exact = _exact_gaussian_attention(q, k, v)

    def err(s: int) -> float:
        attn = ATTENTIONS.build(
            "skyformer", head_dim=d, num_landmarks=s, regularization=1e-6, pinv_iterations=30
        ).eval()
        return float((attn(q, k, v) - exact).norm() / exact.norm())

    e_small, e_large = err(8), err(96)
    assert e_large < 0.5 * e_small
    assert e_large < 0.2


def test_skyformer_landmarks_random_in_training_deterministic_in_eval() -> None:
    q, k, v = _qkv(1, 2, 40, 8, seed=3)
    attn = ATTENTIONS.build("skyformer", head_dim=8, num_landmarks=8)
    attn.eval()
    torch.testing.assert_close(attn(q, k, v), attn(q, k, v), rtol=0, atol=0)
    attn.train()
    torch.manual_seed(0)
    a = attn(q, k, v)
    assert not torch.allclose(a, attn(q, k, v))


def test_skyformer_default_regularization_matches_its_formula() -> None:
    """The default path (λ = 0.1, normalized landmark matrix, NS inverse) equals the plain
    formula κ(Q,Z)(κ(Z,Z)+λI)⁻¹κ(Z,K)V with Z the chosen landmarks."""
    length, d = 10, 4
    q, k, v = _qkv(1, 1, length, d, seed=4)
    attn = ATTENTIONS.build(
        "skyformer", head_dim=d, num_landmarks=2 * length, pinv_iterations=40
    ).eval()
    x, y = q * d**-0.25, k * d**-0.25
    z = torch.cat([x, y], dim=2)
    inv = torch.linalg.inv(gaussian_kernel(z, z) + 0.1 * torch.eye(2 * length, dtype=DT))
    ref = gaussian_kernel(x, z) @ inv @ gaussian_kernel(z, y) @ v
    torch.testing.assert_close(attn(q, k, v), ref, rtol=1e-7, atol=1e-9)


# -- Nyströmformer ------------------------------------------------------------------------------
def test_nystromformer_with_all_tokens_as_landmarks_is_softmax() -> None:
    length, d = 8, 4
    q, k, v = _qkv(2, 2, length, d, seed=5)
    nys = ATTENTIONS.build("nystromformer", head_dim=d, num_landmarks=length, pinv_iterations=40)
    ref = ATTENTIONS.build("softmax", head_dim=d)(q, k, v)
    torch.testing.assert_close(nys(q, k, v), ref, rtol=1e-7, atol=1e-9)


def test_nystromformer_exact_on_segment_constant_sequences() -> None:
    """Queries and keys constant on each of the s segments (values arbitrary): the segment means
    are the distinct tokens and the Nyström formula equals softmax attention."""
    length, d, s = 32, 4, 8
    g = torch.Generator().manual_seed(6)
    q = torch.randn(1, 2, s, d, generator=g, dtype=DT).repeat_interleave(length // s, dim=2)
    k = torch.randn(1, 2, s, d, generator=g, dtype=DT).repeat_interleave(length // s, dim=2)
    v = torch.randn(1, 2, length, 3, generator=g, dtype=DT)
    ref = ATTENTIONS.build("softmax", head_dim=d)(q, k, v)
    nys = ATTENTIONS.build("nystromformer", head_dim=d, num_landmarks=s, pinv_iterations=40)
    torch.testing.assert_close(nys(q, k, v), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["skyformer", "nystromformer"])
def test_nystrom_attentions_reject_causal_and_bad_options(name: str) -> None:
    attn = ATTENTIONS.build(name, head_dim=4, num_landmarks=4)
    q = torch.randn(1, 1, 6, 4)
    with pytest.raises(ValueError, match="causal"):
        attn(q, q, q, causal=True)
    with pytest.raises(ValueError, match="num_landmarks"):
        ATTENTIONS.build(name, head_dim=4, num_landmarks=0)
    with pytest.raises(ValueError, match="pinv_iterations"):
        ATTENTIONS.build(name, head_dim=4, pinv_iterations=-2)
    with pytest.raises(ValueError, match="unknown option"):
        ATTENTIONS.build(name, head_dim=4, num_features=4)
    with pytest.raises(ValueError, match="landmarks"):
        ATTENTIONS.build("skyformer", head_dim=4, landmarks="kmeans")
