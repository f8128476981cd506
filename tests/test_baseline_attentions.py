"""The baseline attentions of the Spectraformer table against naive dense references.

kernelized (Skyformer's exact Gaussian-kernel attention, arXiv 2111.00035), linformer
(2006.04768), reformer (2001.04451), bigbird (2007.14062) and informer (2012.07436): each against
an independent loop/dense implementation and its softmax limit, plus empty inputs, float32 vs
float64, padding, bad options and one training step through ``train.py``'s config path.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL

from spectra.attention.sparse_utils import stateless_uniform, valid_first_order
from spectra.registry import ATTENTIONS

DT = torch.float64
BASELINES = ["kernelized", "linformer", "reformer", "bigbird", "informer"]
SMALL = {
    "linformer": {"proj_length": 8, "max_length": 64},
    "reformer": {"n_buckets": 4, "chunk_size": 4, "n_hashes": 2},
    "bigbird": {"block_size": 4, "num_global_blocks": 1, "num_random_blocks": 2},
    "informer": {"factor": 2},
}


def _build(name: str, d: int = 8, **options):
    return ATTENTIONS.build(name, head_dim=d, **{**SMALL.get(name, {}), **options}).eval()


def _qkv(b=2, h=2, length=12, d=8, dv=None, dtype=DT, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, length, d, generator=g, dtype=dtype) * scale
    k = torch.randn(b, h, length, d, generator=g, dtype=dtype) * scale
    v = torch.randn(b, h, length, dv or d, generator=g, dtype=dtype)
    return q, k, v


def _mask(b=2, length=12) -> torch.Tensor:
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, [1, 5, 11]] = False  # padding inside and at the end
    mask[1, 8:] = False
    return mask


def _softmax_ref(q, k, v, mask=None, causal=False):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.ones_like(logits, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones_like(allowed).tril()
    probs = torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1).nan_to_num(0.0)
    out = probs @ v
    return out if mask is None else out * mask[:, None, :, None]


# -- contract shared by the five ----------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("masked", [False, True])
def test_empty_sequence_gives_empty_output_and_finite_grads(name: str, masked: bool) -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv(length=0, dv=3))
    mask = torch.zeros(2, 0, dtype=torch.bool) if masked else None
    out = _build(name)(q, k, v, mask=mask)
    assert out.shape == (2, 2, 0, 3)
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_float32_matches_float64_rowwise(name: str, sigma: float) -> None:
    attn = _build(name, d=16)
    q, k, v = _qkv(length=40, d=16, seed=3, scale=sigma)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 29:] = False
    for m in (None, mask):
        ref = attn(q, k, v, mask=m)
        out = attn(q.float(), k.float(), v.float(), mask=m).double()
        rel = (out - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-30)
        rel = rel.masked_fill(ref.norm(dim=-1) == 0, 0.0)
        assert rel.max() <= 1e-4, (name, sigma, float(rel.max()))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("kernelized", {"implementation": "flash"}, "implementation"),
        ("linformer", {"proj_length": 0}, "proj_length"),
        ("linformer", {"max_length": -1}, "max_length"),
        ("linformer", {"share_kv": 1}, "share_kv"),
        ("reformer", {"n_hashes": 0}, "n_hashes"),
        ("reformer", {"n_buckets": 3}, "n_buckets"),
        ("reformer", {"chunk_size": 2.0}, "chunk_size"),
        ("reformer", {"seed": "x"}, "seed"),
        ("bigbird", {"block_size": 0}, "block_size"),
        ("bigbird", {"num_window_blocks": 2}, "odd"),
        ("bigbird", {"num_global_blocks": -1}, "num_global_blocks"),
        ("bigbird", {"num_random_blocks": True}, "num_random_blocks"),
        ("informer", {"factor": 0}, "factor"),
        ("informer", {"seed": 1.5}, "seed"),
    ],
)
def test_bad_options_raise(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ATTENTIONS.build(name, head_dim=8, **options)


@pytest.mark.parametrize("name", ["linformer", "bigbird", "informer"])
def test_causal_is_refused(name: str) -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="causal"):
        _build(name)(q, k, v, causal=True)


# -- kernelized ---------------------------------------------------------------------------------
def _gaussian_ref(q, k, v, mask=None, causal=False):
    d = q.shape[-1]
    x, y = q * d**-0.25, k * d**-0.25
    kern = torch.exp(-0.5 * torch.cdist(x, y).square())
    if mask is not None:
        kern = kern * mask[:, None, None, :]
    if causal:
        kern = kern.tril()
    out = kern @ v
    return out if mask is None else out * mask[:, None, :, None]


@pytest.mark.parametrize("implementation", ["sdpa", "dense"])
@pytest.mark.parametrize("causal", [False, True])
def test_kernelized_matches_explicit_gaussian_kernel(implementation: str, causal: bool) -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv(scale=1.5, dv=11))  # d_v > d + 2
    mask = _mask()
    attn = _build("kernelized", implementation=implementation)
    for m in (None, mask):
        out = attn(q, k, v, mask=m, causal=causal)
        ref = _gaussian_ref(q, k, v, m, causal)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        grads = torch.autograd.grad((out * v).sum(), (q, k, v))
        ref_grads = torch.autograd.grad((ref * v).sum(), (q, k, v))
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_kernelized_is_not_row_normalized() -> None:
    """Identical q and k rows: κ = 1 everywhere, so out_i = Σ_j v_j (not the mean)."""
    q = torch.ones(1, 1, 5, 8, dtype=DT)
    v = torch.randn(1, 1, 5, 3, dtype=DT)
    out = _build("kernelized")(q, q, v)
    torch.testing.assert_close(out, v.sum(dim=2, keepdim=True).expand_as(out))


def test_skyformer_with_every_token_a_landmark_approaches_kernelized() -> None:
    """Skyformer (Nyström on [Q; K]) with s = 2L landmarks, λ → 0 and many Newton–Schulz
    iterations is the exact kernelized attention it approximates."""
    q, k, v = _qkv(b=1, h=2, length=8, seed=5, scale=0.7)
    exact = _build("kernelized")(q, k, v)

    def rel(iterations: int, lam: float) -> float:
        sky = ATTENTIONS.build(
            "skyformer",
            head_dim=8,
            num_landmarks=16,
            pinv_iterations=iterations,
            regularization=lam,
        ).eval()
        return float((sky(q, k, v) - exact).norm() / exact.norm())

    assert rel(60, 1e-9) < 1e-4
    assert rel(60, 1e-9) < rel(6, 0.1)  # the paper's defaults are an approximation


# -- linformer ----------------------------------------------------------------------------------
def _linformer_ref(attn, q, k, v, mask=None):
    """Dense loop reference: column r of E, F for the real key of rank r."""
    b, h, length, d = q.shape
    e = attn.E.detach().to(q.dtype)
    f = e if attn.F is None else attn.F.detach().to(q.dtype)
    out = torch.zeros(b, h, length, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        real = [j for j in range(length) if mask is None or mask[bi, j]]
        kp = sum(e[:, r, None] * k[bi, :, j, None, :] for r, j in enumerate(real))
        vp = sum(f[:, r, None] * v[bi, :, j, None, :] for r, j in enumerate(real))
        probs = torch.softmax(q[bi] @ kp.transpose(-1, -2) / math.sqrt(d), dim=-1)
        for i in real:
            out[bi, :, i] = (probs @ vp)[:, i]
    return out


@pytest.mark.parametrize("share_kv", [False, True])
def test_linformer_matches_dense_reference(share_kv: bool) -> None:
    torch.manual_seed(0)
    attn = _build("linformer", proj_length=5, max_length=16, share_kv=share_kv)
    q, k, v = _qkv()
    for m in (None, _mask()):
        torch.testing.assert_close(attn(q, k, v, mask=m), _linformer_ref(attn, q, k, v, m))
    assert (attn.F is None) == share_kv


def test_linformer_with_identity_projections_is_softmax() -> None:
    attn = _build("linformer", proj_length=12, max_length=12)
    with torch.no_grad():
        attn.E.copy_(torch.eye(12))
        attn.F.copy_(torch.eye(12))
    q, k, v = _qkv()
    torch.testing.assert_close(attn(q, k, v), _softmax_ref(q, k, v))
    # with padding the columns follow the real tokens' ranks; the k − n unused slots are zero
    # keys with zero values (logit 0): softmax over the real keys plus k − n null keys
    mask = _mask()
    logits = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask[:, None, None], -math.inf)
    num = logits.exp() @ v
    den = logits.exp().sum(-1, keepdim=True) + (12 - mask.sum(-1))[:, None, None, None]
    ref = (num / den) * mask[:, None, :, None]
    torch.testing.assert_close(attn(q, k, v, mask=mask), ref)


def test_linformer_length_limit() -> None:
    attn = _build("linformer", proj_length=4, max_length=10)
    q, k, v = _qkv(length=12)
    with pytest.raises(ValueError, match=r"12 real tokens but max_length=10.*task.max_length"):
        attn(q, k, v)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 10:] = False  # padded past max_length, 10 real tokens: fine
    out = attn(q, k, v, mask=mask)
    torch.testing.assert_close(out[:, :, :10], attn(q[:, :, :10], k[:, :, :10], v[:, :, :10]))
    mask[0, 10] = True
    with pytest.raises(ValueError, match="11 real tokens"):
        attn(q, k, v, mask=mask)


def test_linformer_projections_get_gradients() -> None:
    attn = _build("linformer").train()
    q, k, v = _qkv(dtype=torch.float32)
    attn(q, k, v, mask=_mask()).square().sum().backward()
    assert attn.E.grad is not None and attn.E.grad[:, :12].abs().sum() > 0
    assert (attn.E.grad[:, 12:] == 0).all()  # columns past the longest sequence are unused


# -- reformer -----------------------------------------------------------------------------------
def _shared_qk_ref(q, v, mask=None, causal=False):
    """Shared-QK softmax: keys q̂_j, no attention to self unless there is no other key."""
    b, _, length, d = q.shape
    logits = q @ torch.nn.functional.normalize(q, dim=-1).transpose(-1, -2) / math.sqrt(d)
    allowed = torch.ones(b, 1, length, length, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    eye = torch.eye(length, dtype=torch.bool)
    others = allowed & ~eye
    allowed = others | (eye & ~others.any(-1, keepdim=True))
    out = torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1) @ v
    return out if mask is None else out * mask[:, None, :, None]


def _reformer_ref(attn, q, v, mask=None, causal=False):
    """Loop reference: per round, sort the real tokens by (bucket, position), chunks of c, each
    query attends to its chunk and the previous one; rounds combined by logsumexp weights."""
    b, h, length, d = q.shape
    buckets = attn.buckets(q)
    keys = torch.nn.functional.normalize(q, dim=-1)
    c = attn.chunk_size
    out = torch.zeros(b, h, length, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        real = [i for i in range(length) if mask is None or mask[bi, i]]
        for hi in range(h):
            outs, lses = {i: [] for i in real}, {i: [] for i in real}
            for r in range(attn.n_hashes):
                order = sorted(real, key=lambda i: (int(buckets[bi, hi, r, i]), i))
                for p, i in enumerate(order):
                    lo = max(0, (p // c - 1) * c)
                    cand = order[lo : (p // c + 1) * c]
                    cand = [j for j in cand if (j <= i or not causal) and j != i]
                    if not cand:  # only itself: its value, with the self logit
                        outs[i].append(v[bi, hi, i])
                        lses[i].append(torch.tensor(-1e5, dtype=q.dtype))
                        continue
                    logits = torch.stack([q[bi, hi, i] @ keys[bi, hi, j] for j in cand]) / d**0.5
                    outs[i].append(torch.softmax(logits, 0) @ v[bi, hi, cand])
                    lses[i].append(logits.logsumexp(0))
            for i in real:
                w = torch.softmax(torch.stack(lses[i]), 0)
                out[bi, hi, i] = (w[:, None] * torch.stack(outs[i])).sum(0)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_reformer_with_one_bucket_is_shared_qk_softmax(causal: bool) -> None:
    q, k, v = _qkv(scale=2.0)
    for options in ({"n_buckets": 1, "chunk_size": 12}, {"n_buckets": 8, "chunk_size": 16}):
        attn = _build("reformer", n_hashes=3, **options)  # one chunk: every bucket layout agrees
        for m in (None, _mask()):
            out = attn(q, k, v, mask=m, causal=causal)
            torch.testing.assert_close(out, _shared_qk_ref(q, v, m, causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n_buckets", "chunk_size", "n_hashes"), [(4, 3, 2), (2, 5, 3), (6, 1, 1)])
def test_reformer_matches_loop_reference(causal, n_buckets, chunk_size, n_hashes) -> None:
    attn = _build("reformer", n_buckets=n_buckets, chunk_size=chunk_size, n_hashes=n_hashes)
    q, k, v = _qkv(length=13, seed=7, scale=2.0)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, [0, 6]] = False
    mask[1, 9:] = False
    for m in (None, mask):
        torch.testing.assert_close(
            attn(q, k, v, mask=m, causal=causal), _reformer_ref(attn, q, v, m, causal)
        )


def test_reformer_hash_is_angular_lsh() -> None:
    attn = _build("reformer", n_buckets=6, n_hashes=3, seed=4)
    q, _, _ = _qkv(length=20)
    buckets = attn.buckets(q)
    assert buckets.shape == (2, 2, 3, 20) and buckets.min() >= 0 and buckets.max() < 6
    rot = torch.einsum("bhld,rdn->bhrln", q, attn.rotations.to(DT))
    assert torch.equal(buckets, torch.cat([rot, -rot], -1).argmax(-1))
    assert torch.equal(attn.buckets(3.0 * q), buckets)  # depends on the direction only
    assert not torch.equal(_build("reformer", n_buckets=6, n_hashes=3, seed=5).buckets(q), buckets)


def test_reformer_ignores_k_but_keeps_it_in_the_graph() -> None:
    q, k, v = (t.requires_grad_(True) for t in _qkv())
    attn = _build("reformer")
    out = attn(q, k, v)
    torch.testing.assert_close(out, attn(q, torch.randn_like(k), v))
    out.sum().backward()
    assert k.grad is not None and (k.grad == 0).all() and q.grad.abs().sum() > 0


# -- bigbird ------------------------------------------------------------------------------------
def _bigbird_pattern(attn, n_real: int, heads: int) -> torch.Tensor:
    """(H, n, n) token pattern of an unpadded sequence of n_real tokens, from the block lists."""
    bs, g = attn.block_size, attn.num_global_blocks
    nb = -(-n_real // bs)
    blocks = torch.zeros(heads, nb, nb, dtype=torch.bool)
    blocks[:, : min(g, nb)] = True
    if g < nb:
        idx, ok = attn.key_blocks(torch.tensor([nb]), nb, heads)
        for hi in range(heads):
            for qi in range(nb - g):
                for j, good in zip(idx[0, hi, qi].tolist(), ok[0, hi, qi].tolist()):
                    if good:
                        blocks[hi, g + qi, j] = True
    tokens = blocks.repeat_interleave(bs, 1).repeat_interleave(bs, 2)
    return tokens[:, :n_real, :n_real]


def _bigbird_ref(attn, q, k, v, mask=None):
    """Dense masked softmax with the block pattern laid over each sequence's real tokens."""
    b, h, length, d = q.shape
    out = torch.zeros(b, h, length, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        real = [i for i in range(length) if mask is None or mask[bi, i]]
        if not real:
            continue
        pattern = _bigbird_pattern(attn, len(real), h)
        qr, kr, vr = q[bi][:, real], k[bi][:, real], v[bi][:, real]
        logits = (qr @ kr.transpose(-1, -2) / math.sqrt(d)).masked_fill(~pattern, -math.inf)
        out[bi][:, real] = torch.softmax(logits, -1) @ vr
    return out


@pytest.mark.parametrize(
    "options",
    [
        {"block_size": 2, "num_global_blocks": 1, "num_random_blocks": 1},
        {"block_size": 3, "num_global_blocks": 0, "num_random_blocks": 2},
        {"block_size": 2, "num_global_blocks": 2, "num_random_blocks": 0, "num_window_blocks": 1},
        {"block_size": 1, "num_global_blocks": 1, "num_random_blocks": 3, "num_window_blocks": 5},
    ],
    ids=str,
)
def test_bigbird_matches_dense_pattern_reference(options: dict) -> None:
    attn = _build("bigbird", **options)
    q, k, v = _qkv(length=15, seed=2, scale=1.5)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, [2, 3, 14]] = False
    mask[1, 4:] = False
    for m in (None, mask):
        torch.testing.assert_close(attn(q, k, v, mask=m), _bigbird_ref(attn, q, k, v, m))


def test_bigbird_with_all_blocks_global_is_softmax() -> None:
    q, k, v = _qkv()
    for options in (
        {"block_size": 4, "num_global_blocks": 3},  # 12 tokens = 3 global blocks
        {"block_size": 2, "num_global_blocks": 0, "num_window_blocks": 11},  # window covers all
    ):
        attn = _build("bigbird", **options)
        for m in (None, _mask()):
            torch.testing.assert_close(attn(q, k, v, mask=m), _softmax_ref(q, k, v, m))


def test_bigbird_pattern_has_window_global_and_distinct_random_blocks() -> None:
    attn = _build("bigbird", block_size=1, num_global_blocks=2, num_random_blocks=3, seed=3)
    idx, ok = attn.key_blocks(torch.tensor([20, 7]), 20, 4)  # (B, H, 18, 3 + 2 + 3)
    assert idx.shape == (2, 4, 18, 8)
    for bi, nb in enumerate((20, 7)):
        for hi in range(4):
            for qi in range(18):
                i = qi + 2
                keys = [
                    j for j, good in zip(idx[bi, hi, qi].tolist(), ok[bi, hi, qi].tolist()) if good
                ]
                assert len(keys) == len(set(keys))  # no key block twice
                assert all(j < nb for j in keys)
                if i < nb:
                    window = {j for j in (i - 1, i, i + 1) if 2 <= j < nb}
                    assert window | {0, 1} <= set(keys)
                    n_random = len(keys) - len(window) - 2
                    assert n_random == min(3, nb - 2 - len(window))
    # the random blocks are seeded, differ between heads and with the seed
    idx2, _ = attn.key_blocks(torch.tensor([20, 7]), 20, 4)
    assert torch.equal(idx, idx2)
    assert not torch.equal(idx[0, 0, :, 5:], idx[0, 1, :, 5:])
    other = _build("bigbird", block_size=1, num_global_blocks=2, num_random_blocks=3, seed=4)
    assert not torch.equal(other.key_blocks(torch.tensor([20, 7]), 20, 4)[0], idx)


# -- informer -----------------------------------------------------------------------------------
def _log_count(c: int, n: int) -> int:
    return min(max(c * math.ceil(math.log(n)), 1), n) if n > 0 else 0


def _informer_ref(attn, q, k, v, mask=None):
    """Loop reference with the module's key samples: M̄ = max − mean over the sampled keys,
    top-u queries get softmax attention, the others mean(V)."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    out = torch.zeros(b, h, lq, v.shape[-1], dtype=q.dtype)
    big_u_max = _log_count(attn.factor, lk)
    for bi in range(b):
        queries = [i for i in range(lq) if mask is None or mask[bi, i]]
        keys = [j for j in range(lk) if mask is None or mask[bi, j]]
        if not keys:
            continue
        u, big_u = _log_count(attn.factor, len(queries)), _log_count(attn.factor, len(keys))
        ranks = attn.sample_ranks(lq, big_u_max, torch.tensor([len(keys)]))[0]
        for hi in range(h):
            m_bar = []
            for r, i in enumerate(queries):
                sampled = [keys[j] for j in ranks[r, :big_u].tolist()]
                dots = torch.stack([q[bi, hi, i] @ k[bi, hi, j] for j in sampled]) / d**0.5
                m_bar.append(float(dots.max() - dots.mean()))
            top = sorted(range(len(queries)), key=lambda r: -m_bar[r])[:u]
            mean_v = v[bi, hi, keys].mean(0)
            for r, i in enumerate(queries):
                if r in top:
                    logits = q[bi, hi, i] @ k[bi, hi, keys].T / d**0.5
                    out[bi, hi, i] = torch.softmax(logits, 0) @ v[bi, hi, keys]
                else:
                    out[bi, hi, i] = mean_v
    return out


@pytest.mark.parametrize("factor", [1, 2])
def test_informer_matches_loop_reference(factor: int) -> None:
    attn = _build("informer", factor=factor, seed=3)
    q, k, v = _qkv(length=30, seed=4, scale=1.5)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, [0, 7, 8, 29]] = False
    mask[1, 17:] = False
    for m in (None, mask):
        torch.testing.assert_close(attn(q, k, v, mask=m), _informer_ref(attn, q, k, v, m))
    # cross-attention: Lq ≠ Lk
    q2 = _qkv(length=9, seed=5)[0]
    torch.testing.assert_close(attn(q2, k, v), _informer_ref(attn, q2, k, v))


def test_informer_selects_u_queries() -> None:
    attn = _build("informer", factor=1)
    q, k, v = _qkv(b=1, h=1, length=30, seed=6)
    out = attn(q, k, v)
    is_mean = torch.isclose(out[0, 0], v[0, 0].mean(0)).all(-1)
    assert int((~is_mean).sum()) == math.ceil(math.log(30))  # u = c·⌈ln L⌉ active queries


def test_informer_with_u_equal_to_l_is_softmax() -> None:
    q, k, v = _qkv()
    attn = _build("informer", factor=12)  # u = 12·⌈ln 12⌉ ≥ L
    for m in (None, _mask()):
        torch.testing.assert_close(attn(q, k, v, mask=m), _softmax_ref(q, k, v, m))


def test_informer_samples_are_seeded_real_keys() -> None:
    attn = _build("informer", seed=1)
    ranks = attn.sample_ranks(50, 40, torch.tensor([7, 50]))
    assert ranks.shape == (2, 50, 40)
    assert ranks[0].max() < 7 and ranks.min() >= 0 and ranks[1].max() >= 45
    assert torch.equal(ranks, attn.sample_ranks(50, 40, torch.tensor([7, 50])))
    other = _build("informer", seed=2).sample_ranks(50, 40, torch.tensor([7, 50]))
    assert not torch.equal(ranks, other)
    # the first rows do not depend on how many queries are asked for (padding-invariant)
    assert torch.equal(attn.sample_ranks(10, 40, torch.tensor([7, 50])), ranks[:, :10])


# -- helpers ------------------------------------------------------------------------------------
def test_stateless_uniform_is_a_pure_function_of_seed_and_indices() -> None:
    i = torch.arange(300)[:, None]
    j = torch.arange(200)[None, :]
    u = stateless_uniform(7, i, j)
    assert u.shape == (300, 200) and u.min() >= 0 and u.max() < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert torch.equal(stateless_uniform(7, i[:10], j[:, :5]), u[:10, :5])
    assert not torch.equal(stateless_uniform(8, i, j), u)
    assert not torch.equal(stateless_uniform(7 + 2**32, i, j), u)


def test_valid_first_order() -> None:
    mask = torch.tensor([[False, True, False, True, True]])
    assert valid_first_order(mask).tolist() == [[1, 3, 4, 0, 2]]


# -- one training step through the presets ------------------------------------------------------
@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory) -> Path:
    import lra_data

    root = tmp_path_factory.mktemp("lra")
    lra_data.write_fixture("lra_listops", root, rows_per_split=16, seed=0)
    return root


@pytest.mark.parametrize("preset", BASELINES)
def test_preset_trains_one_step(preset: str, listops_dir: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from spectra.training import train

    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = [
        f"paths.output_dir={tmp_path}",
        "task=lra_listops",
        f"attention={preset}",
        "debug=fdr",
        f"task.data_dir={listops_dir}",
        *TINY_MODEL,
        "task.pad_to=longest",
        "task.batch_size=8",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.attention.name == preset
    metrics = train(cfg)
    assert metrics["global_step"] == 1
    assert math.isfinite(metrics["train/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0
