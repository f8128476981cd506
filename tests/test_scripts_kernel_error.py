"""Tests of ``scripts/kernel_error.py``: metric definitions, the closed-form iid variance
(against Monte Carlo and against the library's GERF formula), the q/k capture hooks, and a
smoke run of the whole study (synthetic and from a checkpoint) into a temporary directory."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spectra.features import kernel_estimate
from spectra.features.maps.gerf import gerf_log_second_moment
from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("kernel_error", ROOT / "scripts/kernel_error.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernel_error"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ke = _load_script()


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


# -- closed-form iid variance ----------------------------------------------------------------------
def test_gerf_pairwise_second_moment_matches_library():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64) * 0.4
    y = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64) * 0.4
    a = torch.tensor([-0.05, 0.07], dtype=torch.float64)  # one A per leading index
    pairs = ke.gerf_pairs_log_second_moment(x, y, a)
    assert pairs.shape == (2, 5, 4)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                want = gerf_log_second_moment(x[b, i], y[b, j], a[b])
                torch.testing.assert_close(pairs[b, i, j], want)
    assert torch.isinf(ke.gerf_pairs_log_second_moment(x, y, 0.2)).all()  # A ≥ 1/8


@pytest.mark.parametrize("setting", ["isotropic", "asymmetric"])
def test_iid_closed_form_matches_monte_carlo(setting):
    """E[relMSE] over iid Gaussian draws equals the closed form / m (mean within 4 SE).

    Small norms keep the tails light, so the standard error is reliable; a wrong constant in
    any closed form (e.g. a factor 2 in an exponent) moves the mean by many SE.
    """
    d, length, m, trials = 8, 8, 4, 300
    gen = torch.Generator().manual_seed(11)
    x, y = ke.SETTINGS[setting](0.5, length, d, gen)
    k = torch.exp(x @ y.T)
    for fmap in ke.builtin_names(FEATURE_MAPS):
        theory = ke.iid_relative_mse(fmap, x, y)
        assert theory is not None, fmap
        theory = theory.item() / m
        errs = np.array(
            [
                ke.kernel_relative_mse(
                    kernel_estimate(
                        x, y, sampler="gaussian", feature_map=fmap, num_features=m, seed=t
                    ),
                    k,
                ).item()
                for t in range(trials)
            ]
        )
        se = errs.std(ddof=1) / math.sqrt(trials)
        assert abs(errs.mean() - theory) < 4 * se + 1e-12, (fmap, errs.mean(), theory, se)


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
    got = ke.capture_attention_inputs(enc, lambda: enc(ids, mask))
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
        ke.capture_attention_inputs(torch.nn.Linear(2, 2), lambda: None)


def test_sample_positions_takes_only_real_tokens():
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :7] = True
    mask[1, 2:10] = True
    pos = ke.sample_positions(mask, 5, torch.Generator().manual_seed(0))
    assert pos.shape == (2, 5)
    for row, p in zip(mask, pos):
        assert row[p].all() and torch.equal(p, p.sort().values) and p.unique().numel() == 5
    with pytest.raises(ValueError, match="real tokens"):
        ke.sample_positions(mask, 8, torch.Generator().manual_seed(0))


# -- command line ----------------------------------------------------------------------------------
def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="--ms"):
        ke.parse_args(["--ms", "0"])
    with pytest.raises(ValueError, match="nothing to do"):
        ke.parse_args(["--no-synthetic"])
    with pytest.raises(UnknownComponentError):
        ke.parse_args(["--samplers", "gausian"])
    args = ke.parse_args(["--quick"])
    assert args.samplers == ke.builtin_names(SAMPLERS)
    assert all(SAMPLERS.entry(n).provider == "spectra" for n in args.samplers)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SMALL = [
    "--samplers", "gaussian", "orthogonal", "--feature-maps", "posrf", "oprf", "trig",
    "--ms", "8", "16", "--trials", "2", "--length", "12", "--quiet",
]  # fmt: skip


def test_quick_synthetic_run_writes_csv_plots_and_summary(tmp_path):
    rows = ke.main(["--quick", "--out", str(tmp_path), "--scales", "0.5", "1.5", *SMALL])
    table = _read_csv(tmp_path / ke.CSV_NAME)
    assert len(table) == len(rows) == 3 * 2 * 2 * 3 * 2  # settings × scales × samplers × maps × m
    assert list(table[0]) == list(ke.CSV_FIELDS)
    cells = {(r["setting"], r["scale"], r["sampler"], r["feature_map"], r["m"]) for r in table}
    assert len(cells) == len(table)
    for r in table:
        assert r["study"] == "synthetic" and int(r["n"]) == 2
        assert float(r["kernel_rel_mse_q25"]) <= float(r["kernel_rel_mse_median"])
        assert float(r["kernel_rel_mse_median"]) <= float(r["kernel_rel_mse_q75"])
        assert math.isfinite(float(r["kernel_rel_mse_iid_theory"]))
        if float(r["scale"]) == 0.5:  # small norms: every estimator is usable
            assert float(r["kernel_rel_mse_median"]) < 1.0
            assert float(r["attn_rel_err_median"]) < 1.0
    for setting in ke.SETTINGS:
        for kind in ("error_vs_m", "error_vs_scale", "sampler_grid"):
            assert _is_png(tmp_path / f"{kind}_{setting}.png")
    assert _is_png(tmp_path / "variance_vs_scale.png")
    summary = (tmp_path / ke.SUMMARY_NAME).read_text()
    assert "python scripts/kernel_error.py --quick" in summary
    assert "Machine:" in summary and "## Paper claims checked on this run" in summary
    for setting in ke.SETTINGS:
        assert f"### `{setting}` inputs, m = 16" in summary


def _write_checkpoint(path: Path, data_dir: Path) -> None:
    import lightning

    from spectra.training.module import LRAModule

    cfg = {
        "task": {"name": "lra_listops", "data_dir": str(data_dir), "max_length": 64,
                 "pad_to": "longest", "batch_size": 4},
        "attention": {"name": "softmax", "head_dim": 8},
        "model": {"embed_dim": 16, "ffn_dim": 32, "num_layers": 2, "num_heads": 2,
                  "head_dim": 8, "dropout": 0.0},
        "optim": {"lr": 1e-3},
    }  # fmt: skip
    module = LRAModule(cfg, max_positions=64)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )


def test_checkpoint_run_captures_every_layer(tmp_path):
    import lra_data

    lra_data.write_fixture("lra_listops", tmp_path / "data", rows_per_split=8, seed=0)
    ckpt = tmp_path / "model.ckpt"
    _write_checkpoint(ckpt, tmp_path / "data")
    with pytest.raises(ValueError, match="does not match the checkpoint's task"):
        ke.load_checkpoint(ckpt, "lra_text")
    out = tmp_path / "out"
    argv = ["--no-synthetic", "--checkpoint", str(ckpt), "--task", "lra_listops",
            "--sequences", "2", "--out", str(out), *SMALL]  # fmt: skip
    ke.main(argv)
    table = _read_csv(out / ke.CSV_NAME)
    assert len(table) == 2 * 2 * 3 * 2  # layers × samplers × maps × m
    assert {r["layer"] for r in table} == {"0", "1"}
    assert all(r["study"] == "real" and r["head_dim"] == "8" for r in table)
    assert all(int(r["n"]) == 2 * 2 * 2 for r in table)  # sequences × heads × trials
    assert _is_png(out / "real_error_vs_m.png")
    assert "## Real queries and keys (`lra_listops`)" in (out / ke.SUMMARY_NAME).read_text()
