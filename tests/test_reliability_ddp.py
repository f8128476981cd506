"""Distributed consistency under ``trainer=ddp_sim`` (2 CPU processes, gloo).

One real ``python train.py trainer=ddp_sim`` run with per-rank diagnostics
(``tests/rank_diagnostics.py``) and a redraw of W at every step; then:
random features identical on both ranks at setup and after every redraw; gradients identical
on both ranks and equal to the mean of the two ranks' own gradients (recomputed here); every
validation/test sample counted exactly once (9 samples over 2 ranks: 5 + 4, no padding
duplicate) and the logged metrics equal a single-process evaluation; only rank 0 writes logs,
checkpoints and metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_MODEL

import lra_data
from spectra.training.module import LRAModule

ROOT = Path(__file__).resolve().parents[1]
ROWS = 9  # odd: the last evaluation batch is uneven across the 2 ranks
STEPS = 4


def _env() -> dict[str, str]:
    """``python train.py`` as a user runs it, with tests/ importable (the test tools)."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("LOCAL_RANK", None)
    return env


def _records(run_dir: Path, rank: int) -> list[dict]:
    path = run_dir / "diagnostics" / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("lra")
    lra_data.write_fixture("lra_listops", data, rows_per_split=ROWS, seed=0)
    run_dir = tmp_path_factory.mktemp("ddp")
    env = _env()
    overrides = [
        "trainer=ddp_sim",
        "task=lra_listops",
        "attention=favor_plus",
        f"task.data_dir={data}",
        "attention.num_features=16",
        "++attention.redraw_interval=1",
        *TINY_MODEL,
        "model.dropout=0.0",
        "task.pad_to=longest",
        "task.batch_size=2",
        "task.eval_batch_size=2",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=2",
        "trainer.check_val_every_n_epoch=null",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar.refresh_rate=0",
        f"callbacks.periodic_checkpoint.every_n_train_steps={STEPS}",
        "+callbacks.diagnostics._target_=rank_diagnostics.RankDiagnostics",
        f"+callbacks.diagnostics.out_dir={run_dir / 'diagnostics'}",
        f"+callbacks.diagnostics.watch_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (run_dir / "data_dir.txt").write_text(str(data))
    return run_dir


@pytest.mark.slow
def test_random_features_identical_across_ranks_at_start_and_after_every_redraw(ddp_run) -> None:
    r0, r1 = _records(ddp_run, 0), _records(ddp_run, 1)
    setups = [r for r in r0 if r["event"] == "setup"], [r for r in r1 if r["event"] == "setup"]
    assert setups[0][0]["world_size"] == 2
    assert setups[0][0]["buffers"] == setups[1][0]["buffers"]  # drawn from the same seed
    steps0 = [r for r in r0 if r["event"] == "train_step"]
    steps1 = [r for r in r1 if r["event"] == "train_step"]
    assert [r["step"] for r in steps0] == [r["step"] for r in steps1] == list(range(1, STEPS + 1))
    w_names = [n for n in steps0[0]["buffers"] if n.endswith("attention.weight")]
    assert len(w_names) == 2  # one W per layer
    for a, b in zip(steps0, steps1, strict=True):
        assert a["buffers"] == b["buffers"], a["step"]  # W and redraw counters
        assert a["grads"] == b["grads"], a["step"]  # all-reduced gradients
        assert a["params"] == b["params"], a["step"]  # identical updates
    for name in w_names:  # W was redrawn (redraw_interval=1): a new matrix after every step
        history = [setups[0][0]["buffers"][name]] + [r["buffers"][name] for r in steps0]
        assert len(set(history)) == STEPS, name


@pytest.mark.slow
def test_gradients_are_the_mean_of_the_ranks_gradients(ddp_run) -> None:
    first = [
        torch.load(ddp_run / "diagnostics" / f"first_step_rank{r}.pt", weights_only=False)
        for r in (0, 1)
    ]
    hp = first[0]["hparams"]
    local = []
    for rank in (0, 1):
        module = LRAModule(hp["cfg"], max_positions=hp["max_positions"])
        module.load_state_dict(first[0]["state"])  # the same initial state on both ranks
        module.train()
        batch = first[rank]["batch"]
        F.cross_entropy(module(batch).float(), batch["labels"]).backward()
        local.append({n: p.grad.clone() for n, p in module.named_parameters()})
    assert not torch.equal(
        first[0]["batch"]["input_ids"][:, :1], first[1]["batch"]["input_ids"][:, :1]
    ) or (
        first[0]["batch"]["labels"].tolist() != first[1]["batch"]["labels"].tolist()
    )  # the ranks trained on different samples
    for name, grad in first[0]["grads"].items():
        mean = (local[0][name] + local[1][name]) / 2
        torch.testing.assert_close(grad, mean, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(first[1]["grads"][name], grad, rtol=0, atol=0)


def _single_process_eval(ckpt: Path, split: str, data_dir: Path) -> tuple[float, float]:
    module = LRAModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    dataset = lra_data.build_dataset("lra_listops", split, data_dir, max_length=2000)
    batch = lra_data.Collator()([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits = module(batch)
    loss = F.cross_entropy(logits.float(), batch["labels"]).item()
    acc = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    return acc, loss


@pytest.mark.slow
def test_metrics_count_every_sample_once(ddp_run) -> None:
    for rank, share in ((0, 5), (1, 4)):
        ends = [r for r in _records(ddp_run, rank) if r["event"] in ("validation_end", "test_end")]
        assert len(ends) == 3  # validations at steps 2 and 4, then the test
        for end in ends:
            assert end["local_samples"] == share and end["total_samples"] == ROWS, end
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    data_dir = Path((ddp_run / "data_dir.txt").read_text())
    acc, loss = _single_process_eval(ddp_run / "checkpoints" / "last.ckpt", "val", data_dir)
    assert metrics["val/acc"] == pytest.approx(acc, abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-5)
    acc, loss = _single_process_eval(Path(metrics["test/ckpt_path"]), "test", data_dir)
    assert metrics["test/acc"] == pytest.approx(acc, abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
def test_only_rank_zero_writes_logs_and_checkpoints(ddp_run) -> None:
    writes = [
        {
            path
            for _, path in json.loads(
                (ddp_run / "diagnostics" / f"writes_rank{r}.json").read_text()
            )
        }
        for r in (0, 1)
    ]
    assert writes[1] == set(), writes[1]  # rank 1 wrote nothing under the run directory
    assert "csv/metrics.csv" in writes[0] and "metrics.json" in writes[0]
    assert "checkpoints/last.ckpt" in writes[0]  # via an atomic rename
    top = sorted(p.name for p in ddp_run.iterdir())
    # rank 1's only file is Hydra's own job log, opened before training (train_ddp_process_1.log)
    assert [n for n in top if "process_1" in n] == ["train_ddp_process_1.log"]
    assert not list(ddp_run.rglob("*rank_1*")) and not (ddp_run / "lightning_logs").exists()


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_ranks_at_the_same_step(tmp_path) -> None:
    """A signal that reaches only rank 1 still stops both ranks after the same step, with one
    checkpoint written by rank 0 (no hang in a collective, no rank left training)."""
    data = tmp_path / "data"
    lra_data.write_fixture("lra_listops", data, rows_per_split=8, seed=0)
    env = _env()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "trainer=ddp_sim",
            "task=lra_listops",
            "attention=favor_plus",
            f"task.data_dir={data}",
            "attention.num_features=16",
            *TINY_MODEL,
            "task.pad_to=longest",
            "task.batch_size=2",
            "trainer.max_steps=8",
            "trainer.val_check_interval=100",
            "trainer.check_val_every_n_epoch=null",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_model_summary=false",
            "callbacks.progress_bar.refresh_rate=0",
            "+callbacks.fault._target_=faults.FaultInjector",
            "+callbacks.fault.kind=signal",
            "+callbacks.fault.signal=SIGTERM",
            "+callbacks.fault.step=2",
            "+callbacks.fault.rank=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stdout[-3000:] + proc.stderr[-5000:]
    step = int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"])
    assert step in (2, 3)
    rank1_log = (run_dir / "train_ddp_process_1.log").read_text()
    assert "SIGTERM received: stopping after the current training step" in rank1_log
    rank0_log = (run_dir / "train.log").read_text()
    assert f"SIGTERM received: stopped at step {step}, saved" in rank0_log
    assert "SIGTERM received: stopping" not in rank0_log  # rank 0 learnt it from rank 1
