"""``lra_listops``: LRA ListOps (files ``listops/basic_{train,val,test}.tsv``)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from datasets import Value
from tqdm.auto import tqdm

from .arrow import apply_policy, encoded, map_cached
from .dataset import LRADataset, Ragged
from .errors import MissingDataError
from .listops import NUM_CLASSES, VOCAB_SIZE
from .listops_generate import ListOpsParams, write_listops
from .listops_io import listops_rows, tokenize_batch
from .official import copy_official
from .registry import TaskData, TaskSpec, register

READER_VERSION = 1
SUBDIRS = ("listops", "lra_release/listops-1000", "listops-1000", ".")
HOW_TO_OBTAIN = (
    "generate it with `python -m lra_data prepare lra_listops --out DATA_DIR` (LRA's generator, "
    "seeded; well under two minutes), or download the official LRA release archive "
    "lra_release.gz (linked from https://github.com/google-research/long-range-arena; "
    "https://storage.googleapis.com/long-range-arena/lra_release.gz) and extract it into "
    "DATA_DIR (giving DATA_DIR/lra_release/listops-1000/basic_train.tsv), or run `python -m "
    "lra_data prepare lra_listops --source lra_release.gz --out DATA_DIR`."
)
_PARAM_NAMES = tuple(f.name for f in fields(ListOpsParams))
RAW_FEATURES = {"source": Value("binary"), "label": Value("int64")}


def find_listops(data_dir: Path, split: str, task: str = "lra_listops") -> Path:
    looked = []
    for sub in SUBDIRS:
        path = data_dir / sub / f"basic_{split}.tsv"
        looked.append(str(path))
        if path.is_file():
            return path
    raise MissingDataError(task, looked, HOW_TO_OBTAIN)


class ListOpsTask(TaskData):
    spec = TaskSpec(
        name="lra_listops", num_classes=NUM_CLASSES, vocab_size=VOCAB_SIZE, max_length=2000,
        pair=False,
        description=(
            "LRA ListOps (Nangia & Bowman 2018): value (0-9) of a nested MIN/MAX/MED/SM "
            "expression, 500-2000 tokens; ids: 0 pad, 1-10 digits, 11-14 [MIN [MAX [MED [SM, "
            "15 ']' (parentheses dropped)."
        ),
    )
    #: ``close_bracket=False``: drop the ``]`` tokens (LRA's original tokenization; see
    #: :func:`lra_data.listops_io.tokenize_batch`).
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None, "close_bracket": True}
    prepare_options: ClassVar[dict[str, Any]] = {
        **{f.name: f.default for f in fields(ListOpsParams)},
        "workers": None, "force": False, "source": None,
    }

    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        path = find_listops(data_dir, split)
        close_bracket = bool(options["close_bracket"])
        raw = encoded("listops", READER_VERSION, [path], {}, listops_rows, RAW_FEATURES,
                      options["cache_dir"], path=str(path))
        ds = map_cached(raw, tokenize_batch, fn_kwargs={"close_bracket": close_bracket},
                        batch_size=4096, remove_columns=["source"])
        rows, skipped = apply_policy(ds, str(path), skip_bad_rows)
        labels = ds.data.column("label").to_numpy()[rows]
        return LRADataset(self.spec.name, split, [Ragged(ds.data.column("input_ids"), rows)],
                          labels, max_length, num_classes=NUM_CLASSES, skipped_rows=skipped,
                          source=str(path),
                          info={} if close_bracket else {"close_bracket": False})

    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        target = out_dir / "listops"
        if options["source"] is not None:
            names = [f"basic_{s}.tsv" for s in self.spec.splits]
            copy_official(self.spec.name, Path(options["source"]), names, SUBDIRS, target,
                          HOW_TO_OBTAIN)
            return out_dir
        params = ListOpsParams(**{k: options[k] for k in _PARAM_NAMES})
        meta_path = target / "generator.json"
        if not options["force"] and _cache_hit(meta_path, params, seed):
            if progress:
                print(f"{target}: already generated with these parameters "
                      f"(key {params.cache_key(seed)}); use --force to regenerate")
            return out_dir
        meta_path.unlink(missing_ok=True)
        with tqdm(total=params.total, unit="rows", desc="ListOps", disable=not progress) as bar:
            summary = write_listops(target, params, seed, workers=options["workers"],
                                    progress=bar.update)
        meta_path.write_text(json.dumps(summary, indent=2) + "\n")
        return out_dir

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        params = ListOpsParams(min_length=20, max_length=60, num_train=rows_per_split,
                               num_val=rows_per_split, num_test=rows_per_split)
        self.prepare(data_dir, seed, False, **{**self.prepare_options,
                                                **{k: getattr(params, k) for k in _PARAM_NAMES},
                                                "workers": 1})
        return data_dir


def _cache_hit(meta_path: Path, params: ListOpsParams, seed: int) -> bool:
    """True when ``generator.json`` records this key and the files have the recorded sizes."""
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    if meta.get("cache_key") != params.cache_key(seed):
        return False
    for split, info in meta.get("splits", {}).items():
        path = meta_path.parent / f"basic_{split}.tsv"
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return False
    return True


register(ListOpsTask())
