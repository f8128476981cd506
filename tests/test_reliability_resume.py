"""Faults: a run killed at any moment (SIGKILL, a crash) resumes from ``ckpt_path=last`` and, on
CPU with a fixed seed, computes exactly the losses of an uninterrupted run; data order, LR
schedule, random-feature draws, redraw counter and dropout masks all resume. The checkpoints are
Lightning's (``ModelCheckpoint(every_n_train_steps=…, save_last=True)``), the data position a
torchdata ``StatefulDataLoader``'s.

The kill test runs ``python train.py`` as a user does and kills it from outside with SIGKILL
at an arbitrary moment (checkpoints are written every step, so the kill often lands close to a
checkpoint write); the crash tests stop an in-process run at chosen steps with an injected fault.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import InjectedFault
from hydra import compose, initialize_config_dir
from lightning.fabric.utilities.types import _Stateful
from tiny import TINY_MODEL

import lra_data
from spectra.training.resume import ResumableSampler, make_loader

ROOT = Path(__file__).resolve().parents[1]

# 16 training rows, batch 4: 4 steps per epoch; validation every 5 steps; dropout on; every
# random-feature layer redraws W every 2 steps; deterministic kernels.
RUN = [
    "task=lra_listops",
    "attention=favor_plus",
    "attention.num_features=16",
    "++attention.redraw_interval=2",
    *TINY_MODEL,
    "model.dropout=0.1",
    "task.pad_to=longest",
    "task.batch_size=4",
    "trainer.val_check_interval=5",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.deterministic=true",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
    "test=false",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lra")
    lra_data.write_fixture("lra_listops", root, rows_per_split=16, seed=0)
    return root


def _losses(run_dir: Path) -> dict[int, float]:
    """train/loss per logged step from ``<run dir>/csv/metrics.csv`` (a step logged twice — by
    the killed run and again after the resume — keeps its last value)."""
    out: dict[int, float] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


def _lrs(run_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("lr-AdamW"):
                out[int(row["step"])] = float(row["lr-AdamW"])
    return out


def _final_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:  # weights, W buffers and redraw counters
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(),
        b["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]


# -- the sampler ----------------------------------------------------------------------------------
def test_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    data = list(range(10))
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == data
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(ResumableSampler(data, seed=4)) != list(ResumableSampler(data, seed=3))
    assert list(ResumableSampler(data, shuffle=False)) == data


def test_sampler_state_resumes_the_epoch_where_it_stood() -> None:
    sampler = ResumableSampler(list(range(10)), seed=1)
    sampler.set_epoch(5)
    full = sampler.order(5)
    it = iter(sampler)
    assert [next(it) for _ in range(4)] == full[:4]
    state = sampler.state_dict()
    fresh = ResumableSampler(list(range(10)), seed=1)
    fresh.load_state_dict(state)
    assert fresh.epoch == 5 and list(fresh) == full[4:]
    assert list(fresh) == full  # the next pass of the same epoch starts at 0 again
    fresh.load_state_dict(state)
    fresh.set_epoch(6)  # a new epoch starts at its first sample
    assert list(fresh) == fresh.order(6)
    assert len(fresh) == 10  # length (and so the step count of an epoch) never changes


@pytest.mark.parametrize("n", [7, 8])
def test_sampler_shards_ranks(n: int) -> None:
    data = list(range(n))
    train = [ResumableSampler(data, seed=0, pad=True, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == -(-n // 2)  # equal steps on every rank
    assert set(train[0]) | set(train[1]) == set(data)
    evals = [
        ResumableSampler(data, shuffle=False, pad=False, num_replicas=2, rank=r) for r in (0, 1)
    ]
    seen = list(evals[0]) + list(evals[1])
    assert sorted(seen) == data  # evaluation counts every sample exactly once
    assert len(evals[0]) + len(evals[1]) == n


def test_loader_is_resumable_for_lightning() -> None:
    """A torchdata StatefulDataLoader (Lightning saves and restores its state) over the seeded
    sampler: restored mid-epoch, it yields the rest of that epoch's order."""
    loader = make_loader(list(range(12)), batch_size=2, train=True, seed=0)
    assert isinstance(loader, _Stateful)
    loader.sampler.set_epoch(4)
    batches = [b.tolist() for b in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    fresh = make_loader(list(range(12)), batch_size=2, train=True, seed=0)
    fresh.load_state_dict(state)  # applied when the next iterator is made
    assert [b.tolist() for b in fresh] == batches[2:] and fresh.sampler.epoch == 4


# -- crashes at chosen steps (in process) ---------------------------------------------------------
def _compose(overrides: list[str], out: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out}", *overrides])


def _train(overrides: list[str], out: Path) -> dict:
    from spectra.training import train

    return train(_compose(overrides, out))


@pytest.fixture(scope="module")
def references(data_dir, tmp_path_factory):
    """Uninterrupted runs of 12 steps (3 epochs), one per validation interval (cached)."""
    runs: dict[int, Path] = {}

    def get(val_every: int) -> Path:
        if val_every not in runs:
            out = tmp_path_factory.mktemp(f"reference{val_every}")
            _train([*_crash_run(data_dir, 3, val_every)], out)
            runs[val_every] = out
        return runs[val_every]

    return get


def _crash_run(data_dir: Path, every: int, val_every: int) -> list[str]:
    return [
        *RUN,
        f"task.data_dir={data_dir}",
        "trainer.max_steps=12",
        f"trainer.val_check_interval={val_every}",
        f"callbacks.periodic_checkpoint.every_n_train_steps={every}",
    ]


@pytest.mark.parametrize(
    ("every", "val_every", "crash_at", "resumed_from", "where"),
    [
        (3, 5, 4, 3, "mid epoch 0"),
        (4, 5, 5, 4, "at the end of epoch 0"),
        (5, 5, 7, 5, "after a validation mid epoch 1"),
        (3, 4, 5, 4, "after a validation at the end of epoch 0"),
        (3, 5, 8, 6, "mid epoch 1, after a redraw"),
    ],
)
def test_crash_then_resume_repeats_the_uninterrupted_losses(
    data_dir, references, tmp_path, every, val_every, crash_at, resumed_from, where
) -> None:
    run = _crash_run(data_dir, every, val_every)
    crash = [
        "+callbacks.fault._target_=faults.FaultInjector",
        "+callbacks.fault.kind=raise",
        f"+callbacks.fault.step={crash_at}",
    ]
    with pytest.raises(InjectedFault):
        _train([*run, *crash], tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == resumed_from, where
    _train([*run, "ckpt_path=last"], tmp_path)
    reference = references(val_every)
    expected, got = _losses(reference), _losses(tmp_path)
    after = [s for s in expected if s >= resumed_from]  # CSV step s = the (s+1)-th step
    assert after and all(got[s] == expected[s] for s in after), (where, got, expected)
    assert all(_lrs(tmp_path)[s] == _lrs(reference)[s] for s in after)
    # the checkpoint of step 12: weights, W, redraw counters, optimizer and schedule identical
    assert torch.load(last, weights_only=False)["global_step"] == 12
    _assert_same_state(_final_state(tmp_path), _final_state(reference))


# -- SIGKILL from outside, at an arbitrary moment -------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LOCAL_RANK", None)
    tools = ROOT / "tests"  # faults.py
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tools), env.get("PYTHONPATH", "")])
    return env


def _cmd(run_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *extra, f"hydra.run.dir={run_dir}"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_ckpt_path_last_matches_uninterrupted_run(
    data_dir, tmp_path
) -> None:
    run = [
        *RUN,
        f"task.data_dir={data_dir}",
        "trainer.max_steps=24",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
    ]
    reference = subprocess.run(
        _cmd(tmp_path / "ref", run),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(killed_dir, run),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["global_step"] >= 6:
            break  # mid epoch 1 or later, while checkpoints are being written every step
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # the checkpoint left by the kill is complete (atomic writes), and not the final one
    resumed_from = torch.load(last, weights_only=False)["global_step"]
    assert 6 <= resumed_from < 24
    resumed = subprocess.run(
        _cmd(killed_dir, [*run, "ckpt_path=last"]),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epoch, batch = divmod(resumed_from, 4)  # 4 steps of 4 samples per epoch
    where = f"epoch {epoch}, sample {4 * batch}" if batch else f"epoch {epoch - 1}, sample 16"
    log = resumed.stdout + resumed.stderr
    assert f"resumed the training data at {where}" in log

    expected, got = _losses(tmp_path / "ref"), _losses(killed_dir)
    after = [s for s in expected if s >= resumed_from]
    assert after and all(got[s] == expected[s] for s in after), (resumed_from, got, expected)
    _assert_same_state(_final_state(killed_dir), _final_state(tmp_path / "ref"))
    assert not list((killed_dir / "checkpoints").glob(".partial-*"))  # stale temp files removed
