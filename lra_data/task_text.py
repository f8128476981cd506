"""``lra_text`` (LRA byte-level IMDB classification) and ``imdb_retrieval`` (a SUBSTITUTE
for LRA's AAN retrieval built from the same reviews).

Splits: ``test`` = the 25k IMDB test reviews (what LRA evaluates on); ``train``/``val`` = the
25k training reviews minus / plus a held-out slice (``val_fraction``, default 0.1, stratified,
seeded by ``split_seed``; duplicate texts stay on one side). Ids are UTF-8 bytes + 1.

Where the reviews are found: see :mod:`lra_data.imdb` (``DATA_DIR/imdb/*.jsonl.gz`` first).
``prepare`` copies them there from ``source``: a directory with ``{train,test}.jsonl.gz`` or
aclImdb folders, ``"hf"`` (``datasets.load_dataset("imdb")``, needs network), or by default
``$LRA_IMDB_SOURCE`` or the project's shared copy ``<repo>/../shared/data/imdb``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Value
from tqdm.auto import tqdm

from . import synthetic
from .arrow import apply_policy, encoded
from .byte_codec import VOCAB_SIZE
from .dataset import LRADataset, Ragged, ragged_from_bytes
from .errors import MissingDataError
from .imdb import (
    HOW_TO_OBTAIN,
    ImdbSource,
    find_imdb,
    held_out_split,
    read_source_split,
    source_rows,
    text_digests,
)
from .imdb_retrieval import build_pairs
from .registry import SPLITS, TaskData, TaskSpec, register

READER_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_IMDB = REPO_ROOT.parent / "shared" / "data" / "imdb"


FEATURES = {"input_ids": Value("binary"), "label": Value("int64")}


@dataclass
class Reviews:
    """The good rows of one source split: texts (an Arrow binary column), labels, and the
    malformed rows skipped."""

    texts: Ragged
    labels: np.ndarray
    skipped: int


def _reviews(source: ImdbSource, src_split: str, skip: bool, cache_dir: Any) -> Reviews:
    """One source split as an Arrow dataset (cached), bad-row policy applied."""
    path = source.files[src_split]
    ds = encoded(f"imdb-{source.kind}", READER_VERSION, [path], {}, source_rows, FEATURES,
                 cache_dir, kind=source.kind, path=str(path))
    rows, skipped = apply_policy(ds, str(path), skip)
    return Reviews(Ragged(ds.data.column("input_ids"), rows, shift=1),
                   ds.data.column("label").to_numpy()[rows], skipped)


def _split_rows(reviews: Reviews, split: str, val_fraction: float,
                split_seed: int) -> np.ndarray:
    """Row indices of ``train``/``val`` within the source train split."""
    digests = _digests(reviews)
    train_idx, val_idx = held_out_split(digests, reviews.labels, val_fraction, split_seed)
    return train_idx if split == "train" else val_idx


def _digests(reviews: Reviews) -> list[bytes]:
    return text_digests(reviews.texts.column, reviews.texts.rows)


def _texts(reviews: Reviews, rows: np.ndarray) -> list[bytes]:
    texts = reviews.texts
    return [texts.column[int(texts.rows[i])].as_py() for i in rows]


class TextTask(TaskData):
    spec = TaskSpec(
        name="lra_text", num_classes=2, vocab_size=VOCAB_SIZE, max_length=4000, pair=False,
        description=(
            "LRA Text: IMDB review sentiment (0 neg, 1 pos), byte level (id = byte + 1, 0 pad), "
            "4000 bytes; val = seeded stratified held-out 10% of train, test = IMDB test."
        ),
    )
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None, "val_fraction": 0.1,
                                              "split_seed": 0}
    prepare_options: ClassVar[dict[str, Any]] = {"source": None, "link": False}

    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        source = find_imdb(data_dir, self.spec.name)
        src_split = "test" if split == "test" else "train"
        reviews = _reviews(source, src_split, skip_bad_rows, options["cache_dir"])
        n_source = len(reviews.labels)
        if split == "test":
            rows = np.arange(n_source)
        else:
            rows = _split_rows(reviews, split, options["val_fraction"], options["split_seed"])
        info = {"source_split": src_split, "source_rows": n_source,
                "val_fraction": options["val_fraction"], "split_seed": options["split_seed"]}
        return LRADataset(self.spec.name, split, [reviews.texts.take(rows)],
                          reviews.labels[rows], max_length, num_classes=2,
                          skipped_rows=reviews.skipped, source=str(source.files[src_split]),
                          info=info)

    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        prepare_imdb(out_dir, options["source"], link=options["link"], progress=progress)
        return out_dir

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        write_imdb_fixture(data_dir, rows_per_split, seed)
        return data_dir


class ImdbRetrievalTask(TaskData):
    spec = TaskSpec(
        name="imdb_retrieval", num_classes=2, vocab_size=VOCAB_SIZE, max_length=4000, pair=True,
        description=(
            "SUBSTITUTE for LRA Retrieval (AAN is not available here; never report it as AAN): "
            "do two byte-level passages come from the same IMDB review? Balanced, seeded; the "
            "negative partner has the same sentiment."
        ),
        substitute_for="lra_retrieval",
    )
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None, "val_fraction": 0.1,
                                              "split_seed": 0, "pair_seed": 0}
    prepare_options: ClassVar[dict[str, Any]] = {"source": None, "link": False}

    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        source = find_imdb(data_dir, self.spec.name)
        train = _reviews(source, "train", skip_bad_rows, options["cache_dir"])
        train_digests = _digests(train)
        skipped, excluded = train.skipped, 0
        if split == "test":
            reviews = _reviews(source, "test", skip_bad_rows, options["cache_dir"])
            skipped += reviews.skipped
            digests = _digests(reviews)
            seen = set(train_digests)
            keep = np.array([d not in seen for d in digests], dtype=bool)
            rows = np.flatnonzero(keep)
            excluded = int((~keep).sum())
        else:
            reviews, digests = train, train_digests
            rows = _split_rows(train, split, options["val_fraction"], options["split_seed"])
        pairs = build_pairs(_texts(reviews, rows), reviews.labels[rows],
                            [digests[i] for i in rows], options["pair_seed"],
                            stream=SPLITS.index(split))
        info = {"substitute_for": "lra_retrieval (AAN) -- NOT AAN results",
                "reviews": int(rows.size), "duplicates_dropped": pairs.duplicates_dropped,
                "test_reviews_also_in_train_excluded": excluded,
                "pair_seed": options["pair_seed"], "val_fraction": options["val_fraction"],
                "split_seed": options["split_seed"]}
        src_split = "test" if split == "test" else "train"
        return LRADataset(self.spec.name, split,
                          [ragged_from_bytes(pairs.first, 1), ragged_from_bytes(pairs.second, 1)],
                          pairs.labels, max_length, num_classes=2, skipped_rows=skipped,
                          source=str(source.files[src_split]), info=info)

    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        prepare_imdb(out_dir, options["source"], link=options["link"], progress=progress)
        return out_dir

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        write_imdb_fixture(data_dir, rows_per_split, seed)
        return data_dir


# ------------------------------------------------------------------------ prepare / fixture
def default_imdb_sources() -> list[Path]:
    """Where ``prepare`` looks when no source is given."""
    env = os.environ.get("LRA_IMDB_SOURCE")
    return ([Path(env)] if env else []) + [SHARED_IMDB]


def write_jsonl_gz(path: Path, rows: list[tuple[str, int]]) -> Path:
    """Write ``{"text", "label"}`` JSON lines (gzip, fixed mtime so output is reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": int(label)},
                               ensure_ascii=False).encode("utf-8") + b"\n")
    tmp.replace(path)
    return path


def prepare_imdb(out_dir: Path, source: str | os.PathLike | None, *, link: bool = False,
                 progress: bool = False) -> Path:
    """Put ``{train,test}.jsonl.gz`` under ``out_dir/imdb`` from ``source`` (see module doc)."""
    target = out_dir / "imdb"
    if source == "hf":
        return _prepare_from_hf(target, progress)
    if source is None:
        candidates = default_imdb_sources()
        for cand in candidates:
            try:
                found = find_imdb(cand)
                break
            except MissingDataError:
                continue
        else:
            raise MissingDataError("lra_text", [str(c) for c in candidates], HOW_TO_OBTAIN)
    else:
        found = find_imdb(Path(source))
    bar = tqdm(total=2, unit="files", desc="IMDB", disable=not progress)
    target.mkdir(parents=True, exist_ok=True)
    for split, path in found.files.items():
        dest = target / f"{split}.jsonl.gz"
        if found.kind == "jsonl":
            if dest.exists() and dest.resolve() == path.resolve():
                pass
            elif link:
                dest.unlink(missing_ok=True)
                dest.symlink_to(path.resolve())
            else:
                shutil.copyfile(path, dest)
        else:
            texts, labels = read_source_split(found, split)
            write_jsonl_gz(dest, [(t.decode("utf-8"), int(y)) for t, y in zip(texts, labels)])
        bar.update(1)
    bar.close()
    for split in ("train", "test"):  # validate what we wrote (raises on a bad row)
        read_source_split(find_imdb(out_dir), split)
    return out_dir


def _prepare_from_hf(target: Path, progress: bool) -> Path:
    try:
        from datasets import load_dataset
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise MissingDataError("lra_text", ["datasets.load_dataset('imdb')"],
                               HOW_TO_OBTAIN) from exc
    try:
        ds = load_dataset("imdb")
    except Exception as exc:  # network/hub errors come in many types
        raise MissingDataError("lra_text", [f"datasets.load_dataset('imdb') failed: {exc}"],
                               HOW_TO_OBTAIN) from exc
    for split in ("train", "test"):
        rows = [(r["text"], int(r["label"])) for r in tqdm(ds[split], desc=f"IMDB {split}",
                                                              disable=not progress)]
        write_jsonl_gz(target / f"{split}.jsonl.gz", rows)
    return target.parent


def write_imdb_fixture(data_dir: Path, rows_per_split: int, seed: int,
                       val_fraction: float = 0.1) -> Path:
    """Synthetic ``imdb/{train,test}.jsonl.gz``: ``test`` has ``rows_per_split`` rows; the
    train file has enough rows for ``train`` to keep at least ``rows_per_split`` after the
    default held-out ``val`` slice, and for ``val`` to get at least 2 rows per class (so the
    substitute retrieval task has both labels in every split)."""
    rng = random.Random(seed)
    per_class = max(2, -(-rows_per_split // 2))
    train_per_class = max(
        per_class + max(1, round(per_class * val_fraction / (1 - val_fraction))),
        math.ceil(1.5 / val_fraction),
    )
    out = {}
    serial = iter(range(10**9))
    for split, n_class in (("train", train_per_class), ("test", per_class)):
        rows = [(synthetic.review(rng, label, 4 + i % 5) + f" (review {next(serial)})", label)
                for i in range(n_class) for label in (0, 1)]
        if split == "test":
            rows = rows[:rows_per_split]
        rng.shuffle(rows)
        out[split] = write_jsonl_gz(data_dir / "imdb" / f"{split}.jsonl.gz", rows)
    return data_dir


register(TextTask())
register(ImdbRetrievalTask())
