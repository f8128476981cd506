"""scripts/throughput.py: a tiny CPU run of softmax vs favor_sharp on synthetic LRA Text (every
output written, ratio row present), failed runs recorded without stopping the others, the
overrides each run gets, and clear errors for bad input."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from tiny import TINY_MODEL

import lra_data

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "throughput.py"
TINY = [*TINY_MODEL, "task.max_length=64", "task.batch_size=4",
        "trainer.log_every_n_steps=1"]  # a step time from the first steps, even on a busy machine


@pytest.fixture(scope="module")
def tp():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "throughput.csv", newline="") as fh:
        return {row["attention"]: row for row in csv.DictReader(fh)}


def test_tiny_cpu_run_writes_every_output(tp, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out dir"  # a space: the run directory must reach Hydra quoted
    argv = ["--seconds", "3", "--synthetic-data", "64", "--trainer", "cpu",
            "--precision", "32-true", "--out", str(out), "--", *TINY]
    assert tp.main(argv) == 0

    rows = _rows(out)
    assert list(rows) == ["softmax", "favor_sharp"]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["error"])
        assert int(row["steps"]) > 0
        assert float(row["steps_per_s"]) > 0
        assert float(row["steps_per_s"]) == pytest.approx(1 / float(row["mean_step_s"]))
        assert float(row["tokens_per_s"]) > 0 and float(row["peak_mem_mib"]) > 0
        assert row["batch_size"] == "4" and row["max_length"] == "64"
        assert row["precision"] == "32-true" and row["peak_mem_kind"] == "cpu_peak_rss"
        run_dir = out / name
        assert Path(row["run_dir"]) == run_dir
        assert (run_dir / "metrics.json").is_file()
        assert not (run_dir / "checkpoints").exists()  # checkpointing off
        assert "val/acc" not in (run_dir / "csv" / "metrics.csv").read_text()  # no validation
    # the time limit stopped training: 3 s of steps at the measured rate, not 50k steps
    steps, rate = int(rows["softmax"]["steps"]), float(rows["softmax"]["steps_per_s"])
    assert steps < 3 * rate * 1.5 + 10

    summary = (out / "summary.md").read_text()
    ratio = float(rows["favor_sharp"]["steps_per_s"]) / float(rows["softmax"]["steps_per_s"])
    row = next(line for line in summary.splitlines() if line.startswith("| favor_sharp vs softmax"))
    assert row.split("|")[2].strip() == f"{ratio:.2f}"
    assert "SYNTHETIC" in summary and "scripts/throughput.py --seconds 3" in summary
    assert "favor_sharp vs softmax: steps/s" in capsys.readouterr().out

    # the synthetic reviews load through the real lra_text loader, each past max_length
    ds = lra_data.build_dataset("lra_text", "train", out / "data", max_length=64)
    assert len(ds) > 0 and ds.num_truncated == len(ds)
    assert len(lra_data.build_dataset("lra_text", "test", out / "data", max_length=64)) == 64


def test_failed_runs_are_recorded_and_the_others_still_run(tp, tmp_path: Path,
                                                           monkeypatch) -> None:
    out = tmp_path / "out"
    argv = ["--attentions", "softmax", "linear", "--seconds", "1", "--synthetic-data", "16",
            "--trainer", "cpu", "--out", str(out)]
    make = tp.run_overrides  # every run fails inside train.py (the script itself composes fine)
    monkeypatch.setattr(tp, "run_overrides", lambda *a: [*make(*a), "no_such_key=1"])
    assert tp.main(argv) == 1
    rows = _rows(out)
    assert list(rows) == ["softmax", "linear"]  # the second ran after the first failed
    for row in rows.values():
        assert row["status"] == "failed" and row["returncode"] == "1"
        assert "no_such_key" in row["error"]
    summary = (out / "summary.md").read_text()
    assert "FAILED" in summary and "vs softmax" not in summary


def test_run_overrides(tp, tmp_path: Path) -> None:
    args, extra = tp.parse_args(["--attentions", "favor_sharp", "--seconds", "90", "--trainer",
                                 "cpu", "--data-dir", str(tmp_path), "--", "task.batch_size=8"])
    assert args.precision == "32-true" and not args.cuda
    over = tp.run_overrides(args, "favor_sharp", tmp_path / "a b", args.data_dir, extra)
    assert over[:4] == ["experiment=lra_paper", "task=lra_text", "attention=favor_sharp",
                        "trainer=cpu"]
    for item in ("++trainer.max_time={seconds:90}", "trainer.limit_val_batches=0", "test=false",
                 "trainer.enable_checkpointing=false", "callbacks.model_checkpoint=null",
                 "logger=csv", f"hydra.run.dir='{tmp_path / 'a b'}'", "task.search_dirs=[]",
                 f"task.data_dir={tmp_path}"):
        assert item in over, item
    assert over[-1] == "task.batch_size=8"  # extra overrides come last, so they win
    assert tp.task_max_length("lra_text", []) == 4000
    assert tp.task_max_length("lra_text", ["task.max_length=64", "seed=3"]) == 64
    assert tp.uses_cuda("gpu", []) and not tp.uses_cuda("cpu", [])
    assert not tp.uses_cuda("gpu", ["trainer.accelerator=cpu"])
    # read from the presets (defaults lists followed), not from their names
    assert tp.uses_cuda("ddp", []) and not tp.uses_cuda("ddp_sim", [])
    assert tp.uses_cuda("cpu", ["trainer.accelerator=gpu"])
    assert tp.task_max_length("lra_listops", []) == 2000


def test_last_error_line(tp) -> None:
    stderr = ("Epoch 0: 10%|█\rEpoch 0: 20%|██\nTraceback (most recent call last):\n"
              "  File \"x.py\", line 1\nspectra.training.data.MissingDataError: no data found\n"
              "  - /nope: directory does not exist\n\n"
              "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n")
    assert tp.last_error_line(stderr) == "spectra.training.data.MissingDataError: no data found"
    assert tp.last_error_line("Epoch 0: 10%\rkilled\n") == "killed"
    assert tp.last_error_line("") == ""


def test_unknown_attention_lists_the_presets(tp, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        tp.main(["--attentions", "softmax", "favor_sharpp", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown attention preset 'favor_sharpp'" in err
    presets = sorted(p.stem for p in (REPO / "conf" / "attention").glob("*.yaml"))
    assert {"softmax", "favor_sharp"} <= set(presets)
    assert ", ".join(presets) in err
    assert not (tmp_path / "throughput.csv").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "0"], "--seconds must be a positive number"),
        (["--seconds", "-5"], "--seconds must be a positive number"),
        (["--seconds", "nan"], "--seconds must be a positive number"),
        (["--task", "lra_txt"], "unknown task preset 'lra_txt'"),
        (["--trainer", "tpu"], "unknown trainer preset 'tpu'"),
        (["--attentions", "softmax", "softmax"], "given twice: softmax"),
        (["--task", "lra_listops", "--synthetic-data", "64"], "--synthetic-data supports"),
        (["--synthetic-data", "3"], "at least 16"),
        (["--data-dir", "/nonexistent/dir"], "is not a directory"),
        (["--", "no_such_key=1"], "the overrides after -- do not compose"),
    ],
)
def test_bad_input_is_a_clear_error(tp, argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        tp.parse_args(["--trainer", "cpu", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
