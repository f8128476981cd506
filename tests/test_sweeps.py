"""Sweeps: the grid (Hydra's globs over the config groups) mirrors the registries, job planning,
name checks before launching, an end-to-end grid multirun with a crashing cell and its report,
Optuna, submitit configs and W&B sweep specs.

Multiruns run in this process (``train.main`` with ``sys.argv`` set, as ``python train.py -m``
would), so a component registered by a test (a feature map that crashes) takes part.
"""

from __future__ import annotations

import importlib.util
import json
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from tiny import TINY_MODEL

from spectra.features.maps.base import FeatureMap
from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS
from spectra.sweeps.callbacks import check_sweep_names
from spectra.sweeps.sweeper import GridError, SweepFailedError, plan_jobs
from spectra.sweeps.wandb_spec import grid_specs, optuna_spec, parameter_from_override
from spectra.training.config_store import group_options

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

FAST = [
    *TINY_MODEL,
    "task.pad_to=longest",
    "task.batch_size=8",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
]

CRASH_MAP = "crash_test_map"


class CrashingFeatures(FeatureMap):
    """A feature map that fails in the forward pass (a run that crashes mid-training)."""

    positive: ClassVar[bool] = True

    def _scaled(self, x, y, w, x_mask, y_mask):  # type: ignore[override]
        raise RuntimeError("deliberate crash in a test feature map")


@pytest.fixture
def crash_map() -> Iterator[None]:
    """Registers ``crash_test_map`` (train.py gives it a config node, like any component)."""
    FEATURE_MAPS.register(CRASH_MAP)(CrashingFeatures)
    try:
        yield
    finally:
        FEATURE_MAPS.unregister(CRASH_MAP)


def multirun(args: list[str], monkeypatch, wandb_mode: str = "disabled") -> None:
    """``python train.py -m *args`` in this process; Hydra errors are raised, not printed."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setenv("WANDB_MODE", wandb_mode)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", *args])
    GlobalHydra.instance().clear()
    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()


def job_dirs(sweep: Path) -> list[Path]:
    """Job directories (``hydra.sweep.subdir`` ending in the job number) in job order."""
    return sorted((p for p in sweep.rglob("*") if p.name.isdigit() and (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name))


# -- the grid mirrors the registries ------------------------------------------------------------
def _baselines() -> list[str]:
    return list(_hydra_cfg(["hydra/sweeper=spectra_grid"]).hydra.sweeper.baselines)


def test_grid_is_hydras_glob_over_the_registered_components() -> None:
    sweeper = _hydra_cfg(["experiment=spectraformer_grid"]).hydra.sweeper
    assert dict(sweeper.params) == {"attention": "spectraformer", "attention/sampler": "glob(*)",
                                    "attention/feature_map": "glob(*)"}
    assert {"softmax", "skyformer"} <= set(sweeper.baselines) <= set(ATTENTIONS.names())
    GlobalHydra.instance().clear()
    for group, registry in (("attention/sampler", SAMPLERS),
                            ("attention/feature_map", FEATURE_MAPS)):
        assert group_options(group) == sorted(registry.names()), group

    @SAMPLERS.register("dummy_grid_sampler")
    class DummySampler:  # only the name matters for the grid
        pass

    try:  # a newly registered component joins the glob and the W&B grid
        assert "dummy_grid_sampler" in group_options("attention/sampler")
        spec = grid_specs(baselines=[])["grid"]
        assert "dummy_grid_sampler" in spec["parameters"]["attention/sampler"]["values"]
    finally:
        SAMPLERS.unregister("dummy_grid_sampler")


def test_sweep_names_are_checked_against_the_registries() -> None:
    check_sweep_names(["attention/sampler=qmc,orthogonal", "attention/feature_map=glob(*)"])
    with pytest.raises(ValueError, match="orthogonl") as err:
        check_sweep_names(["attention/sampler=orthogonl,qmc", "attention.feature_map.name=posr"])
    assert "registered samplers: " in str(err.value) and "'posr'" in str(err.value)
    with pytest.raises(ValueError, match="options of task: a, b"):
        check_sweep_names(["task=c"], lambda group: ["a", "b"])
    with pytest.raises(ValueError, match="'orthogonl'"):
        grid_specs(samplers=["orthogonl"])


# -- planning -------------------------------------------------------------------------------------
def _parse(lines: list[str]):
    return OverridesParser.create().parse_overrides(lines)


def test_plan_jobs_products_tags_and_attention_options() -> None:
    has_m = lambda cell, override: cell[0] != "attention=softmax"  # noqa: E731 - softmax has no m
    lines = ["attention=spectraformer", "attention/sampler=gaussian,qmc",
             "attention/feature_map=posrf", "seed=0,1", "debug=fdr",
             "attention.num_features=16,32", "tags=[mine]"]
    jobs = plan_jobs(_parse(lines), ["softmax"], has_m)
    # 2 seeds × (2 random-feature cells × 2 m + softmax once): the baseline is not duplicated
    assert len(jobs) == 2 * (2 * 2 + 1)
    assert [j[1] for j in jobs[:5]] == ["attention/sampler=gaussian"] * 2 + [
        "attention/sampler=qmc"] * 2 + ["seed=0"]
    first = jobs[0]
    assert first[:3] == ["attention=spectraformer", "attention/sampler=gaussian",
                         "attention/feature_map=posrf"]
    assert "debug=fdr" in first and "attention.num_features=16" in first
    assert first[-1] == "tags=['mine','seed=0','attention.num_features=16']"
    softmax = [j for j in jobs if j[0] == "attention=softmax"]
    assert [j[-1] for j in softmax] == ["tags=['mine','seed=0']", "tags=['mine','seed=1']"]
    assert not any("num_features" in o for j in softmax for o in j)
    # a later override of a key replaces an earlier one (the command line narrows params)
    narrowed = plan_jobs(_parse(["attention/sampler=glob(*)", "attention/sampler=qmc"]), [],
                         has_m)
    assert narrowed == [["attention/sampler=qmc"]]


def test_plan_jobs_rejects_intervals_and_options_no_cell_has() -> None:
    with pytest.raises(GridError, match="spectra_optuna"):
        plan_jobs(_parse(["optim.lr=interval(1e-4,1e-2)"]), [], lambda c, o: True)
    with pytest.raises(GridError, match="no cell"):
        plan_jobs(_parse(["attention.nope=1"]), ["softmax"], lambda c, o: False)
    assert plan_jobs(_parse(["attention.nope=1"]), ["softmax"], lambda c, o: False,
                     optional=["attention.nope=1"]) == [[], ["attention=softmax"]]


# -- end to end -----------------------------------------------------------------------------------
def test_grid_multirun_records_a_crash_and_reports_every_cell(
    data_dir, crash_map, tmp_path, monkeypatch
) -> None:
    sweep = tmp_path / "sweep"
    args = ["experiment=spectraformer_grid", "attention/sampler=gaussian,qmc",
            f"attention/feature_map=posrf,trig,{CRASH_MAP}", "hydra.sweeper.baselines=[softmax]",
            "debug=fdr", f"task.data_dir={data_dir}", "attention.num_features=8",
            "hydra.sweeper.max_batch_size=2", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${task.name}/${hydra.job.num}", *FAST]
    with pytest.raises(SweepFailedError, match="2 of 7 jobs failed") as err:
        multirun(args, monkeypatch)
    assert "deliberate crash" in str(err.value)

    dirs = job_dirs(sweep)
    assert len(dirs) == 7  # the crash in the second batch of two did not stop the sweep
    manifest = json.loads((sweep / "grid.json").read_text())
    assert [sweep / job["dir"] for job in manifest["jobs"]] == dirs  # the resolved subdirs
    labels = [" × ".join(o.split("=")[1] for o in job["overrides"][1:3])
              if job["overrides"][0] == "attention=spectraformer" else job["overrides"][0][10:]
              for job in manifest["jobs"]]
    assert labels == ["gaussian × posrf", "gaussian × trig", f"gaussian × {CRASH_MAP}",
                      "qmc × posrf", "qmc × trig", f"qmc × {CRASH_MAP}", "softmax"]
    statuses = {label: json.loads((d / "status.json").read_text())
                for label, d in zip(labels, dirs)}
    crashed = statuses[f"qmc × {CRASH_MAP}"]
    assert crashed["status"] == "failed" and crashed["error_type"] == "RuntimeError"
    assert "deliberate crash" in crashed["traceback"]
    assert not (dirs[2] / "metrics.json").exists()
    assert statuses["softmax"]["status"] == "completed"
    from spectra.training import run_tags  # the W&B tags of a run: its grid axes

    job_cfg = yaml.safe_load((dirs[0] / ".hydra" / "config.yaml").read_text())
    assert {"sampler=gaussian", "feature_map=posrf", "task=lra_listops"} <= set(run_tags(job_cfg))

    # the report: right values in the right cells, the crash shown as failed, PNGs and HTML
    from spectra.sweeps.report import build_report

    report = build_report(sweep, tmp_path / "report")
    assert report.status_counts() == {"ok": 5, "failed": 2}
    (block,) = report.blocks
    assert block.rows == ["gaussian", "qmc"] and block.cols == [CRASH_MAP, "posrf", "trig"]
    qmc_trig = json.loads((dirs[4] / "metrics.json").read_text())
    assert block.mean("qmc × trig", "test_acc") == pytest.approx(100 * qmc_trig["test/acc"])
    assert block.mean("qmc × trig", "step_time_ms") == pytest.approx(
        1000 * qmc_trig["perf/mean_step_time_s"])
    markdown = report.markdown.read_text()
    cells = [line.split("|") for line in markdown.splitlines() if line.startswith("|")]
    row = next(c for c in cells if c[1].strip() == "qmc")
    assert row[2].strip() == "1 failed"
    assert f"{100 * qmc_trig['test/acc']:.1f}" in row[4]
    assert any(c[1].strip() == "softmax" for c in cells) and "deliberate crash" in markdown
    for png in report.figures[block.slug]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report.figures[block.slug]) == 4
    html = report.html.read_text()
    assert html.count("data:image/png;base64,") == 4 and "deliberate crash" in html


def test_grid_runs_are_wandb_runs_grouped_by_sweep_and_tagged(data_dir, tmp_path,
                                                              monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    from spectra.sweeps.report import build_report

    started: list[dict] = []
    init = wandb.init

    def recording_init(*args, **kwargs):
        started.append(kwargs)
        return init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    sweep = tmp_path / "grid_wandb"
    multirun(["experiment=spectraformer_grid", "attention/sampler=qmc",
              "attention/feature_map=oprf", "hydra.sweeper.baselines=[]", "seed=0,1",
              "logger=wandb", "debug=fdr", f"task.data_dir={data_dir}",
              "attention.num_features=8", f"hydra.sweep.dir={sweep}", *FAST],
             monkeypatch, wandb_mode="offline")
    assert len(sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))) == 2
    assert [run["group"] for run in started] == ["grid_wandb"] * 2  # the sweep directory's name
    for seed, run in enumerate(started):
        assert {"sampler=qmc", "feature_map=oprf", "task=lra_listops",
                f"seed={seed}"} <= set(run["tags"])
    report = build_report(sweep, tmp_path / "report")
    assert report.blocks[0].seeds("qmc × oprf") == [0, 1]


@pytest.mark.parametrize("callback", [True, False], ids=["callback", "sweeper"])
def test_unregistered_name_fails_before_launching(data_dir, tmp_path, monkeypatch,
                                                  callback) -> None:
    # checked twice: by the sweep callback, and (without it) by Hydra composing every job
    sweep = tmp_path / "sweep"
    args = ["experiment=spectraformer_grid", "attention/sampler=orthogonl,qmc", "debug=fdr",
            f"task.data_dir={data_dir}", f"hydra.sweep.dir={sweep}", *FAST]
    if not callback:
        args.append("~hydra.callbacks.spectra_sweep")
    with pytest.raises((SystemExit, Exception)) as err:
        multirun(args, monkeypatch)
    message = str(err.value.code if isinstance(err.value, SystemExit) else err.value)
    if callback:
        assert "'orthogonl'" in message and "registered samplers: " in message
    else:  # Hydra composes every job first: its error names the option and lists the group
        assert "attention/sampler/orthogonl" in message
    assert "orthogonal" in message
    assert not sweep.exists() or not job_dirs(sweep)


def test_basic_sweeper_checks_names_first(data_dir, tmp_path,
                                                            monkeypatch) -> None:
    sweep = tmp_path / "sweep"
    with pytest.raises(SystemExit, match="nope") as err:
        multirun(["attention=favor_plus", "attention.feature_map.name=posrf,nope", "debug=fdr",
                  f"task.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
                  *FAST], monkeypatch)
    assert "registered feature maps: " in str(err.value.code)
    assert not sweep.exists() or not job_dirs(sweep)


# -- Optuna and submitit --------------------------------------------------------------------------
def _hydra_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_optuna_sweeper_composes_and_runs_two_trials(data_dir, tmp_path, monkeypatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _hydra_cfg(["hydra/sweeper=spectra_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optim.lr", "attention.num_features",
                                   "scheduler.warmup_steps", "optim.weight_decay"}

    sweep = tmp_path / "optuna"
    multirun(["hydra/sweeper=spectra_optuna", "hydra.sweeper.n_trials=2",
              "attention=favor_plus", "debug=fdr", f"task.data_dir={data_dir}",
              f"hydra.sweep.dir={sweep}", *FAST], monkeypatch)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == set(sweeper.params)
    objectives = [json.loads((d / "metrics.json").read_text())["objective"]
                  for d in job_dirs(sweep)]
    assert len(objectives) == 2 and result["best_value"] == pytest.approx(max(objectives))


def test_submitit_launchers_compose_ddp_consistent() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _hydra_cfg(["hydra/launcher=spectra_slurm", "trainer=ddp", "trainer.devices=4",
                      "trainer.num_nodes=2"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == cfg.trainer.devices == 4
    assert launcher["nodes"] == cfg.trainer.num_nodes == 2
    single = _hydra_cfg(["hydra/launcher=spectra_slurm", "trainer=gpu"])
    assert single.hydra.launcher.tasks_per_node == single.hydra.launcher.gpus_per_node == 1
    with pytest.raises(Exception, match="auto"):  # devices=auto cannot size a Slurm job
        OmegaConf.to_container(_hydra_cfg(["hydra/launcher=spectra_slurm", "trainer=ddp"])
                               .hydra.launcher, resolve=True)
    local = OmegaConf.to_container(_hydra_cfg(["hydra/launcher=spectra_local"]).hydra.launcher,
                                   resolve=True)
    assert local["_target_"].endswith("LocalLauncher") and local["tasks_per_node"] == 1
    grid = _hydra_cfg(["experiment=spectraformer_grid"])
    assert grid.hydra.sweeper._target_ == "hydra_plugins.spectra_grid_sweeper.SpectraGridSweeper"
    assert "spectra_sweep" in grid.hydra.callbacks
    GlobalHydra.instance().clear()


# -- W&B sweep specs ------------------------------------------------------------------------------
def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_wandb_grid_spec_is_valid_yaml_with_the_grid(tmp_path, capsys) -> None:
    script = _load_script("wandb_sweep")
    out = tmp_path / "listops.yaml"
    assert script.main(["grid", "--seeds", "0,1", "--out", str(out), "--project", "p", "--",
                        "trainer=gpu"]) == 0
    spec = yaml.safe_load(out.read_text())
    assert spec["program"] == "train.py" and spec["method"] == "grid"
    assert spec["metric"] == {"name": "summary/objective", "goal": "maximize"}
    params = spec["parameters"]
    assert params["attention/sampler"]["values"] == SAMPLERS.names()
    assert params["attention/feature_map"]["values"] == FEATURE_MAPS.names()
    assert params["seed"]["values"] == [0, 1]
    assert spec["command"][:3] == ["${env}", "${interpreter}", "${program}"]
    assert spec["command"][-1] == "${args_no_hyphens}"
    assert {"attention=spectraformer", "task=lra_listops", "trainer=gpu",
            "logger=wandb"} <= set(spec["command"])
    base = yaml.safe_load((tmp_path / "listops-baselines.yaml").read_text())
    assert base["parameters"]["attention"]["values"] == _baselines()
    assert "attention=spectraformer" not in base["command"]
    assert "144 runs" in capsys.readouterr().out or len(SAMPLERS.names()) != 9
    assert script.main(["grid", "--samplers", "nope", "--out", str(out)]) == 2


def test_wandb_spec_from_the_optuna_search_space(tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    script = _load_script("wandb_sweep")
    out = tmp_path / "search.yaml"
    assert script.main(["optuna", "--out", str(out), "--", "experiment=quickstart"]) == 0
    spec = yaml.safe_load(out.read_text())
    params = spec["parameters"]
    assert spec["method"] == "bayes" and spec["run_cap"] == 20
    assert params["optim.lr"] == {"distribution": "log_uniform_values", "min": 1e-4,
                                  "max": 3e-3}
    assert params["attention.num_features"] == {"values": [16, 32, 64, 128, 256]}
    assert params["optim.weight_decay"] == {"distribution": "uniform", "min": 0.0, "max": 0.1}
    assert "experiment=quickstart" in spec["command"]
    assert parameter_from_override("seed", "range(0,3)") == {"values": [0, 1, 2]}
    assert parameter_from_override("m", "int(interval(8,64))")["distribution"] == "int_uniform"
    with pytest.raises(ValueError, match="listed values"):
        optuna_spec({"optim.lr": "interval(0.1,0.2)"}, method="grid")
