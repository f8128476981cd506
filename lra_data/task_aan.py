"""``lra_retrieval``: LRA document retrieval on the ACL Anthology Network (official files
only; see :mod:`lra_data.aan`). Byte level, two texts of up to 4000 bytes, label 1 when the
papers are linked by a citation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

from datasets import Value

from . import synthetic
from .aan import HOW_TO_OBTAIN, aan_rows, file_name, find_aan, write_aan_tsv
from .arrow import apply_policy, encoded
from .byte_codec import VOCAB_SIZE
from .dataset import LRADataset, Ragged
from .official import copy_official
from .registry import TaskData, TaskSpec, register

READER_VERSION = 1
SUBDIRS = ("aan", "lra_release/tsv_data", "tsv_data", ".")
FEATURES = {"input_ids": Value("binary"), "input_ids2": Value("binary"), "label": Value("int64")}


class AANTask(TaskData):
    spec = TaskSpec(
        name="lra_retrieval", num_classes=2, vocab_size=VOCAB_SIZE, max_length=4000, pair=True,
        description=(
            "LRA Retrieval (official AAN pairs, new_aan_pairs.{train,eval,test}.tsv): do two "
            "papers cite each other? Byte level (id = byte + 1), 2 x 4000 bytes; val = eval file."
        ),
    )
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None}
    prepare_options: ClassVar[dict[str, Any]] = {"source": None}

    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        path = find_aan(data_dir, split, self.spec.name)
        ds = encoded("aan", READER_VERSION, [path], {}, aan_rows, FEATURES,
                     options["cache_dir"], path=str(path))
        rows, skipped = apply_policy(ds, str(path), skip_bad_rows)
        seqs = [Ragged(ds.data.column(name), rows, shift=1)
                for name in ("input_ids", "input_ids2")]
        return LRADataset(self.spec.name, split, seqs, ds.data.column("label").to_numpy()[rows],
                          max_length, num_classes=2, skipped_rows=skipped, source=str(path))

    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        source = options["source"]
        names = [file_name(s) for s in self.spec.splits]
        if source is None:
            # Already in place (any recognized layout)? Otherwise explain how to get it.
            for split in self.spec.splits:
                find_aan(out_dir, split, self.spec.name)
            return out_dir
        copy_official(self.spec.name, Path(source), names, SUBDIRS, out_dir / "aan",
                      HOW_TO_OBTAIN)
        return out_dir

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        rng = random.Random(seed)
        topics = synthetic.topics()
        for split in self.spec.splits:
            rows = []
            for i in range(rows_per_split):
                label = i % 2
                t1 = rng.choice(topics)
                t2 = t1 if label else rng.choice([t for t in topics if t != t1])
                rows.append((label, f"X{split}-{i}a", f"X{split}-{i}b",
                             synthetic.paper(rng, t1), synthetic.paper(rng, t2)))
            rng.shuffle(rows)
            write_aan_tsv(data_dir / "aan" / file_name(split), rows)
        return data_dir


register(AANTask())
