"""``scripts/kernel_error.py``: argument checks and smoke runs of the whole study (synthetic and
from a checkpoint) into a temporary directory."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from spectra.analysis.kernel_error import CSV_FIELDS, SETTINGS
from spectra.registry import SAMPLERS, UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("kernel_error", ROOT / "scripts/kernel_error.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ke = _load_script()


# -- command line ----------------------------------------------------------------------------------
def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="--ms"):
        ke.parse_args(["--ms", "0"])
    with pytest.raises(ValueError, match="nothing to do"):
        ke.parse_args(["--no-synthetic"])
    with pytest.raises(UnknownComponentError):
        ke.parse_args(["--samplers", "gausian"])
    args = ke.parse_args(["--quick"])
    assert args.samplers and all(SAMPLERS.entry(n).provider == "spectra" for n in args.samplers)


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
    assert list(table[0]) == CSV_FIELDS
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
    for setting in SETTINGS:
        for kind in ("error_vs_m", "error_vs_scale", "sampler_grid"):
            assert _is_png(tmp_path / f"{kind}_{setting}.png")
    assert _is_png(tmp_path / "variance_vs_scale.png")
    summary = (tmp_path / ke.SUMMARY_NAME).read_text()
    assert "- command: `python scripts/kernel_error.py --quick" in summary
    assert "- machine: " in summary and "Median kernel relative MSE, m = 16" in summary
    for setting in SETTINGS:
        assert f"{setting} s=1.5" in summary


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
        ke.capture.load_checkpoint(ckpt, "lra_text")
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
    assert "lra_listops layer 1" in (out / ke.SUMMARY_NAME).read_text()
