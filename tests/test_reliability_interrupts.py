"""Interrupts that never lose a run, and runs that say how long they take (issue 17, items 5-7):
SIGTERM / SIGHUP leave ``status.json`` ``interrupted`` with the step and the exact resume command;
``ckpt_path=last`` from a fresh run directory finds the latest run of the same name or fails with
that command; a speed/ETA log line and a progress bar over the run's steps; a one-epoch run that
ends before its first validation validates its final weights."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN, compose_config

ROOT = Path(__file__).resolve().parents[1]
RUN = [*TINY_RUN, "num_threads=1"]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}  # tests/ for faults.py
    env.pop("LOCAL_RANK", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def _signal_at(sig: str, step: int, marker: Path) -> list[str]:
    return [
        "+callbacks.fault._target_=faults.FaultInjector",
        "+callbacks.fault.kind=signal",
        f"+callbacks.fault.signal={sig}",
        f"+callbacks.fault.step={step}",
        f"+callbacks.fault.once_marker={marker}",  # a resumed run trains on undisturbed
    ]


def _step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_saves_marks_interrupted_and_prints_the_resume_command(
    sig, code, data_dir, tmp_path
) -> None:
    run_dir = tmp_path / "run"
    proc = _cli([*RUN, f"task.data_dir={data_dir}", *_signal_at(sig, 3, tmp_path / "once"),
                 f"hydra.run.dir={run_dir}"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    step = _step_of(last)
    assert step in (3, 4)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == step
    assert status["signal"] == sig and status["checkpoint"] == str(last)
    command = status["resume_command"]
    assert command.endswith(f"ckpt_path=last hydra.run.dir={run_dir}")
    assert f"Resume with:\n  {command}" in output
    if sig == "SIGHUP":
        return
    # the printed command, as printed, finishes the run
    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"]
    resumed = _cli(words[2:])
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 10 and "test/acc" in metrics
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_ckpt_path_last_from_a_fresh_directory_finds_the_run_or_fails_with_the_command(
    data_dir, tmp_path
) -> None:
    runs = tmp_path / "runs"
    first = runs / "first"
    stopped = _cli([*RUN, f"task.data_dir={data_dir}", *_signal_at("SIGTERM", 3, tmp_path / "o"),
                    f"hydra.run.dir={first}"])
    assert stopped.returncode == 143, (stopped.stdout + stopped.stderr)[-4000:]
    fresh = f"hydra.run.dir={runs}/${{now:%H-%M-%S-%f}}"  # a new directory beside the first

    other = _cli([*RUN, f"task.data_dir={data_dir}", "seed=1", "ckpt_path=last", fresh])
    output = other.stdout + other.stderr
    assert other.returncode == 1, output[-4000:]
    assert "ckpt_path=last: no checkpoint in" in output
    name = "lra_listops.random_features.orthogonal.posrf.m16"
    assert f"no earlier run named {name}.s1 in {runs}" in output, output[-4000:]
    assert "ckpt_path=last 'hydra.run.dir=<its run directory>'" in output

    found = _cli([*RUN, f"task.data_dir={data_dir}", "ckpt_path=last", fresh])
    output = found.stdout + found.stderr
    assert found.returncode == 0, output[-4000:]
    assert f"resuming the latest run named {name}.s0" in output
    assert str(first / "checkpoints" / "last.ckpt") in output
    finished = [d for d in runs.iterdir() if (d / "metrics.json").is_file()]
    assert len(finished) == 1 and finished[0] != first  # the new directory
    metrics = json.loads((finished[0] / "metrics.json").read_text())
    assert metrics["global_step"] == 10  # continued from step 3 or 4, not from 0


@pytest.mark.slow
def test_speed_line_and_a_progress_bar_over_the_runs_steps(data_dir, tmp_path) -> None:
    proc = _cli([*RUN, f"task.data_dir={data_dir}", "callbacks.progress_bar.refresh_rate=1",
                 "callbacks.speed.skip=1", "callbacks.speed.steps=3", "test=false",
                 f"hydra.run.dir={tmp_path}"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "steps/s (" in output and "s/step over 3 steps); 10 steps: about" in output, output
    assert "10/10 [" in output  # the bar's total: the run's 10 steps (16 rows / 4 = 4 per epoch)
    assert "/4 [" not in output.split("Validation")[0]
    # a short start: choices and overrides, the resolved tree in a file (issue 17 item 3)
    assert "  choices: attention=favor_plus " in output
    assert "  overrides: task=lra_listops" in output
    assert f"resolved config: {tmp_path / 'run_config.yaml'}" in output
    assert "batch_size_fn" not in output  # a key of the tree, not printed
    saved = (tmp_path / "run_config.yaml").read_text()
    assert "batch_size_fn" in saved and "run_name: lra_listops.random_features" in saved


def test_speed_estimate_logs_once_with_the_time_left(data_dir, tmp_path, caplog) -> None:
    from spectra.training import train

    cfg = compose_config([*RUN, f"task.data_dir={data_dir}", "test=false",
                          "callbacks.speed.skip=2", "callbacks.speed.steps=4",
                          # the sanity check and a validation mid-timing (as default runs have)
                          "trainer.num_sanity_val_steps=1", "trainer.val_check_interval=4"],
                         tmp_path)
    with caplog.at_level(logging.INFO, logger="spectra.training.callbacks"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("speed:")]
    assert len(lines) == 1 and "over 4 steps); 10 steps: about" in lines[0], lines


def test_one_epoch_run_without_a_validation_validates_its_final_weights(
    data_dir, tmp_path, caplog
) -> None:
    from spectra.training import train

    one_epoch = ["trainer.max_steps=-1", "trainer.max_epochs=1"]  # 4 steps, val every 100
    cfg = compose_config([*RUN, f"task.data_dir={data_dir}", *one_epoch], tmp_path)
    with caplog.at_level(logging.WARNING, logger="spectra.training.run"):
        metrics = train(cfg)
    assert metrics["global_step"] == 4
    assert "training ended before its first validation" in caplog.text
    assert metrics["val/acc"] is not None and metrics["objective"] == metrics["val/acc"]
    assert "test/acc" in metrics
