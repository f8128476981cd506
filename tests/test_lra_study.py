"""The LRA study: its experiments compose to the protocol they state, ``ckpt_path=auto`` resumes
only this run directory's checkpoint, and ``scripts/lra_study.py`` turns a multirun directory into
runs.csv, curves and tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from tiny import ROOT

from spectra.training.resume import resume_from

_spec = importlib.util.spec_from_file_location("lra_study", ROOT / "scripts" / "lra_study.py")
lra_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lra_study)

TASKS = ("lra_text", "lra_listops", "lra_pathfinder")


@pytest.mark.parametrize("task", TASKS)
def test_budget_experiment_is_the_paper_model_under_the_tasks_budget(compose_config, task):
    paper = compose_config(["experiment=lra_paper", f"task={task}"])
    cfg = compose_config(["experiment=lra_study_budget", f"task={task}"])
    assert cfg.model == paper.model and cfg.task.max_length == paper.task.max_length
    budget = cfg.budget[task]
    assert cfg.trainer.max_time == budget.max_time and cfg.trainer.max_steps == 50000
    assert cfg.trainer.val_check_interval == budget.val_every
    assert cfg.trainer.limit_test_batches == budget.test_batches
    assert cfg.ckpt_path == "auto" and cfg.num_threads == 1


def test_study_experiment_is_the_paper_protocol(compose_config):
    paper = compose_config(["experiment=lra_paper", "task=lra_text"])
    cfg = compose_config(["experiment=lra_study", "task=lra_text"])
    assert cfg.trainer == paper.trainer and cfg.optim == paper.optim
    assert cfg.ckpt_path == "auto" and "budget" not in cfg


@pytest.mark.parametrize("has_checkpoint", [False, True])
def test_ckpt_path_auto_resumes_only_this_directory(tmp_path, has_checkpoint):
    if has_checkpoint:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"ckpt_path": "auto", "paths": {"output_dir": str(tmp_path)},
                            "run_name": "x"})
    assert resume_from(cfg) == ("last" if has_checkpoint else None)


def _job(root: Path, task: str, num: int, attention: list[str], test_acc: float,
         val: list[tuple[int, float, float]], *, batch: int = 16, test_batches: int = 64) -> None:
    job = root / task / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    sampler = next((a.split("=")[1] for a in attention if a.startswith("attention/sampler")), None)
    feature_map = next((a.split("=")[1] for a in attention if "feature_map" in a), None)
    cfg = {"task": {"name": task, "max_length": 4000, "batch_size": batch},
           "attention": {"name": "random_features" if sampler else attention[0].split("=")[1],
                         "sampler": {"name": sampler}, "feature_map": {"name": feature_map}},
           "trainer": {"max_time": "00:00:10:00", "limit_test_batches": test_batches},
           "seed": 0}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(cfg), job / "run_config.yaml")
    overrides = OmegaConf.create([*attention, f"task={task}"])
    OmegaConf.save(overrides, job / ".hydra" / "overrides.yaml")
    (job / "status.json").write_text(json.dumps({"status": "completed"}))
    (job / "metrics.json").write_text(json.dumps({
        "test/acc": test_acc, "val/acc_best": max(v for _, _, v in val), "global_step": val[-1][0],
        "perf/mean_step_time_s": 2.0, "perf/peak_mem_mb": 3000.0, "wall_time_s": 620.0,
        "data/test_size": 25000}))
    rows = [{"step": s, "train/loss": 0.7} for s, _, _ in val]
    rows += [{"step": s, "time/elapsed_s": t, "val/acc": v} for s, t, v in val]
    pd.DataFrame(rows).to_csv(job / "csv" / "metrics.csv", index=False)


def test_report_writes_runs_curves_and_tables(tmp_path):
    src = tmp_path / "multirun"
    _job(src, "lra_text", 0, ["attention=softmax"], 0.51, [(10, 120.0, 0.5), (20, 240.0, 0.52)])
    _job(src, "lra_text", 1, ["attention=spectraformer", "attention/sampler=mm",
                              "attention/feature_map=oprf"], 0.62,
         [(40, 120.0, 0.55), (80, 240.0, 0.61), (120, 360.0, 0.63)])
    _job(src, "lra_listops", 2, ["attention=favor_plus"], 0.18, [(30, 60.0, 0.17)])
    out = tmp_path / "report"
    assert lra_study.main([str(src), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    for column in ("task", "attention", "sampler", "feature_map", "max_length", "steps",
                   "wall_clock_s", "test_acc", "val_acc", "peak_mem_mib", "steps_per_s"):
        assert column in runs, column
    text = runs[runs.task == "lra_text"].set_index("attention")
    assert list(text.index) == ["mm × oprf", "softmax"]  # best test accuracy first
    assert text.loc["mm × oprf", "steps"] == 120 and text.loc["mm × oprf", "wall_clock_s"] == 360
    assert text.loc["softmax", "test_n"] == 16 * 64
    # 1,024 test reviews: two standard errors of chance are 3.1 points
    assert bool(text.loc["mm × oprf", "learned"]) and not bool(text.loc["softmax", "learned"])
    listops = runs[runs.task == "lra_listops"].iloc[0]
    assert listops["chance"] == 10 and bool(listops["learned"])
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 6 and curves["val_acc"].max() == pytest.approx(63.0)
    assert set(curves["seed"]) == {0}
    assert (out / "lra_text_curves.png").stat().st_size > 0
    report = (out / "results.md").read_text()
    assert "## lra_text" in report and "mm × oprf" in report and "lra_text_curves.png" in report


def test_report_of_an_empty_directory_exits_2(tmp_path, capsys):
    assert lra_study.main([str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err
