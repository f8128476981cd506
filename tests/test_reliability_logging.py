"""A logging failure never stops training: W&B with no network, a bad API key, a full disk
before or during the run, or a hanging ``wandb.finish`` becomes a warning and CSV logging, within
a bounded time."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger
from tiny import TINY_RUN, compose_config

import lra_data
from spectra.training import logging_guard
from spectra.training.loggers import finish_wandb, wandb_logger

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, never valid anywhere


@pytest.fixture(autouse=True)
def _clean_wandb_env(monkeypatch):
    for key in ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    yield
    finish_wandb(timeout=10)
    wandb = sys.modules.get("wandb")
    if wandb is not None:  # settings (base URL, key) are cached per process until a teardown
        wandb.teardown()


def test_no_network_falls_back_to_csv_within_the_init_timeout(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    start = time.monotonic()
    logger = wandb_logger(save_dir=str(tmp_path), mode="online", init_timeout=3)
    elapsed = time.monotonic() - start
    assert isinstance(logger, CSVLogger)
    assert elapsed < 3 + 20, elapsed  # bounded by init_timeout (plus process start-up)
    err = capsys.readouterr().err
    assert "WARNING: W&B logging is unavailable (" in err
    assert f"logging to CSV in {tmp_path}/wandb_fallback instead" in err
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert (tmp_path / "wandb_fallback" / "metrics.csv").is_file()


def test_bad_api_key_falls_back_to_csv(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_API_KEY", "bad")
    start = time.monotonic()
    logger = wandb_logger(save_dir=str(tmp_path), mode="online", init_timeout=3)
    assert isinstance(logger, CSVLogger) and time.monotonic() - start < 20
    assert "W&B logging is unavailable (AuthenticationError" in capsys.readouterr().err


def test_full_wandb_directory_falls_back_before_starting(monkeypatch, tmp_path, capsys):
    real = shutil.disk_usage

    def full(path):
        usage = real(path)
        return SimpleNamespace(total=usage.total, used=usage.total, free=1024 * 1024)

    monkeypatch.setattr(logging_guard.shutil, "disk_usage", full)
    logger = wandb_logger(save_dir=str(tmp_path / "run"), wandb_dir=str(tmp_path / "w"))
    assert isinstance(logger, CSVLogger)
    err = capsys.readouterr().err
    assert "W&B logging is unavailable (OSError: [Errno 28] only 1.0 MiB free in" in err
    assert not (tmp_path / "w" / "wandb").exists()  # W&B never started writing there


def _mount_full_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target.mkdir()
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)], capture_output=True
        ).returncode
        == 0
    )
    if ok:
        with open(target / "filler", "wb") as f:
            try:
                f.write(b"\0" * 1024 * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ok


def test_really_full_disk_falls_back_to_csv_elsewhere(tmp_path, capsys):
    """With a real full filesystem (a 256 KiB tmpfs; needs root, else skipped)."""
    full = tmp_path / "full"
    if not _mount_full_tmpfs(full):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        logger = wandb_logger(save_dir=str(tmp_path / "run"), wandb_dir=str(full), mode="offline")
        assert isinstance(logger, CSVLogger)
        assert "only 0.0 MiB free in" in capsys.readouterr().err
        logger.log_metrics({"a": 1.0}, step=0)
        logger.save()
        assert (tmp_path / "run" / "wandb_fallback" / "metrics.csv").is_file()
    finally:
        finish_wandb(timeout=10)
        subprocess.run(["umount", str(full)], check=False)


def test_finish_is_bounded_in_time(monkeypatch, capsys):
    import wandb

    release = threading.Event()
    monkeypatch.setattr(wandb, "run", SimpleNamespace(id="x"))
    monkeypatch.setattr(wandb, "finish", lambda exit_code=0: release.wait(60))
    start = time.monotonic()
    try:
        finish_wandb(timeout=1.0)
        assert time.monotonic() - start < 5
        assert "wandb.finish did not finish within 1 s" in capsys.readouterr().err
    finally:
        release.set()


def test_low_disk_during_the_run_switches_to_csv(monkeypatch, tmp_path, capsys):
    logger = wandb_logger(save_dir=str(tmp_path), mode="offline", min_free_mb=1.0)
    assert not isinstance(logger, CSVLogger)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    real = shutil.disk_usage
    monkeypatch.setattr(
        logging_guard.shutil,
        "disk_usage",
        lambda p: SimpleNamespace(total=real(p).total, used=real(p).total, free=0),
    )
    logger.log_metrics({"train/loss": 0.5}, step=1)  # the disk is full now
    logger.log_metrics({"train/loss": 0.25}, step=2)
    logger.save()
    assert "W&B logging failed during the run (only 0.0 MiB free in" in capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "wandb_fallback" / "metrics.csv")))
    assert [r["train/loss"] for r in rows] == ["0.5", "0.25"]
    assert "lr" in (tmp_path / "wandb_fallback" / "hparams.yaml").read_text()


def test_wandb_error_mid_training_does_not_stop_the_run(monkeypatch, tmp_path, capsys):
    from wandb.sdk import wandb_run

    from spectra.training import train

    data = tmp_path / "data"
    lra_data.write_fixture("lra_listops", data, rows_per_split=16, seed=0)
    calls = {"n": 0}
    real_log = wandb_run.Run.log

    def flaky_log(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(wandb_run.Run, "log", flaky_log)
    overrides = [*TINY_RUN, "logger=wandb", "logger.wandb.mode=offline", f"task.data_dir={data}",
                 "trainer.max_steps=6", "trainer.val_check_interval=3"]
    cfg = compose_config(overrides, tmp_path / "run")
    metrics = train(cfg)
    assert metrics["global_step"] == 6 and "test/acc" in metrics  # training went on
    err = capsys.readouterr().err
    assert "W&B logging failed during the run (log_metrics: OSError: [Errno 28]" in err
    rows = list(csv.DictReader(open(tmp_path / "run" / "wandb_fallback" / "metrics.csv")))
    steps = {int(r["step"]) for r in rows if r.get("train/loss")}
    assert {4, 5} <= steps  # the later steps are in the CSV fallback
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "logger/wandb_id" not in saved  # no claim of a W&B run that stopped logging
