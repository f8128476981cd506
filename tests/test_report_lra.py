"""The cross-task LRA table (Spectraformer layout, columns L T R I P and avg) of a report."""

from __future__ import annotations

import pytest

from spectra.sweeps.lra_table import LRA_COLUMNS, lra_markdown, lra_rows
from spectra.sweeps.results import to_frame
from spectra.sweeps.summary import ACCURACY, summarize


def _cells(line: str) -> list[str]:
    """The cells of one markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _record(task: str, acc: float | None, *, sampler: str | None = None,
            fmap: str | None = None, attention: str = "random_features", seed: int = 0,
            status: str = "ok", m: int = 32) -> dict:
    att: dict = {"name": attention}
    if sampler:
        att.update(sampler={"name": sampler}, feature_map={"name": fmap}, num_features=m)
    metrics = {} if acc is None else {"test/acc": acc}
    return {"task": {"name": task}, "attention": att, "seed": seed, "status": status,
            "metrics": metrics}


def test_lra_table_has_all_five_columns_best_in_bold_and_an_average():
    records = []
    for task, base in (("lra_listops", 0.30), ("lra_text", 0.60), ("lra_image", 0.40),
                       ("lra_pathfinder", 0.55)):
        for seed in (0, 1):
            records.append(_record(task, base + 0.01 * seed, sampler="qmc", fmap="oprf",
                                   seed=seed))
        records.append(_record(task, base + 0.05, sampler="mm", fmap="posrf"))
        records.append(_record(task, base + 0.02, attention="softmax"))
    records.append(_record("lra_pathfinder", None, sampler="qmc", fmap="posrf",
                           status="failed"))
    records.append(_record("imdb_retrieval", 0.7, attention="softmax"))
    blocks, _ = summarize(to_frame(records))
    ((title, header, rows),) = lra_rows(blocks, ACCURACY)
    assert title == "LRA, all tasks, m = 32"
    assert header == ["component function", "sampler", *(h for _, h in LRA_COLUMNS),
                      "imdb_retrieval (substitute, not R)", "avg"]
    assert [h for _, h in LRA_COLUMNS][3:] == ["Image (I)", "Pathfinder (P)"]
    by = {(r[0], r[1]): r[2:] for r in rows}
    assert list(by)[:3] == [("oprf", "qmc"), ("posrf", "mm"), ("posrf", "qmc")]
    assert by[("oprf", "qmc")][:5] == ["30.5 ± 0.7", "60.5 ± 0.7", "–", "40.5 ± 0.7",
                                       "55.5 ± 0.7"]
    assert by[("posrf", "mm")][:5] == ["**35.0**", "**65.0**", "–", "**45.0**", "**60.0**"]
    assert by[("posrf", "qmc")][4] == "1 failed" and by[("posrf", "qmc")][6] == "–"
    assert by[("posrf", "mm")][6] == f"{(35 + 65 + 45 + 60) / 4:.1f} (4/5)"
    assert by[("softmax", "")][5] == "**70.0**"  # the substitute column, never averaged
    assert by[("softmax", "")][6] == f"{(32 + 62 + 42 + 57) / 4:.1f} (4/5)"
    md = lra_markdown(blocks, ACCURACY)
    assert md.startswith("### LRA, all tasks, m = 32")
    header = next(line for line in md.splitlines() if line.startswith("|"))
    assert _cells(header)[:7] == ["component function", "sampler", "ListOps (L)", "Text (T)",
                                  "Retrieval (R)", "Image (I)", "Pathfinder (P)"]


def test_one_table_per_m_and_baseline_only_sweeps():
    records = [_record("lra_image", 0.4, sampler="qmc", fmap="oprf", m=m) for m in (16, 64)]
    records.append(_record("lra_pathfinder", 0.5, attention="softmax"))
    blocks, _ = summarize(to_frame(records))
    titles = [t for t, _, _ in lra_rows(blocks, ACCURACY)]
    assert titles == ["LRA, all tasks, m = 16", "LRA, all tasks, m = 64"]
    only = summarize(to_frame([_record("lra_pathfinder", 0.5, attention="softmax")]))[0]
    ((title, _, rows),) = lra_rows(only, ACCURACY)
    assert title == "LRA, all tasks" and rows == [["softmax", "", "–", "–", "–", "–",
                                                   "**50.0**", "50.0 (1/5)"]]


@pytest.mark.parametrize("task", [t for t, _ in LRA_COLUMNS])
def test_every_lra_task_is_a_registered_task(task):
    import lra_data

    assert task in lra_data.TASKS


def test_report_md_starts_with_the_lra_table(tmp_path):
    import json

    import yaml

    from spectra.sweeps.report import build_report

    for num, (task, acc) in enumerate((("lra_image", 0.4), ("lra_pathfinder", 0.6))):
        job = tmp_path / "sweep" / str(num)
        (job / ".hydra").mkdir(parents=True)
        cfg = {"seed": 0, "task": {"name": task},
               "attention": {"name": "random_features", "sampler": {"name": "qmc"},
                             "feature_map": {"name": "oprf"}, "num_features": 32}}
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"task={task}"]))
        (job / "metrics.json").write_text(json.dumps({"test/acc": acc}))
    md = build_report(tmp_path / "sweep", tmp_path / "out").markdown.read_text()
    assert md.index("## LRA, all tasks") < md.index("## lra_image")
    rows = [_cells(line) for line in md.splitlines() if line.startswith("|")]
    assert ["oprf", "qmc", "–", "–", "–", "**40.0**", "**60.0**", "50.0 (2/5)"] in rows
