"""Public API of ``lra_data``: task specs, ``build_dataset`` validation, ``write_fixture`` for
every task and split, the collator, the cache, data loading with workers and the CLI."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import lra_data
from lra_data.cli import main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


def test_task_specs():
    assert set(lra_data.TASKS) == {"lra_listops", "lra_text", "lra_retrieval", "imdb_retrieval",
                                   "lra_image", "lra_pathfinder"}
    expected = {"lra_listops": (10, 16, 2000, False), "lra_text": (2, 257, 4000, False),
                "lra_retrieval": (2, 257, 4000, True), "imdb_retrieval": (2, 257, 4000, True),
                "lra_image": (10, 257, 1024, False), "lra_pathfinder": (2, 257, 1024, False)}
    for name, spec in lra_data.TASKS.items():
        assert isinstance(spec, lra_data.TaskSpec) and spec.name == name and spec.description
        assert (spec.num_classes, spec.vocab_size, spec.max_length, spec.pair) == expected[name]
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.max_length = 1  # type: ignore[misc]
    assert lra_data.TASKS["imdb_retrieval"].substitute_for == "lra_retrieval"
    assert lra_data.TASKS["lra_retrieval"].substitute_for is None


def test_build_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'listops'.*lra_listops"):
        lra_data.build_dataset("listops", "train", tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*train, val, test"):
        lra_data.build_dataset("lra_text", "dev", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option.*val_frac.*allowed: cache_dir"):
        lra_data.build_dataset("lra_text", "train", tmp_path, val_frac=0.2)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_length must be a positive int"):
            lra_data.build_dataset("lra_text", "train", tmp_path, max_length=bad)
    with pytest.raises(ValueError, match="rows_per_split"):
        lra_data.write_fixture("lra_text", tmp_path, rows_per_split=1)
    with pytest.raises(ValueError, match="unknown task"):
        lra_data.prepare("nope", tmp_path)


@pytest.mark.parametrize("task", sorted(lra_data.TASKS))
def test_write_fixture_every_task_every_split(tmp_path, task):
    spec = lra_data.TASKS[task]
    root = lra_data.write_fixture(task, tmp_path / "d", rows_per_split=16, seed=1)
    assert root == tmp_path / "d"
    for split in lra_data.SPLITS:
        ds = lra_data.build_dataset(task, split, root)
        assert len(ds) >= 2, split
        labels = {ds[i]["label"] for i in range(len(ds))}
        assert labels <= set(range(spec.num_classes))
        if split == "train" or spec.num_classes == 2:
            assert len(labels) >= 2, (split, labels)
        for i in range(len(ds)):
            item = ds[i]
            keys = ["input_ids", "input_ids2"] if spec.pair else ["input_ids"]
            assert set(item) == {*keys, "label"}
            for key in keys:
                ids = item[key]
                assert ids.dtype == torch.long and ids.dim() == 1 and 0 < len(ids)
                assert int(ids.min()) >= 1 and int(ids.max()) < spec.vocab_size
                assert len(ids) <= spec.max_length
    # Same seed, same files.
    again = lra_data.write_fixture(task, tmp_path / "e", rows_per_split=16, seed=1)
    for path in sorted((tmp_path / "d").rglob("*.*")):
        twin = again / path.relative_to(tmp_path / "d")
        assert twin.read_bytes() == path.read_bytes(), path


def test_collator_shapes_masks_and_padding():
    items = [{"input_ids": torch.tensor([5, 6, 7]), "label": 1},
             {"input_ids": torch.tensor([9]), "label": 0}]
    batch = lra_data.Collator()(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch["mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert batch["mask"].dtype == torch.bool and set(batch) == {"input_ids", "mask", "labels"}
    fixed = lra_data.Collator(pad_to=5)(items)
    assert fixed["input_ids"].shape == (2, 5) and fixed["mask"].sum(1).tolist() == [3, 1]
    multiple = lra_data.Collator(pad_to_multiple_of=4)(items)
    assert multiple["input_ids"].shape == (2, 4)
    assert lra_data.Collator(pad_to=5, pad_to_multiple_of=4)(items)["mask"].shape == (2, 8)
    with pytest.raises(ValueError, match="does not fit pad_to=2"):
        lra_data.Collator(pad_to=2)(items)
    pairs = [{"input_ids": torch.tensor([1, 2]), "input_ids2": torch.tensor([3, 4, 5, 6]),
              "label": 1},
             {"input_ids": torch.tensor([7, 8, 9]), "input_ids2": torch.tensor([1]), "label": 0}]
    pb = lra_data.Collator()(pairs)
    assert pb["input_ids"].shape == (2, 3) and pb["input_ids2"].shape == (2, 4)
    assert pb["mask2"].tolist() == [[True] * 4, [True, False, False, False]]
    assert (pb["input_ids2"][~pb["mask2"]] == 0).all()
    for bad in ({"pad_to": "max"}, {"pad_to": 0}, {"pad_to_multiple_of": 0},
                {"pad_to": True}):
        with pytest.raises(ValueError):
            lra_data.Collator(**bad)
    with pytest.raises(ValueError, match="empty batch"):
        lra_data.Collator()([])


def _arrow_files(cache: Path, name: str) -> list[Path]:
    return sorted(cache.glob(f"generator/default-fingerprint={name}-*/**/*.arrow"))


def test_cache_is_arrow_reused_and_invalidated(tmp_path, isolated_lra):
    cache = isolated_lra
    root = lra_data.write_fixture("lra_listops", tmp_path / "d", rows_per_split=8)
    first = lra_data.build_dataset("lra_listops", "train", root)
    files = _arrow_files(cache, "listops")
    assert any(f.name.startswith("cache-") for f in files)  # the Dataset.map step (tokenize)
    stamps = [f.stat().st_mtime_ns for f in files]
    ds = lra_data.build_dataset("lra_listops", "train", root)
    assert _arrow_files(cache, "listops") == files  # reused, nothing rewritten
    assert [f.stat().st_mtime_ns for f in files] == stamps and len(ds) == 8
    assert [ds[i]["input_ids"].tolist() for i in range(8)] == [
        first[i]["input_ids"].tolist() for i in range(8)]
    path = root / "listops" / "basic_train.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n")  # changed file: read again
    assert len(lra_data.build_dataset("lra_listops", "train", root)) == 4
    assert len(_arrow_files(cache, "listops")) > len(files)
    before = sorted(cache.rglob("*"))
    assert len(lra_data.build_dataset("lra_listops", "train", root, cache_dir=False)) == 4
    assert sorted(cache.rglob("*")) == before  # in memory: nothing written


def test_dataloader_with_two_workers(tmp_path):
    root = lra_data.write_fixture("imdb_retrieval", tmp_path / "d", rows_per_split=16)
    ds = lra_data.build_dataset("imdb_retrieval", "train", root, max_length=64)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lra_data.Collator(pad_to=64))
    batches = list(loader)
    assert sum(b["labels"].shape[0] for b in batches) == len(ds)
    assert all(b["input_ids"].shape == (b["labels"].shape[0], 64) for b in batches)
    assert all((b["input_ids"] > 0).eq(b["mask"]).all() for b in batches)


def test_cli_fixture_prepare_stats_and_errors(tmp_path, capsys):
    assert main(["fixture", "lra_text", "--out", str(tmp_path / "t"), "--rows", "8"]) == 0
    assert main(["stats", "lra_text", "--data-dir", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "[train] rows 26" in out and "[val] rows 4" in out and "[test] rows 8" in out
    assert "labels  0: 4 (50.0%), 1: 4 (50.0%)" in out
    assert "p50" in out and "truncated at 4000" in out
    assert main(["prepare", "lra_listops", "--out", str(tmp_path / "l"), "--workers", "1",
                 "--option", "num_train=6", "--option", "num_val=2", "--option", "num_test=2",
                 "--option", "min_length=10", "--option", "max_length=40"]) == 0
    assert main(["stats", "lra_listops", "--data-dir", str(tmp_path / "l"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"rows": 6' in out and "prepared lra_listops" in out
    assert main(["stats", "lra_retrieval", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "error: no data found for task 'lra_retrieval'" in err and "lra_release.gz" in err
    assert main(["prepare", "lra_text", "--out", str(tmp_path / "x"), "--workers", "2"]) == 2
    assert "unknown option(s) workers" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    root = lra_data.write_fixture("lra_retrieval", tmp_path / "d", rows_per_split=4)
    env = {**os.environ, "LRA_DATA_DIR": str(root), "LRA_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "lra_data", "stats", "lra_retrieval"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[val] rows 4" in proc.stdout and "length2" in proc.stdout
