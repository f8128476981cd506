"""Unit tests of the training helpers: callbacks, schedule, run names, data-dir search."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from spectra.training import callbacks as cb
from spectra.training.data import candidate_dirs
from spectra.training.module import warmup_steps
from spectra.training.naming import run_name, run_tags


def test_feature_sync_check_passes_on_equal_and_fails_on_different_states(monkeypatch) -> None:
    module = torch.nn.Linear(3, 2)
    check = cb.FeatureSyncCheck()
    fingerprint = cb.state_fingerprint(module)
    monkeypatch.setattr(cb, "_gather_strings", lambda value: [value, fingerprint])
    check._check(module, "at setup")  # identical on both "ranks"
    assert check.ranks_checked == 2
    other = torch.nn.Linear(3, 2)
    with torch.no_grad():
        other.weight.add_(1e-7)
    monkeypatch.setattr(
        cb, "_gather_strings", lambda value: [fingerprint, cb.state_fingerprint(other)]
    )
    with pytest.raises(RuntimeError, match="differs across DDP ranks"):
        check._check(module, "at setup")


def test_state_fingerprint_sees_buffers_and_scalars() -> None:
    m = torch.nn.Module()
    m.register_buffer("w", torch.zeros(2, 2))
    m.register_buffer("step", torch.zeros((), dtype=torch.long))
    before = cb.state_fingerprint(m)
    m.step += 1
    assert cb.state_fingerprint(m) != before
    m.step -= 1
    assert cb.state_fingerprint(m) == before


def test_throughput_monitor_measures_count_real_tokens() -> None:
    batch = {
        "input_ids": torch.ones(2, 8, dtype=torch.long),
        "mask": torch.tensor([[True] * 8, [True] * 3 + [False] * 5]),
        "input_ids2": torch.ones(2, 4, dtype=torch.long),
        "mask2": torch.ones(2, 4, dtype=torch.bool),
        "labels": torch.zeros(2, dtype=torch.long),
    }
    assert cb.real_tokens(batch) == 11 + 8
    assert cb.batch_size(batch) == 2


def test_peak_memory_is_positive_on_cpu() -> None:
    assert cb.peak_memory_mb(torch.device("cpu")) > 1.0


def test_progress_bar_choice() -> None:
    assert isinstance(cb.progress_bar(rich=True), RichProgressBar)
    assert isinstance(cb.progress_bar(rich=False, refresh_rate=10), TQDMProgressBar)


@pytest.mark.parametrize("rich", [False, True])
def test_progress_bar_counts_the_runs_steps_across_epochs(rich) -> None:
    """10 steps over epochs of 4 batches: one bar of total 10 (not 4, nor "Epoch 0/-2")."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    bar = cb.progress_bar(refresh_rate=1, rich=rich)
    seen: list[tuple[object, float, float, str]] = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if rich:
                task = bar.progress.tasks[bar.train_progress_bar_id]
                seen.append((task.id, task.total, task.completed, task.description))
            else:
                tqdm = bar.train_progress_bar
                seen.append((id(tqdm), tqdm.total, tqdm.n, tqdm.desc))

    trainer = L.Trainer(
        max_steps=10, max_epochs=-1, limit_train_batches=4, limit_val_batches=0,
        callbacks=[bar, Spy()], logger=False, enable_checkpointing=False,
        enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert [(total, done) for _, total, done, _ in seen] == [(10, 4), (10, 8), (10, 10)]
    assert len({bar_id for bar_id, *_ in seen}) == 1  # one bar, never reset
    assert [desc.strip().rstrip(":") for *_, desc in seen] == ["Epoch 0", "Epoch 1", "Epoch 2"]


def test_speed_estimate_checks_its_options() -> None:
    with pytest.raises(ValueError, match="SpeedEstimate steps must be an int >= 1, got 0"):
        cb.SpeedEstimate(steps=0)
    assert cb.format_duration(59.6) == "1 min 00 s"
    assert cb.format_duration(3725) == "1 h 02 min" and cb.format_duration(12) == "12 s"


@pytest.mark.parametrize(
    ("requested", "total", "expected"),
    [(1000, 5_000, 1000), (1000, 2, 0), (1000, 5, 2), (0, 10, 0), (1, 100, 0), (100, 1500, 100)],
)
def test_warmup_steps_keeps_one_cycle_valid(requested, total, expected) -> None:
    steps = warmup_steps(requested, total)
    assert steps == expected
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1e-3, total_steps=total, pct_start=steps / total
    )
    for _ in range(total):  # Lightning steps the schedule after every optimizer step
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=">= 0"):
        warmup_steps(-1, 10)


def test_run_name_and_tags() -> None:
    cfg = {
        "seed": 3,
        "task": {"name": "lra_text"},
        "attention": {
            "name": "random_features",
            "head_dim": 32,
            "num_features": 128,
            "sampler": {"name": "orthogonal"},
            "feature_map": {"name": "saderf"},
        },
    }
    assert run_name(cfg) == "lra_text.random_features.orthogonal.saderf.m128.s3"
    assert run_tags(cfg) == [
        "task=lra_text",
        "attention=random_features",
        "sampler=orthogonal",
        "feature_map=saderf",
        "m=128",
    ]
    soft = {
        "seed": 0,
        "task": {"name": "lra_listops"},
        "attention": {"name": "softmax", "head_dim": 32},
    }
    assert run_name(soft) == "lra_listops.softmax.s0"


def test_candidate_dirs_order_and_dedup(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dirs = candidate_dirs(None, ["data", "data", str(tmp_path / "abs")])
    assert dirs[0] == (tmp_path / "data").resolve()
    assert dirs[-1] == (tmp_path / "abs").resolve()
    assert len(dirs) == len(set(dirs))


def test_num_threads_is_validated() -> None:
    from spectra.training.run import _set_threads

    before = torch.get_num_threads()
    _set_threads(None)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        _set_threads(0)


def test_cpu_peak_memory_resets_between_jobs() -> None:
    """An in-process multirun must not report an earlier job's peak: the reset lowers it."""
    import sys

    import torch

    from spectra.training.callbacks import peak_memory_mb, reset_peak_memory

    if not sys.platform.startswith("linux"):
        import pytest

        pytest.skip("VmHWM reset is Linux-only")
    cpu = torch.device("cpu")
    assert reset_peak_memory(cpu)
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    big += 1
    high = peak_memory_mb(cpu)
    del big
    assert reset_peak_memory(cpu)
    low = peak_memory_mb(cpu)
    assert high - low > 32, (high, low)
