"""LRA models: shapes, forward/backward, padding invariance, heads, per-layer random features."""

from __future__ import annotations

import pytest
import torch

from spectra.registry import ATTENTIONS
from spectra.training.attention import attention_spec, layer_seed
from spectra.training.models import (
    DualEncoderClassifier,
    LRAEncoder,
    SequenceClassifier,
    masked_mean,
)

HEAD_DIM = 8

# Small, cheap options per attention (others: head_dim and seed only, the base contract).
_SMALL_OPTIONS = {
    "random_features": {"num_features": 16},
    "skyformer": {"num_landmarks": 4},
    "nystromformer": {"num_landmarks": 4},
}


def small_spec(name: str, **extra):
    """Spec of ``name`` with head_dim 8, seed 0 and few features / landmarks."""
    options = {"seed": 0, **_SMALL_OPTIONS.get(name, {})}
    return attention_spec({"name": name, "head_dim": HEAD_DIM, **options, **extra})


def make_encoder(spec, *, num_layers: int = 2, vocab: int = 20, positions: int = 64) -> LRAEncoder:
    return LRAEncoder(
        vocab_size=vocab,
        max_positions=positions,
        embed_dim=16,
        ffn_dim=32,
        num_layers=num_layers,
        num_heads=2,
        head_dim=spec.head_dim,
        attention_factory=spec.factory(),
        dropout=0.0,
    )


def padded(ids: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.nn.functional.pad(ids, (0, extra))
    return out, out != 0


# Attentions whose output at real tokens provably ignores padding: exact softmax, and random
# features (padding keys excluded from statistics and zeroed after the map; W fixed).
PADDING_EXACT = [n for n in ("softmax", "random_features") if n in ATTENTIONS.names()]


@pytest.mark.parametrize("name", ATTENTIONS.names())
def test_classifier_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(make_encoder(small_spec(name)), num_classes=3, hidden_dim=16)
    ids = torch.randint(1, 20, (3, 24))
    ids[1, 15:] = 0
    ids[2, 7:] = 0
    batch = {"input_ids": ids, "mask": ids != 0, "labels": torch.tensor([0, 1, 2])}
    logits = model(batch)
    assert logits.shape == (3, 3)
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.token_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ATTENTIONS.names())
def test_dual_encoder_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = DualEncoderClassifier(make_encoder(small_spec(name)), num_classes=2, hidden_dim=16)
    a = torch.randint(1, 20, (2, 16))
    b = torch.randint(1, 20, (2, 24))
    b[0, 10:] = 0
    batch = {"input_ids": a, "mask": a != 0, "input_ids2": b, "mask2": b != 0}
    logits = model(batch)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert model.head[0].weight.shape == (16, 4 * 16)  # MLP([a, b, a*b, a-b])
    assert model.head[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PADDING_EXACT)
def test_padding_does_not_change_pooled_output(name: str) -> None:
    torch.manual_seed(0)
    encoder = make_encoder(small_spec(name)).eval()
    ids = torch.randint(1, 20, (2, 12))
    with torch.no_grad():
        ref = encoder(ids, torch.ones_like(ids, dtype=torch.bool))
        for extra in (1, 9, 30):
            ids_p, mask_p = padded(ids, extra)
            out = encoder(ids_p, mask_p)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PADDING_EXACT)
def test_padding_does_not_change_retrieval_logits(name: str) -> None:
    torch.manual_seed(0)
    model = DualEncoderClassifier(make_encoder(small_spec(name)), 2, 16).eval()
    a, b = torch.randint(1, 20, (2, 10)), torch.randint(1, 20, (2, 14))
    with torch.no_grad():
        ref = model({"input_ids": a, "mask": a != 0, "input_ids2": b, "mask2": b != 0})
        a_p, ma = padded(a, 13)
        b_p, mb = padded(b, 3)
        out = model({"input_ids": a_p, "mask": ma, "input_ids2": b_p, "mask2": mb})
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_padding_changes_output_without_mask() -> None:
    """The invariance test can fail: without a mask, padding tokens do change the output."""
    torch.manual_seed(0)
    encoder = make_encoder(small_spec("softmax")).eval()
    ids = torch.randint(1, 20, (2, 12))
    with torch.no_grad():
        ref = encoder(ids, torch.ones_like(ids, dtype=torch.bool))
        ids_p, _ = padded(ids, 9)
        out = encoder(ids_p, torch.ones_like(ids_p, dtype=torch.bool))
    assert (out - ref).abs().max() > 1e-3


def test_masked_mean_ignores_padding_values() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), float("inf")]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(masked_mean(x[:, :1] * 0 + 5, torch.tensor([[False]])), torch.zeros(1, 2))


def test_sequence_longer_than_positions_is_rejected() -> None:
    encoder = make_encoder(small_spec("softmax"), positions=8)
    ids = torch.ones(1, 9, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the model's 8 learned positions"):
        encoder(ids, ids != 0)


@pytest.mark.skipif("random_features" not in ATTENTIONS.names(), reason="not registered")
def test_random_features_differ_per_layer_and_repeat_per_seed() -> None:
    spec = small_spec(
        "random_features", sampler={"name": "gaussian"}, feature_map={"name": "posrf"}
    )
    e1, e2 = make_encoder(spec), make_encoder(spec)
    w = [dict(b.attn.attention.named_buffers())["weight"] for b in e1.blocks]
    w2 = [dict(b.attn.attention.named_buffers())["weight"] for b in e2.blocks]
    assert not torch.equal(w[0], w[1]), "layers must draw independent W"
    assert all(torch.equal(x, y) for x, y in zip(w, w2)), "same seed, same W (every DDP rank)"
    other = make_encoder(small_spec("random_features", seed=1, sampler={"name": "gaussian"}))
    w3 = dict(other.blocks[0].attn.attention.named_buffers())["weight"]
    assert not torch.equal(w[0], w3)


def test_layer_seed_is_injective_on_small_grid() -> None:
    seeds = {layer_seed(s, layer) for s in range(50) for layer in range(50)}
    assert len(seeds) == 50 * 50


def test_attention_spec_parses_component_nodes() -> None:
    spec = attention_spec(
        {
            "name": "random_features",
            "head_dim": 32,
            "num_features": 128,
            "sampler": {"name": "qmc"},
            "feature_map": {"name": "gerf", "A": -0.05},
            "seed": 3,
        }
    )
    assert spec.options["sampler"] == "qmc" and "sampler_options" not in spec.options
    assert spec.options["feature_map"] == "gerf"
    assert spec.options["feature_map_options"] == {"A": -0.05}
    assert spec.tags() == {
        "attention": "random_features",
        "sampler": "qmc",
        "feature_map": "gerf",
        "m": 128,
    }
    with pytest.raises(ValueError, match="no 'name'"):
        attention_spec({"head_dim": 4})
    with pytest.raises(ValueError, match="head_dim"):
        attention_spec({"name": "softmax"}).head_dim  # noqa: B018


def test_every_layer_gets_its_index_and_the_config_seed() -> None:
    encoder = make_encoder(small_spec("softmax", seed=4), num_layers=3)
    assert [b.attn.attention.layer_index for b in encoder.blocks] == [0, 1, 2]
    assert {b.attn.attention.seed for b in encoder.blocks} == {4}


def test_learned_sampler_layers_start_from_different_w() -> None:
    spec = small_spec("random_features", sampler={"name": "learnable"})
    w = [b.attn.attention.sampler.weight.detach() for b in make_encoder(spec).blocks]
    assert not torch.equal(w[0], w[1])


def test_layer_index_is_not_a_config_option() -> None:
    with pytest.raises(ValueError, match=r"attention\.layer_index is not a config option"):
        attention_spec({"name": "softmax", "head_dim": 8, "layer_index": 1})
