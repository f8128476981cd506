"""``lra_retrieval``: LRA document retrieval on the ACL Anthology Network (official files
only; see :mod:`lra_data.aan`). Byte level, two texts of up to 4000 bytes, label 1 when the
papers are linked by a citation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

from . import synthetic
from .aan import HOW_TO_OBTAIN, file_name, find_aan, read_aan_tsv, write_aan_tsv
from .byte_codec import VOCAB_SIZE
from .cache import cached
from .dataset import LRADataset, Ragged, ragged_from_chunks
from .errors import RowPolicy
from .official import copy_official
from .registry import TaskData, TaskSpec, register

READER_VERSION = 1
SUBDIRS = ("aan", "lra_release/tsv_data", "tsv_data", ".")


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
        policy = RowPolicy(skip=skip_bad_rows)

        def build() -> tuple[dict, dict]:
            t1, t2, labels, _ = read_aan_tsv(path, policy)
            r1 = ragged_from_chunks(t1, max_length)
            r2 = ragged_from_chunks(t2, max_length)
            return ({"data1": r1.data, "offsets1": r1.offsets, "lengths1": r1.lengths,
                     "data2": r2.data, "offsets2": r2.offsets, "lengths2": r2.lengths,
                     "labels": labels},
                    {"skipped": policy.skipped, "examples": policy.examples})

        arrays, meta = cached("aan", READER_VERSION, [path],
                              {"max_length": max_length, "skip": skip_bad_rows}, build,
                              options["cache_dir"])
        RowPolicy(True, meta["skipped"], meta["examples"]).warn_if_skipped(str(path))
        seqs = [Ragged(arrays[f"data{k}"], arrays[f"offsets{k}"], arrays[f"lengths{k}"], 1)
                for k in (1, 2)]
        return LRADataset(self.spec.name, split, seqs, arrays["labels"], max_length,
                          num_classes=2, skipped_rows=meta["skipped"], source=str(path))

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
