"""spectra.analysis.kernel_error and spectra.analysis.capture: metric definitions, the closed-form
iid variance ordering, the synthetic inputs, the evaluation rows and the q/k capture hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectra.analysis import capture
from spectra.analysis import kernel_error as ke
from spectra.registry import ATTENTIONS, SAMPLERS


# -- metrics -------------------------------------------------------------------------------------
def test_kernel_relative_mse_definition():
    k = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    k_hat = torch.tensor([[1.0, 0.0], [3.0, 6.0]], dtype=torch.float64)
    # mean (K̂ − K)² = (0 + 4 + 0 + 4) / 4 = 2; mean K² = 30 / 4 = 7.5
    assert ke.kernel_relative_mse(k_hat, k).item() == pytest.approx(2.0 / 7.5)
    assert ke.kernel_relative_mse(k, k).item() == 0.0
    assert ke.kernel_relative_mse(torch.zeros_like(k), k).item() == pytest.approx(1.0)
    broken = k_hat.clone()
    broken[0, 0] = math.nan
    assert ke.kernel_relative_mse(broken, k).item() == math.inf
    batched = ke.kernel_relative_mse(torch.stack([k, k_hat]), torch.stack([k, k]))
    assert batched.shape == (2,) and batched[1].item() == pytest.approx(2.0 / 7.5)


def test_attention_relative_error_definition():
    ref = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert ke.attention_relative_error(out, ref).item() == pytest.approx(3.0 / 5.0)
    out[0, 0] = math.inf
    assert ke.attention_relative_error(out, ref).item() == math.inf


def test_quantiles_keep_infinite_errors():
    med, q25, q75, mean = ke.quantiles(np.array([1.0, 2.0, 3.0, math.inf]))
    assert (q25, med) == (1.0, 2.0) and q75 == 3.0 and mean == math.inf
    assert ke.quantiles(np.array([1.0, math.inf, math.inf]))[0] == math.inf


def test_closed_form_orders_maps_as_the_papers_say():
    """Large isotropic norms: oprf, sderf, saderf have far lower iid variance than posrf
    (FAVOR++/FAVOR#); unbalanced norms: saderf beats oprf (its Ψ rebalances them)."""
    gen = torch.Generator().manual_seed(5)
    x, y = ke.SETTINGS["isotropic"](3.0, 64, 64, gen)
    var = {f: ke.iid_relative_mse(f, x, y).item() for f in ("posrf", "oprf", "sderf", "saderf")}
    for better in ("oprf", "sderf", "saderf"):
        assert math.log(var["posrf"] / var[better]) > 5.0, var
    xa, ya = ke.SETTINGS["asymmetric"](2.0, 64, 64, gen)
    assert ke.iid_relative_mse("saderf", xa, ya) < 1e-2 * ke.iid_relative_mse("oprf", xa, ya)


# -- inputs ----------------------------------------------------------------------------------------
def test_synthetic_settings_have_the_documented_norms():
    work = ke.synthetic_workload(list(ke.SETTINGS), [2.0], dim=64, length=512, seed=0)
    assert work.x.shape == (3, 1, 512, 64) and work.x.dtype == torch.float64
    sq_x = work.x.square().sum(-1).mean(-1).squeeze(-1)
    sq_y = work.y.square().sum(-1).mean(-1).squeeze(-1)
    torch.testing.assert_close(
        sq_x, torch.tensor([4.0, 16.0, 4.0], dtype=torch.float64), rtol=0.1, atol=0
    )
    torch.testing.assert_close(
        sq_y, torch.tensor([4.0, 1.0, 4.0], dtype=torch.float64), rtol=0.1, atol=0
    )
    # asymmetric = isotropic rescaled: the same kernel exp(x yᵀ)
    iso = ke.synthetic_workload(["isotropic"], [2.0], dim=64, length=512, seed=0)
    asym = ke.synthetic_workload(["asymmetric"], [2.0], dim=64, length=512, seed=0)
    torch.testing.assert_close(iso.x @ iso.y.mT, asym.x @ asym.y.mT)
    with pytest.raises(ValueError, match="unknown setting"):
        ke.synthetic_workload(["spherical"], [1.0], dim=4, length=4, seed=0)


def test_inputs_do_not_share_the_random_stream_of_w():
    """W of trial t is drawn from seeded_generator(t); the inputs must come from another stream
    (with the same stream W's rows would equal the Gaussian vectors behind x)."""
    work = ke.synthetic_workload(["isotropic"], [1.0], dim=8, length=8, seed=0)
    w = SAMPLERS.build("gaussian", dim=8, num_features=8).sample(
        torch.Generator().manual_seed(0), dtype=torch.float64
    )
    cos = torch.nn.functional.cosine_similarity(work.x[0, 0], w, dim=-1)
    assert cos.abs().max() < 0.99


# -- capture of real queries and keys --------------------------------------------------------------
def _tiny_encoder(num_layers: int = 2, heads: int = 2, head_dim: int = 8):
    from spectra.training.models import LRAEncoder

    return LRAEncoder(
        vocab_size=20,
        max_positions=32,
        embed_dim=16,
        ffn_dim=32,
        num_layers=num_layers,
        num_heads=heads,
        head_dim=head_dim,
        attention_factory=lambda layer: ATTENTIONS.build("softmax", head_dim=head_dim),
        dropout=0.0,
    ).eval()


def test_capture_hooks_return_projected_heads_of_every_layer():
    torch.manual_seed(0)
    enc = _tiny_encoder()
    ids = torch.randint(1, 20, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 9:] = False
    got = capture.capture_attention_inputs(enc, lambda: enc(ids, mask))
    assert len(got) == 2
    for c in got:
        assert c["q"].shape == c["k"].shape == c["v"].shape == (3, 2, 12, 8)
        assert torch.equal(c["mask"], mask)
    # layer 0's q is q_proj(LN(embeddings)) split into heads: before any scaling or feature map
    with torch.no_grad():
        h = enc.token_embedding(ids) + enc.position_embedding(torch.arange(12))
        q = enc.blocks[0].attn.q_proj(enc.blocks[0].norm1(h)).view(3, 12, 2, 8).transpose(1, 2)
    torch.testing.assert_close(got[0]["q"], q)
    # hooks are removed afterwards
    assert not any(m._forward_pre_hooks for m in enc.modules())
    with pytest.raises(ValueError, match="no spectra MultiHeadAttention"):
        capture.capture_attention_inputs(torch.nn.Linear(2, 2), lambda: None)


def test_sample_positions_takes_only_real_tokens():
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :7] = True
    mask[1, 2:10] = True
    pos = capture.sample_positions(mask, 5, torch.Generator().manual_seed(0))
    assert pos.shape == (2, 5)
    for row, p in zip(mask, pos):
        assert row[p].all() and torch.equal(p, p.sort().values) and p.unique().numel() == 5
    with pytest.raises(ValueError, match="real tokens"):
        capture.sample_positions(mask, 8, torch.Generator().manual_seed(0))


# -- evaluation rows -------------------------------------------------------------------------------
def test_evaluate_and_summarize_rows():
    work = ke.synthetic_workload(["isotropic", "asymmetric"], [0.5], dim=8, length=6, seed=0)
    errors = ke.evaluate(work, "gaussian", "posrf", 4, trials=3)
    assert len(errors) == 3 * 2 * 1  # trials × batch rows × heads
    assert set(errors["group"]) == {"isotropic s=0.5", "asymmetric s=0.5"}
    rows = ke.summarize(errors, work)
    assert list(rows.columns) == ke.CSV_FIELDS and len(rows) == 2
    iso = rows.set_index("group").loc["isotropic s=0.5"]
    kern = errors[errors["group"] == "isotropic s=0.5"]["kernel_rel_mse"]
    assert iso["kernel_rel_mse_median"] == ke.quantiles(kern)[0] and iso["n"] == 3
    theory = ke.iid_relative_mse("posrf", work.x[0], work.y[0]).item() / 4
    assert iso["kernel_rel_mse_iid_theory"] == pytest.approx(theory)
    assert iso["setting"] == "isotropic" and iso["scale"] == 0.5 and iso["head_dim"] == 8


def test_a_map_without_closed_form_gets_nan_theory():
    from spectra.features.maps.posrf import PositiveRandomFeatures

    class NoClosedForm(PositiveRandomFeatures):
        """posrf without a closed form."""

        def iid_log_second_moment(self, x, y):
            return None

    from spectra.registry import FEATURE_MAPS

    FEATURE_MAPS.register("no_closed_form_test")(NoClosedForm)
    try:
        work = ke.synthetic_workload(["isotropic"], [0.5], dim=8, length=6, seed=0)
        assert ke.iid_relative_mse("no_closed_form_test", work.x, work.y) is None
        rows, skipped = ke.run_study(work, ["gaussian"], ["no_closed_form_test"], [4], trials=2)
        assert not skipped and math.isnan(rows["kernel_rel_mse_iid_theory"].item())
    finally:
        FEATURE_MAPS.unregister("no_closed_form_test")
