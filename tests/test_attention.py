"""Attention modules: softmax, random features (every sampler × feature map), Nyström types.

Parametrized over the registries, so newly registered components are covered automatically.
"""

from __future__ import annotations

import math

import pytest
import torch

from spectra.attention import random_features
from spectra.attention.base import layer_seed
from spectra.features.maps.base import ExponentialFeatureMap
from spectra.features.maps.stats import masked_mean
from spectra.features.samplers.base import seeded_generator
from spectra.ops import linear_attention_naive
from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, UnknownComponentError

DT = torch.float64
D = 8  # head dim used by most tests

# Small, cheap options per attention (an attention without an entry is built with head_dim only).
SMALL = {
    "random_features": {"num_features": 32, "sampler": "gaussian"},
    "skyformer": {"num_landmarks": 8},
    "nystromformer": {"num_landmarks": 4},
    "linformer": {"proj_length": 4, "max_length": 16},
    "reformer": {"n_buckets": 4, "chunk_size": 4},
    "bigbird": {"block_size": 2, "num_global_blocks": 1, "num_random_blocks": 1},
    "informer": {"factor": 1},
}
ALL_ATTENTIONS = ATTENTIONS.names()
ALL_MAPS = FEATURE_MAPS.names()
ALL_SAMPLERS = SAMPLERS.names()


def _build(name: str, d: int = D, **options):
    return ATTENTIONS.build(name, head_dim=d, **{**SMALL.get(name, {}), **options}).eval()


def _causal_ok(name: str) -> bool:
    return getattr(ATTENTIONS.get(name), "supports_causal", True)


def _qkv(b=2, h=2, length=10, d=D, dv=None, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, length, d, generator=g, dtype=dtype) * scale
    k = torch.randn(b, h, length, d, generator=g, dtype=dtype) * scale
    v = torch.randn(b, h, length, dv or d, generator=g, dtype=dtype)
    return q, k, v


def _rf(feature_map: str, **options):
    return _build("random_features", feature_map=feature_map, **options)


def test_required_attentions_are_registered() -> None:
    assert {"softmax", "random_features", "skyformer", "nystromformer", "linear"} <= set(
        ALL_ATTENTIONS
    )


@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_output_shape_with_other_value_dim(name: str) -> None:
    q, k, v = _qkv(dv=5)
    out = _build(name)(q, k, v)
    assert out.shape == (2, 2, 10, 5) and out.dtype == v.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_cross_attention_lengths(name: str) -> None:
    """Lq ≠ Lk (no mask): output (B, H, Lq, d_v), finite; causal needs Lq = Lk. Attentions that
    declare ``self_attention_only`` (reformer, bigbird) raise instead."""
    q, _, _ = _qkv(length=5, seed=13)
    _, k, v = _qkv(length=7, dv=3, seed=14)
    attn = _build(name)
    if getattr(attn, "self_attention_only", False):
        with pytest.raises(ValueError, match="Lq = Lk"):
            attn(q, k, v)
        return
    out = attn(q, k, v)
    assert out.shape == (2, 2, 5, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        attn(q, k, v, causal=True)


# -- softmax ------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_matches_explicit_formula(causal: bool) -> None:
    q, k, v = _qkv(dtype=DT)
    logits = q @ k.transpose(-1, -2) / math.sqrt(D)
    if causal:
        logits = logits.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), -math.inf)
    ref = torch.softmax(logits, -1) @ v
    torch.testing.assert_close(_build("softmax")(q, k, v, causal=causal), ref)


# -- random features converge to softmax --------------------------------------------------------
def _unbiased_samplers() -> list[str]:
    names = []
    for name in ALL_SAMPLERS:
        sampler = SAMPLERS.build(name, dim=16, num_features=64)
        if getattr(sampler, "marginally_gaussian", False):
            names.append(name)
    return names


@pytest.mark.parametrize("sampler", _unbiased_samplers())
def test_random_features_converge_to_softmax(sampler: str) -> None:
    """posrf with unbiased samplers: error at m = 4096 well below m = 64 (√64 = 8× in theory)."""
    q, k, v = _qkv(b=1, h=2, length=24, d=16, dtype=DT, seed=1, scale=0.6)  # ‖x‖ ≈ 1.2
    exact = _build("softmax", d=16)(q, k, v)

    def rel_error(m: int) -> float:
        errs = []
        for seed in range(3):
            rf = _build("random_features", d=16, num_features=m, sampler=sampler, seed=seed)
            errs.append(float((rf(q, k, v).detach() - exact).norm() / exact.norm()))
        return sum(errs) / len(errs)

    small, large = rel_error(64), rel_error(4096)
    assert large < small / 3, (small, large)
    assert large < 0.25  # ≈ 0.1 expected; the output norm is small (averaged values)


# -- padding ------------------------------------------------------------------------------------
def _padded_copy(q, k, v, real: torch.Tensor, seed: int = 99):
    """Insert garbage tokens where ``real`` (L',) is False; returns padded q, k, v and mask."""
    g = torch.Generator().manual_seed(seed)
    b, h, _, _ = q.shape
    total = real.numel()

    def spread(t):
        out = torch.randn(b, h, total, t.shape[-1], generator=g, dtype=t.dtype) * 5
        out[:, :, real] = t
        return out

    mask = real.expand(b, total).clone()
    return spread(q), spread(k), spread(v), mask


def _padding_cases(name: str, fmap: str | None = None):
    options = {} if fmap is None else {"feature_map": fmap}
    return name, options


PADDING_CASES = [(n, {}) for n in ALL_ATTENTIONS if n != "random_features"] + [
    ("random_features", {"feature_map": f}) for f in ALL_MAPS
]


@pytest.mark.parametrize(("name", "options"), PADDING_CASES, ids=lambda x: str(x))
def test_padding_leaves_real_tokens_unchanged(name: str, options: dict) -> None:
    q, k, v = _qkv(length=10, seed=2)
    attn = _build(name, **options)
    ref = attn(q, k, v)
    real = torch.ones(14, dtype=torch.bool)
    real[[0, 4, 11, 13]] = False  # padding before, inside and after the real tokens
    qp, kp, vp, mask = _padded_copy(q, k, v, real)
    out = attn(qp, kp, vp, mask=mask)
    torch.testing.assert_close(out[:, :, real], ref, rtol=1e-4, atol=1e-5)
    assert (out[:, :, ~real] == 0).all()


CAUSAL_PADDING_CASES = [(n, {}) for n in ALL_ATTENTIONS if n != "random_features"] + [
    ("random_features", {"feature_map": f, "chunk_size": 4})
    for f in ALL_MAPS
    if not FEATURE_MAPS.get(f).data_dependent
]


@pytest.mark.parametrize(("name", "options"), CAUSAL_PADDING_CASES, ids=lambda x: str(x))
def test_causal_right_padding_leaves_real_tokens_unchanged(name: str, options: dict) -> None:
    if not _causal_ok(name):
        pytest.skip(f"{name} has no causal mode")
    q, k, v = _qkv(length=9, seed=3)
    attn = _build(name, **options)
    ref = attn(q, k, v, causal=True)
    real = torch.arange(13) < 9
    qp, kp, vp, mask = _padded_copy(q, k, v, real)
    out = attn(qp, kp, vp, mask=mask, causal=True)
    torch.testing.assert_close(out[:, :, real], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), PADDING_CASES, ids=lambda x: str(x))
@pytest.mark.parametrize("causal", [False, True])
def test_all_padding_rows_are_zero_not_nan(name: str, options: dict, causal: bool) -> None:
    attn = _build(name, **options)
    if causal and (
        not _causal_ok(name) or (name == "random_features" and attn.feature_map.data_dependent)
    ):
        pytest.skip("no causal mode")
    q, k, v = (t.requires_grad_(True) for t in _qkv(length=6, seed=4))
    mask = torch.tensor([[False] * 6, [False, True, True, False, True, True]])
    out = attn(q, k, v, mask=mask, causal=causal)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all()
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


# -- causal random features vs the explicit reference -------------------------------------------
@pytest.mark.parametrize("fmap", [f for f in ALL_MAPS if not FEATURE_MAPS.get(f).data_dependent])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
def test_random_features_causal_matches_masked_quadratic(fmap: str, chunk_size: int) -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv(length=11, dtype=DT, seed=5))
    attn = _rf(fmap, chunk_size=chunk_size)
    out = attn(q, k, v, causal=True)
    x, y = q * D**-0.25, k * D**-0.25
    # natural-scale features (no stabilizer): the estimator itself, with the guard of
    # spectra.ops.linear (no ε for positive maps; |den| ≥ ε on the natural scale for signed)
    phi_x, phi_y = attn.feature_map(x, y, attn.current_weight().to(DT), stabilize=False)
    scores = (phi_x @ phi_y.transpose(-1, -2)).tril()
    num, den = scores @ v, scores.sum(-1, keepdim=True)
    if attn.feature_map.positive:
        ref = num / den
    else:
        ref = num / torch.where(den >= 0, den.clamp_min(attn.eps), den.clamp_max(-attn.eps))
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


# -- fast non-causal path == naive reference, every feature map ---------------------------------
@pytest.mark.parametrize("fmap", ALL_MAPS)
@pytest.mark.parametrize("masked", [False, True])
def test_random_features_fast_path_matches_naive(fmap: str, masked: bool) -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv(length=9, dtype=DT, seed=6))
    mask = None
    if masked:
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[0, 6:] = False
        mask[1, :2] = False
    attn = _rf(fmap)
    out = attn(q, k, v, mask=mask)
    x, y = q * D**-0.25, k * D**-0.25
    tm = None if mask is None else mask[:, None, :].expand(2, 2, 9)
    phi_x, phi_y = attn.feature_map(x, y, attn.current_weight().to(DT), tm, tm, stabilize=False)
    ref = linear_attention_naive(phi_x, phi_y, v, eps=attn.eps, positive=attn.feature_map.positive)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-11)
    grads = torch.autograd.grad((out * v.detach()).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * v.detach()).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_float32_fast_path_close_to_float64() -> None:
    q, k, v = _qkv(length=16, seed=7)
    attn = _rf("posrf")
    out32 = attn(q, k, v)
    out64 = attn(q.double(), k.double(), v.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-5)


# -- gradcheck ----------------------------------------------------------------------------------
GRADCHECK = [
    ("random_features", {"feature_map": "posrf"}),
    ("softmax", {}),
    ("skyformer", {"num_landmarks": 4}),
    ("nystromformer", {"num_landmarks": 3}),
    ("linear", {}),
    ("kernelized", {}),
    ("kernelized", {"implementation": "dense"}),
    ("linformer", {"proj_length": 3, "max_length": 6}),
    ("reformer", {"n_buckets": 2, "chunk_size": 2}),
    ("bigbird", {"block_size": 1, "num_global_blocks": 1, "num_random_blocks": 1}),
    ("informer", {"factor": 1}),
]


@pytest.mark.parametrize(("name", "options"), GRADCHECK, ids=lambda x: str(x))
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(name: str, options: dict, causal: bool) -> None:
    if causal and not _causal_ok(name):
        pytest.skip("no causal mode")
    attn = _build(name, d=4, **options)
    q, k, v = (t.requires_grad_(True) for t in _qkv(b=1, h=1, length=5, d=4, dtype=DT, seed=8))
    mask = torch.tensor([[True, True, False, True, True]])
    assert torch.autograd.gradcheck(lambda a, b, c: attn(a, b, c, causal=causal), (q, k, v))
    assert torch.autograd.gradcheck(
        lambda a, b, c: attn(a, b, c, mask=mask, causal=causal), (q, k, v)
    )


# -- numerics -----------------------------------------------------------------------------------
def _large_norm_qkv(norm_factor: float, seed: int = 9):
    """q, k with norms spread up to ``norm_factor``·d^¼ (so ‖x‖ = ‖q‖·d^(-1/4) ≤ norm_factor)."""
    q, k, v = _qkv(length=12, seed=seed)
    radii = torch.linspace(0.1, 1.0, 12)[None, None, :, None] * norm_factor * D**0.25
    return q / q.norm(dim=-1, keepdim=True) * radii, k / k.norm(dim=-1, keepdim=True) * radii, v


@pytest.mark.parametrize("fmap", ALL_MAPS)
@pytest.mark.parametrize("autocast", [False, True])
def test_finite_for_large_norms(fmap: str, autocast: bool) -> None:
    q, k, v = (t.requires_grad_(True) for t in _large_norm_qkv(10.0))
    attn = _rf(fmap, num_features=64)
    causal_modes = [False] if attn.feature_map.data_dependent else [False, True]
    for causal in causal_modes:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = attn(q, k, v, causal=causal)
            if autocast:  # bf16 inputs as a model under autocast would give
                out_bf16 = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=causal)
                assert torch.isfinite(out_bf16.float()).all()
        assert torch.isfinite(out).all(), (fmap, causal)
        grads = torch.autograd.grad(out.float().sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads), (fmap, causal)


@pytest.mark.parametrize("fmap", ALL_MAPS)
def test_stabilizer_does_not_change_float64_result(fmap: str) -> None:
    q, k, v = _qkv(length=10, dtype=DT, seed=10, scale=0.8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    on = _rf(fmap, stabilize=True, eps=1e-300)
    off = _rf(fmap, stabilize=False, eps=1e-300)
    modes = [False] if on.feature_map.data_dependent else [False, True]
    for causal in modes:
        a = on(q, k, v, mask=mask, causal=causal)
        b = off(q, k, v, mask=mask, causal=causal)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# -- redraw -------------------------------------------------------------------------------------
def _step(attn, train: bool = True) -> None:
    attn.train(train)
    q, k, v = _qkv(b=1, h=1, length=4, seed=11)
    attn(q, k, v)


def test_redraw_every_n_training_steps_not_in_eval() -> None:
    attn = _build("random_features", redraw_interval=3)
    w_init = attn.weight.clone()
    used = []  # W used by training steps 0..6 (a redraw happens at the start of its step)
    for _ in range(7):
        _step(attn)
        used.append(attn.weight.clone())
    assert torch.equal(w_init, used[0])
    assert torch.equal(used[0], used[1]) and torch.equal(used[1], used[2])
    assert not torch.equal(used[2], used[3])
    assert torch.equal(used[3], used[4]) and torch.equal(used[4], used[5])
    assert not torch.equal(used[5], used[6])
    w, counter = attn.weight.clone(), int(attn.redraw_step)
    for _ in range(5):
        _step(attn, train=False)
    assert torch.equal(w, attn.weight) and int(attn.redraw_step) == counter


def test_no_redraw_without_interval() -> None:
    attn = _build("random_features")
    w = attn.weight.clone()
    for _ in range(4):
        _step(attn)
    assert torch.equal(w, attn.weight)


def test_redraw_is_deterministic_in_seed_layer_step() -> None:
    a = _build("random_features", seed=5, layer_index=2)
    b = _build("random_features", seed=5, layer_index=2)
    c = _build("random_features", seed=5, layer_index=3)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    a.redraw(7)
    b.redraw(7)
    assert torch.equal(a.weight, b.weight)
    c.redraw(7)
    assert not torch.equal(a.weight, c.weight)
    b.redraw(8)
    assert not torch.equal(a.weight, b.weight)
    # two independent instances trained in lock-step draw the same W (no communication)
    a = _build("random_features", seed=1, redraw_interval=2)
    b = _build("random_features", seed=1, redraw_interval=2)
    for _ in range(5):
        _step(a)
        _step(b)
        assert torch.equal(a.weight, b.weight)
    # the construction-time W of an unnumbered layer is sampler.sample(seeded_generator(seed))
    fresh = _build("random_features", seed=4)
    expected = fresh.sampler.sample(seeded_generator(4), dtype=torch.float32)
    assert torch.equal(fresh.weight, expected)


def test_weight_and_counter_are_in_state_dict_and_resume() -> None:
    a = _build("random_features", redraw_interval=2, seed=3)
    for _ in range(3):
        _step(a)
    state = a.state_dict()
    assert {"weight", "redraw_step"} <= set(state)
    assert int(state["redraw_step"]) == 3
    b = _build("random_features", redraw_interval=2, seed=3)
    b.load_state_dict(state)
    assert torch.equal(a.weight, b.weight)
    for _ in range(3):  # resumed training redraws at the same steps as uninterrupted training
        _step(a)
        _step(b)
        assert torch.equal(a.weight, b.weight)


def _learnable_samplers() -> list[str]:
    return [n for n in ALL_SAMPLERS if SAMPLERS.build(n, dim=D, num_features=16).learnable]


@pytest.mark.parametrize("sampler", _learnable_samplers())
def test_learnable_samplers_get_gradients_and_are_never_redrawn(sampler: str) -> None:
    attn = _build("random_features", sampler=sampler, num_features=16, redraw_interval=1).train()
    assert attn.weight is None and "weight" not in attn.state_dict()
    w0 = attn.current_weight().detach().clone()
    q, k, v = _qkv(b=1, h=2, length=6, seed=12)
    for _ in range(3):
        attn(q, k, v).square().sum().backward()
    params = [p for p in attn.sampler.parameters() if p.requires_grad]
    assert params
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)
    torch.testing.assert_close(attn.current_weight().detach(), w0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="learnable"):
        attn.redraw(1)


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_component_names_list_the_registered_ones() -> None:
    with pytest.raises(UnknownComponentError) as info:
        ATTENTIONS.build("random_features", head_dim=D, sampler="gausian")
    assert "gaussian" in str(info.value) and "orthogonal" in str(info.value)
    with pytest.raises(UnknownComponentError) as info:
        ATTENTIONS.build("random_features", head_dim=D, feature_map="posfr")
    assert "posrf" in str(info.value) and "trig" in str(info.value)
    with pytest.raises(UnknownComponentError, match="softmax"):
        ATTENTIONS.build("softmx", head_dim=D)


@pytest.mark.parametrize("m", [0, -3, 2.5, True])
def test_non_positive_num_features_raise(m) -> None:
    with pytest.raises(ValueError, match="num_features"):
        ATTENTIONS.build("random_features", head_dim=D, num_features=m, sampler="gaussian")


@pytest.mark.parametrize(
    "bad",
    [
        {"redraw_interval": 0},
        {"chunk_size": 0},
        {"eps": 0.0},
        {"seed": "one"},
        {"sampler_options": {"dim": 3}},
        {"feature_map_options": 3},
    ],
)
def test_bad_random_feature_options_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        _build("random_features", **bad)


@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_unknown_build_options_raise(name: str) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        ATTENTIONS.build(name, head_dim=D, not_an_option=1)
    with pytest.raises(ValueError, match="head_dim"):
        ATTENTIONS.build(name, head_dim=0)


@pytest.mark.parametrize("fmap", [f for f in ALL_MAPS if FEATURE_MAPS.get(f).data_dependent])
def test_data_dependent_map_in_causal_mode_raises(fmap: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="data-independent"):
        _rf(fmap)(q, k, v, causal=True)


@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_malformed_inputs_raise(name: str) -> None:
    attn = _build(name)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="head dims"):
        attn(q, k[..., :4], v)
    with pytest.raises(ValueError, match="head dims"):
        attn(q[..., :4], k[..., :4], v)  # built for head_dim = 8
    with pytest.raises(ValueError, match="mask"):
        attn(q, k, v, mask=torch.ones(2, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        attn(q, k, v, mask=torch.ones(2, 10))
    with pytest.raises(ValueError, match=r"\(B, H, L, d\)"):
        attn(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="same length"):
        attn(q, k, v[:, :, :5])


# -- which non-causal path a map takes ----------------------------------------------------------
def _fused_must_not_run(*args, **kwargs):
    raise AssertionError("the fused path (L×M log-features) ran")


@pytest.mark.parametrize(
    "fmap",
    [
        f
        for f in ALL_MAPS
        if issubclass(FEATURE_MAPS.get(f), ExponentialFeatureMap)
        and FEATURE_MAPS.build(f).has_rowwise_exponents
    ],
)
def test_exponential_maps_stream_rows_and_never_store_log_features(fmap: str, monkeypatch) -> None:
    """Every map with a row-wise form (data-dependent ones included) takes the chunked path."""
    monkeypatch.setattr(random_features, "exp_linear_attention", _fused_must_not_run)
    q, k, v = _qkv(length=12, seed=3)
    out = _rf(fmap)(q, k, v)
    assert torch.isfinite(out).all()


class _ExponentsOnly(ExponentialFeatureMap):
    """A plugin-style data-dependent map that implements ``exponents`` only (posrf on inputs
    scaled by one data statistic): it must still work, through the fused path."""

    data_dependent = True

    def exponents(self, x, y, w, x_mask=None, y_mask=None):
        c = 1.0 / (1.0 + masked_mean(y.square().sum(-1, keepdim=True), y_mask).squeeze(-1))
        c = c[..., None, None].sqrt()

        def posrf(t):
            t = t * c
            return t @ w.transpose(-1, -2) - 0.5 * t.square().sum(-1, keepdim=True)

        return posrf(x), posrf(y)


def test_map_with_exponents_only_uses_fused_path_and_matches_naive() -> None:
    fm = _ExponentsOnly()
    assert not fm.has_rowwise_exponents
    with pytest.raises(NotImplementedError, match="rowwise_exponents"):
        fm.rowwise_exponents(torch.ones(1, 2), torch.ones(1, 2), torch.ones(3, 2))
    attn = _rf("posrf")
    attn.feature_map = fm
    q, k, v = (t.requires_grad_(True) for t in _qkv(length=9, dtype=DT, seed=4))
    out = attn(q, k, v)
    phi_x, phi_y = fm(q * D**-0.25, k * D**-0.25, attn.current_weight().to(DT))
    ref = linear_attention_naive(phi_x, phi_y, v, eps=attn.eps)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-11)


def test_exponential_map_without_exponents_says_what_to_implement() -> None:
    class Nothing(ExponentialFeatureMap):
        data_dependent = True

    with pytest.raises(NotImplementedError, match="statistics\\(\\) and rowwise_exponents"):
        Nothing().exponents(torch.ones(1, 2), torch.ones(1, 2), torch.ones(3, 2))


# -- the base class runs attend() in the compute dtype ------------------------------------------
def test_attend_sees_float32_without_autocast_and_output_keeps_the_input_dtype() -> None:
    from spectra.attention.base import Attention

    seen = {}

    class Probe(Attention):
        def attend(self, q, k, v, mask, causal):
            seen.update(dtype=q.dtype, v_dtype=v.dtype, autocast=torch.is_autocast_enabled("cpu"))
            return v

    q, k, v = (t.to(torch.bfloat16) for t in _qkv())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Probe(D)(q, k, v)
    assert seen == {"dtype": torch.float32, "v_dtype": torch.float32, "autocast": False}
    assert out.dtype == torch.bfloat16
    Probe(D)(*(t.double() for t in (q, k, v)))
    assert seen["dtype"] == torch.float64
    with pytest.raises(ValueError, match="head dims"):
        Probe(D)(q, k[..., :4], v)  # validated before attend()
    with pytest.raises(NotImplementedError, match="attend"):
        Attention(D)(q, k, v)


@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_bf16_inputs_give_bf16_finite_outputs(name: str) -> None:
    q, k, v = (t.to(torch.bfloat16) for t in _qkv())
    out = _build(name)(q, k, v)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# -- base contract: seed and layer_index ------------------------------------------------------
@pytest.mark.parametrize("name", ALL_ATTENTIONS)
def test_every_attention_takes_seed_and_layer_index(name) -> None:
    attention = _build(name, seed=7, layer_index=3)
    assert (attention.seed, attention.layer_index) == (7, 3)
    assert attention.draw_seed == layer_seed(7, 3)
    unnumbered = _build(name)
    assert (unnumbered.seed, unnumbered.layer_index, unnumbered.draw_seed) == (0, None, 0)


@pytest.mark.parametrize(
    "bad", [{"seed": "1"}, {"seed": True}, {"layer_index": -1}, {"layer_index": 1.5}]
)
def test_bad_seed_or_layer_index_is_refused(bad) -> None:
    with pytest.raises(ValueError, match=r"seed must be an int|layer_index must be None or"):
        _build("softmax", **bad)


@pytest.mark.parametrize(
    "name", [n for n in ("bigbird", "informer", "reformer") if n in ALL_ATTENTIONS]
)
def test_layer_draws_are_seeded_by_seed_and_layer(name) -> None:
    """Layer i of seed s draws what an unnumbered module of seed ``layer_seed(s, i)`` draws
    (the rule the presets' comments state: seed * 1000003 + i)."""
    q, k, v = _qkv(length=16)
    layer = _build(name, seed=5, layer_index=2)
    assert torch.equal(layer(q, k, v), _build(name, seed=5 * 1_000_003 + 2)(q, k, v))
