"""Ctrl-C (SIGINT) and SIGTERM: the run saves last.ckpt after the current step, exits with
128 + signal number (130 / 143) without a traceback, and ``ckpt_path=last`` finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tiny import TINY_RUN

import lra_data
from spectra.training.signals import GracefulShutdown, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]
RUN = TINY_RUN


def _fault(sig: str, step: int) -> list[str]:
    return [
        "+callbacks.fault._target_=faults.FaultInjector",
        "+callbacks.fault.kind=signal",
        f"+callbacks.fault.signal={sig}",
        f"+callbacks.fault.step={step}",
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lra")
    lra_data.write_fixture("lra_listops", root, rows_per_split=16, seed=0)
    return root


def _train(overrides: list[str], out: Path) -> dict:
    from spectra.training import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", *overrides])
    return train(cfg)


def _step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130_then_resumes(data_dir, tmp_path) -> None:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}  # tests/ for faults.py
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *RUN,
            f"task.data_dir={data_dir}",
            *_fault("SIGINT", 4),
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 130, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    step = _step_of(last)
    # the signal arrives at the end of step 4; the run stops at the end of step 4 or 5
    assert step in (4, 5)
    assert f"SIGINT received: stopped at step {step}, saved {last}; exit code 130" in output
    assert not (tmp_path / "metrics.json").exists()  # no test phase after an interrupt
    logged = (tmp_path / "csv" / "metrics.csv").read_text()  # loggers were flushed
    assert "train/loss" in logged

    metrics = _train([*RUN, f"task.data_dir={data_dir}", "ckpt_path=last"], tmp_path)
    assert metrics["global_step"] == 10 and "test/acc" in metrics


def test_sigterm_in_process_stops_cleanly_and_restores_handlers(data_dir, tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as err:
        _train([*RUN, f"task.data_dir={data_dir}", *_fault("SIGTERM", 3)], tmp_path)
    assert err.value.code == 143 and err.value.signum == signal.SIGTERM
    assert err.value.step == _step_of(tmp_path / "checkpoints" / "last.ckpt") in (3, 4)
    assert signal.getsignal(signal.SIGTERM) == before


def test_without_the_handler_sigterm_leaves_no_checkpoint_and_exit_status_0(
    data_dir, tmp_path
) -> None:
    """Lightning alone stops at the step's end with a SIGTERMException: no checkpoint, and a
    SystemExit without a code — exit status 0, a finished job to a scheduler."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    with pytest.raises(SIGTERMException) as err:
        _train(
            [
                *RUN,
                f"task.data_dir={data_dir}",
                *_fault("SIGTERM", 3),
                "callbacks.graceful_shutdown=null",
            ],
            tmp_path,
        )
    assert err.value.code is None
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_second_signal_falls_back_to_the_default() -> None:
    guard = GracefulShutdown(dirpath="unused")
    before = signal.getsignal(signal.SIGINT)
    try:
        guard._handle(signal.SIGINT, None)
        assert guard.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            guard._handle(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
