"""scripts/report.py and spectra.sweeps.report on fabricated sources: a multirun with seeds,
failed / killed / never-started runs, an empty and a mixed-up directory, and a W&B project read
through a stand-in for the W&B public API."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from spectra.sweeps.report import build_report, markdown_table
from spectra.sweeps.results import ReportSourceError, collect, load_wandb_api
from spectra.sweeps.status import write_status
from spectra.sweeps.summary import ACCURACY, summarize

ROOT = Path(__file__).resolve().parents[1]

# test accuracy per (sampler, feature map, seed); time per step 10 ms per letter of the map name
ACC = {("qmc", "oprf", 0): 0.40, ("qmc", "oprf", 1): 0.42, ("qmc", "posrf", 0): 0.30,
       ("qmc", "posrf", 1): 0.34, ("mm", "oprf", 0): 0.45, ("mm", "oprf", 1): 0.47,
       ("mm", "posrf", 0): 0.20}


def _job(sweep: Path, num: int, *, sampler: str | None, fmap: str | None, seed: int,
         attention: str = "random_features", acc: float | None = None,
         status: str | None = None, error: str | None = None, task: str = "lra_listops") -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    att: dict = {"name": attention, "head_dim": 16}
    overrides = [f"attention={'spectraformer' if sampler else attention}", f"seed={seed}"]
    if sampler:
        att.update(sampler={"name": sampler}, feature_map={"name": fmap}, num_features=32)
        overrides += [f"attention/sampler={sampler}", f"attention/feature_map={fmap}"]
    cfg = {"seed": seed, "task": {"name": task}, "attention": att, "model": {"embed_dim": 32}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if acc is not None:
        metrics = {"test/acc": acc, "val/acc_best": acc + 0.01,
                   "perf/mean_step_time_s": 0.01 * len(fmap or attention),
                   "perf/peak_mem_mb": 500.0 + num, "run_name": f"run{num}"}
        (job / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        info = {"error_type": "RuntimeError", "error": error} if error else {}
        write_status(job, status, info)
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    """7 good runs (qmc/mm × oprf/posrf × seeds 0,1, one seed of mm × posrf), mm × posrf seed 1
    crashed, softmax (2 seeds) and skyformer (killed while running), and one job that the grid
    planned but never started."""
    root = tmp_path / "multirun" / "spectraformer_grid_x"
    num = 0
    for (sampler, fmap, seed), acc in ACC.items():
        _job(root, num, sampler=sampler, fmap=fmap, seed=seed, acc=acc, status="completed")
        num += 1
    _job(root, num, sampler="mm", fmap="posrf", seed=1, status="failed",
         error="CUDA out of memory")
    num += 1
    for seed, acc in ((0, 0.44), (1, 0.46)):
        _job(root, num, sampler=None, fmap=None, seed=seed, attention="softmax", acc=acc)
        num += 1
    _job(root, num, sampler=None, fmap=None, seed=0, attention="skyformer", status="running")
    manifest = {"jobs": [{"num": i, "dir": str(i)} for i in range(num + 1)]}
    manifest["jobs"].append({"num": num + 1, "dir": str(num + 1), "label": "skyformer",
                             "attention": "skyformer", "sampler": None, "feature_map": None,
                             "axes": {"seed": "1"},
                             "overrides": ["attention=skyformer", "seed=1"]})
    (root / "grid.json").write_text(json.dumps(manifest))
    return root


def test_collect_reads_statuses_without_dropping_or_zeroing(sweep) -> None:
    runs = collect(sweep).frame
    assert len(runs) == 12
    by = {(r.label, r.seed): r for r in runs.itertuples()}
    assert by[("mm × posrf", 1)].status == "failed"
    assert "CUDA out of memory" in by[("mm × posrf", 1)].error
    assert by[("skyformer", 0)].status == "incomplete" and "running" in by[("skyformer", 0)].error
    missing = by[("skyformer", 1)]
    assert missing.status == "missing" and missing.task == "lra_listops"
    assert by[("qmc × oprf", 1)].test_acc == pytest.approx(42.0)
    assert by[("qmc × oprf", 1)].step_time_ms == pytest.approx(40.0)

    (block,) = summarize(runs)[0]
    assert block.mean("mm × posrf", "test_acc") == pytest.approx(20.0)  # the crash is no zero
    assert block.text("mm × posrf", ACCURACY) == "20.0 (1 failed)"
    assert block.text("qmc × posrf", ACCURACY) == f"32.0 ± {statistics.stdev([30.0, 34.0]):.1f}"
    assert block.text("skyformer", ACCURACY) == "1 incomplete, 1 missing"
    assert block.best("test_acc") == pytest.approx(46.0)  # mm × oprf
    assert math.isnan(block.std("mm × posrf", "test_acc"))


def test_report_writes_table_pngs_csv_and_dashboard(sweep, tmp_path) -> None:
    out = tmp_path / "out"
    report = build_report(sweep, out, command="python train.py -m experiment=x")
    md = report.markdown.read_text()
    table = markdown_table(report.blocks[0], report.accuracy)
    assert table in md and "python train.py -m experiment=x" in md
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ")}
    assert rows["sampler \\ component function"] == ["oprf", "posrf"]
    assert rows["mm"] == ["**46.0 ± 1.4**", "20.0 (1 failed)"]
    assert rows["qmc"] == ["41.0 ± 1.4", "32.0 ± 2.8"]
    assert rows["softmax"] == ["45.0 ± 1.4"] and rows["skyformer"] == ["1 incomplete, 1 missing"]
    assert "CUDA out of memory" in md and "## Runs without a result" in md
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"lra_listops_m32_{k}.png" for k in
                     ("accuracy", "pareto", "peak_memory", "step_time")]
    html = report.html.read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "src=\"http" not in html and "<script" not in html  # self-contained, static
    assert 'class="data row0 col0 best"' in html and "CUDA out of memory" in html
    csv_lines = report.csv.read_text().splitlines()
    assert len(csv_lines) == 1 + 12 and "failed" in report.csv.read_text()


def test_cli_exit_codes_and_empty_or_mixed_up_directories(sweep, tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "scripts" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(cli)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no runs" in err and "0 folder(s) and 0 file(s)" in err and "entity/project" in err

    junk = tmp_path / "junk"
    (junk / "logs").mkdir(parents=True)
    (junk / "notes.txt").write_text("hello")
    assert cli.main([str(junk)]) == 2
    assert "1 folder(s) and 1 file(s): logs/, notes.txt" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "nope" / "x")]) == 2
    assert "neither a directory nor a W&B project" in capsys.readouterr().err

    # mixed up: two sweeps of two tasks, an eval run, an unreadable config, stray files
    mixed = tmp_path / "mixed"
    _job(mixed / "a", 0, sampler="qmc", fmap="oprf", seed=0, acc=0.4)
    _job(mixed / "b", 0, sampler="qmc", fmap="oprf", seed=0, acc=0.7, task="lra_text")
    (mixed / "eval" / ".hydra").mkdir(parents=True)
    (mixed / "eval" / ".hydra" / "config.yaml").write_text("ckpt_path: x.ckpt\n")
    (mixed / "bad" / ".hydra").mkdir(parents=True)
    (mixed / "bad" / ".hydra" / "config.yaml").write_text("attention: [unclosed\n")
    (mixed / "README").write_text("stray")
    assert cli.main([str(mixed), "--out", str(tmp_path / "mixed_out")]) == 0
    out = capsys.readouterr().out
    assert "2 runs (2 ok) in 2 block(s)" in out
    assert "not a training run" in out and "unreadable .hydra/config.yaml" in out
    assert "runs from 2 directories" in out
    md = (tmp_path / "mixed_out" / "report.md").read_text()
    assert "## lra_listops, m = 32" in md and "## lra_text, m = 32" in md
    assert "**70.0**" in md and "**40.0**" in md  # best per task


def test_wandb_project_through_the_api(monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")

    class FakeRun:
        def __init__(self, sampler, state, acc):
            self.config = {"seed": 0, "task": {"name": "lra_text"},
                           "attention": {"name": "random_features", "sampler": {"name": sampler},
                                         "feature_map": {"name": "oprf"}}}
            self.summary_metrics = {"summary/test/acc": acc} if acc else {}
            self.state, self.name, self.group, self.tags = state, sampler, "g", []
            self.url = f"https://wandb.example/{sampler}"

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            assert path == "me/spectra" and filters == {"group": "g"}
            return [FakeRun("qmc", "finished", 0.6), FakeRun("mm", "crashed", None)]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs = load_wandb_api("me/spectra", group="g").frame
    by = {r.sampler: r for r in runs.itertuples()}
    assert by["qmc"].status == "ok" and by["qmc"].test_acc == pytest.approx(60.0)
    assert by["qmc"].task == "lra_text"
    assert by["mm"].status == "failed" and "crashed" in by["mm"].error

    class BrokenApi:
        def __init__(self, timeout=None):
            raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "Api", BrokenApi)
    with pytest.raises(ReportSourceError, match="no network"):
        collect("me/spectra")
