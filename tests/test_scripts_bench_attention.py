"""scripts/bench_attention.py: a tiny real run (every output written, skipped rows recorded), the
memory-exponent fit, the method list from the registry."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from spectra.registry import ATTENTIONS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_attention.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_exponent_recovers_power_law(bench) -> None:
    lengths = [512, 1024, 4096, 16384]
    assert bench.fit_exponent(lengths, [3.0 * n**1.0 for n in lengths]) == pytest.approx(1.0)
    assert bench.fit_exponent(lengths, [0.5 * n**2.0 for n in lengths]) == pytest.approx(2.0)
    noisy = [n * (1.1 if i % 2 else 0.9) for i, n in enumerate(lengths)]
    assert abs(bench.fit_exponent(lengths, noisy) - 1.0) < 0.1
    assert bench.fit_exponent([1024], [5.0]) is None


def test_default_methods_cover_every_registered_attention(bench) -> None:
    methods = bench.default_methods(["posrf", "saderf"])
    assert methods[0] == "softmax"
    names = {m.partition(":")[0] for m in methods}
    assert set(ATTENTIONS.names()) <= names
    assert {"random_features:posrf", "random_features:saderf"} <= set(methods)
    assert {"performer-pytorch", "nystrom-attention"} <= set(methods)


def test_quick_run_writes_every_output(bench, tmp_path: Path) -> None:
    methods = ["softmax", "random_features:posrf", "performer-pytorch", "nystrom-attention"]
    bench.main(
        [
            "--quick",
            "--lengths",
            "64",
            "128",
            "--methods",
            *methods,
            "--budget-s",
            "1e-9",
            *("--num-features", "16", "--heads", "2", "--head-dim", "16"),
            "--out",
            str(tmp_path),
        ]
    )
    for name in ("bench.csv", "speed_fwd_bwd.png", "speed_fwd.png", "memory.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    expected = [(m, n) for n in (64, 128) for m in methods]
    assert [(r["method"], int(r["L"])) for r in rows] == expected
    for row in rows[: len(methods)]:  # L = 64 measured
        assert row["status"] == "ok"
        assert float(row["fwd_bwd_s"]) > 0 and float(row["fwd_s"]) > 0
        assert math.isfinite(float(row["peak_mib"]))
    assert float(rows[0]["fwd_bwd_vs_sdpa"]) == pytest.approx(1.0, abs=1e-3)
    for row in rows[len(methods) :]:  # L = 128: every estimate is over the tiny budget
        assert row["status"].startswith("skipped: over budget"), row
    summary = (tmp_path / "summary.md").read_text()
    assert "skipped: over budget" in summary and "Command: `python" in summary


def test_bfloat16_inputs_run_for_every_kind_of_method(bench, tmp_path: Path) -> None:
    methods = ["softmax", "random_features:saderf", "performer-pytorch", "nystrom-attention"]
    args = ["--quick", "--lengths", "64", "--dtype", "bfloat16", "--out", str(tmp_path),
            "--num-features", "16", "--heads", "2", "--head-dim", "16"]  # CPU bf16 matmuls: slow
    bench.main([*args, "--methods", *methods])
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [r["status"] for r in rows] == ["ok"] * len(methods), rows
    assert "q/k/v in bfloat16" in (tmp_path / "summary.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--dtype", "int8", "--out", str(tmp_path)])


def test_attentions_are_built_from_their_presets(bench) -> None:
    """Composed like train.py composes them: m on the preset's own size key, L as max_length."""
    cfg = {"head_dim": 16, "length": 512, "num_features": 32}
    rf = bench.attention_config("random_features:saderf", cfg)
    assert rf.name == "random_features" and rf.feature_map.name == "saderf"
    assert rf.num_features == 32 and rf.head_dim == 16 and rf.sampler.name == "orthogonal"
    lin = bench.attention_config("linformer", cfg)
    assert lin.proj_length == 32 and lin.max_length == 512
    assert bench.attention_config("nystromformer", cfg).num_landmarks == 32
    assert "num_features" not in bench.attention_config("softmax", cfg)
