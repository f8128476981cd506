"""Numerics: 200 mixed-precision training steps at ‖q‖·‖k‖/√d = 55 stay finite for every component
function; the NaN guard stops a run at the first non-finite gradient, names the step and the
layer, and never applies the bad update.

fp16 autocast is supported on CPU by torch 2.13 (``torch.autocast("cpu", dtype=torch.float16)``
and ``torch.amp.GradScaler("cpu")``), so both bf16 and fp16 are tested here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from faults import FaultInjector
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spectra.registry import FEATURE_MAPS
from spectra.training.attention import attention_spec
from spectra.training.callbacks import NaNGuard, NonFiniteError, first_nonfinite_module
from spectra.training.models import LRAEncoder, SequenceClassifier

TARGET = 55.0  # ‖q‖·‖k‖/√d forced at every step (the requirement is ≥ 50)
STEPS = 200
HEAD_DIM = 8
VOCAB = 20


@pytest.fixture
def one_thread():
    """One intra-op thread: faster for these tiny models and identical on every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(feature_map: str) -> SequenceClassifier:
    spec = attention_spec(
        {
            "name": "random_features",
            "head_dim": HEAD_DIM,
            "num_features": 16,
            "sampler": {"name": "orthogonal"},
            "feature_map": {"name": feature_map},
            "redraw_interval": 25,
            "seed": 0,
        }
    )
    encoder = LRAEncoder(
        vocab_size=VOCAB,
        max_positions=16,
        embed_dim=16,
        ffn_dim=32,
        num_layers=2,
        num_heads=2,
        head_dim=HEAD_DIM,
        attention_factory=spec.factory(),
        dropout=0.1,
    )
    return SequenceClassifier(encoder, num_classes=4, hidden_dim=16)


def _stress(model: SequenceClassifier, reached: list[torch.Tensor]) -> None:
    """Rescale q and k entering every attention so that max‖q‖·max‖k‖/√d over real tokens is
    TARGET (a scale that is a constant for autograd), and record the product reached."""

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        q, k, v = args[:3]
        mask = kwargs.get("mask")
        with torch.no_grad():
            qn, kn = q.float().norm(dim=-1), k.float().norm(dim=-1)
            if mask is not None:
                qn = qn.masked_fill(~mask[:, None, :], 0.0)
                kn = kn.masked_fill(~mask[:, None, :], 0.0)
            product = qn.amax() * kn.amax() / math.sqrt(q.shape[-1])
            s = (TARGET / product).sqrt()
            q2, k2 = q * s.to(q.dtype), k * s.to(k.dtype)
            qn2 = q2.float().norm(dim=-1).masked_fill(~mask[:, None, :], 0.0)
            kn2 = k2.float().norm(dim=-1).masked_fill(~mask[:, None, :], 0.0)
            reached.append(qn2.amax() * kn2.amax() / math.sqrt(q.shape[-1]))
        return (q * s.to(q.dtype), k * s.to(k.dtype), v, *args[3:]), kwargs

    for block in model.encoder.blocks:
        block.attn.attention.register_forward_pre_hook(pre_hook, with_kwargs=True)


def _batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 sequences of length ≤ 12 (length-1 ones included), padded; label = first token mod 4."""
    ids = torch.randint(1, VOCAB, (4, 12), generator=gen)
    lengths = torch.randint(1, 13, (4,), generator=gen)
    lengths[0] = 1
    mask = torch.arange(12)[None, :] < lengths[:, None]
    return ids.masked_fill(~mask, 0), mask, ids[:, 0] % 4


def _all_finite(tensors) -> bool:
    tensors = [t for t in tensors if t is not None]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS.names())
def test_200_mixed_precision_steps_at_norm_product_55_stay_finite(
    feature_map: str, dtype: torch.dtype, one_thread
) -> None:
    torch.manual_seed(0)
    model = _model(feature_map)
    reached: list[torch.Tensor] = []
    _stress(model, reached)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    # fp16 needs loss scaling (as Lightning's 16-mixed does); bf16 does not
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(1)
    skipped = 0
    for step in range(STEPS):
        ids, mask, labels = _batch(gen)
        with torch.autocast("cpu", dtype=dtype):
            logits = model({"input_ids": ids, "mask": mask})
        loss = F.cross_entropy(logits.float(), labels)
        assert torch.isfinite(loss), (feature_map, step, loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads_finite = _all_finite(p.grad for p in params)
        if dtype == torch.bfloat16:
            assert grads_finite, (feature_map, step)
        before = [p.detach().clone() for p in params] if not grads_finite else None
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        if not grads_finite:  # fp16 overflow: the scaler must have skipped the update
            skipped += 1
            assert all(torch.equal(a, p) for a, p in zip(before, params, strict=True))
        assert _all_finite(params), (feature_map, step)
    products = torch.stack(reached)
    assert float(products.min()) >= 50.0, float(products.min())  # the stress was applied
    assert len(reached) == 2 * STEPS  # both layers, every step
    # Dynamic loss scaling calibrates by skipping overflowing steps; it must stay a minority.
    # Measured (seeded): 0 for the positive maps, 9 for trig, 32 for the example plugin's signed
    # poisrf, whose denominators cancel most at this norm (28 when ε was added on the stabilized
    # scale, which biased every estimate; the exact estimator keeps ε on the natural scale).
    assert skipped <= 0.2 * STEPS, (feature_map, skipped)


# -- NaN guard ------------------------------------------------------------------------------------
class _Tiny(L.LightningModule):
    """Linear → Tanh → Linear → Linear regression on fixed random data."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 1))

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.net(batch[0])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        return F.mse_loss(self(batch), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Snapshots(L.Callback):
    def __init__(self) -> None:
        self.weights: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]


def _fit(model: _Tiny, *callbacks: L.Callback, steps: int = 6) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(model, DataLoader(data, batch_size=8))


def test_nan_guard_stops_before_the_bad_update_and_names_step_and_layer() -> None:
    model, snapshots = _Tiny(), _Snapshots()
    with pytest.raises(NonFiniteError) as err:
        _fit(model, NaNGuard(), FaultInjector(step=3, kind="nan_output", module="net.2"), snapshots)
    message = str(err.value)
    assert "non-finite gradients at step 3 (epoch 0, batch 2)" in message
    assert "First non-finite activation: output of layer net.2 (Linear)" in message
    assert "the update was not applied" in message
    # the run stopped with the weights of step 2: the NaN update was never applied
    assert sorted(snapshots.weights) == [1, 2]
    for before, now in zip(snapshots.weights[2], model.parameters(), strict=True):
        assert torch.equal(before, now)


def test_without_the_guard_the_same_fault_trains_on_nan_weights() -> None:
    model = _Tiny()
    _fit(model, FaultInjector(step=3, kind="nan_output", module="net.2"))
    assert not all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_guard_names_the_layer_of_a_corrupted_weight() -> None:
    """A weight turned Inf after step 2: step 3's gradients are non-finite, and the replay names
    the layer whose output went non-finite first."""

    class CorruptWeight(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 2:
                with torch.no_grad():
                    pl_module.net[3].weight[0, 0] = float("inf")

    with pytest.raises(NonFiniteError, match=r"gradients at step 3 .*output of layer net\.3"):
        _fit(_Tiny(), CorruptWeight(), NaNGuard())


def test_nan_guard_leaves_fp16_overflow_to_an_active_grad_scaler() -> None:
    module = nn.Linear(2, 2)
    module.weight.grad = torch.full((2, 2), float("inf"))
    module.bias.grad = torch.zeros(2)
    scaler = SimpleNamespace(is_enabled=lambda: True)
    trainer = SimpleNamespace(
        global_step=5, current_epoch=0, precision_plugin=SimpleNamespace(scaler=scaler)
    )
    NaNGuard(locate=False).on_before_optimizer_step(trainer, module, None)  # the scaler skips it
    trainer.precision_plugin = SimpleNamespace(scaler=None)
    with pytest.raises(NonFiniteError, match=r"gradients at step 6 in layer weight"):
        NaNGuard(locate=False).on_before_optimizer_step(trainer, module, None)


def test_first_nonfinite_module_is_the_innermost_origin() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with torch.no_grad():
        net[1][0].bias[0] = float("nan")
    hit = first_nonfinite_module(net, lambda: net(torch.ones(1, 2)))
    assert hit == ("1.0", "Linear")
    assert first_nonfinite_module(nn.Linear(2, 2), lambda: None) is None
