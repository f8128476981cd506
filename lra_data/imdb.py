"""IMDB movie reviews (Maas et al., ACL 2011) for the LRA byte-level text task.

Sources (first match wins, for a data directory ``D``):

1. ``D/imdb/{train,test}.jsonl.gz`` -- gzip JSON lines ``{"text": str, "label": 0|1}`` (the
   HF ``datasets`` "imdb" schema; the layout written by ``prepare``);
2. ``D/{train,test}.jsonl.gz`` -- ``D`` is itself such a directory;
3. aclImdb: ``D/aclImdb/``, ``D/imdb/aclImdb/`` or ``D`` itself with
   ``{train,test}/{neg,pos}/*.txt`` (label 0 = neg, 1 = pos).

``datasets.load_dataset("imdb")`` is used only by ``prepare`` (``source="hf"``, needs
network). LRA evaluates on the test set; our ``val`` split is a held-out slice of the
training reviews (default 10 %, stratified by label, seeded, and with duplicate texts kept
together so that no review text is in both ``train`` and ``val``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LRADataError, MissingDataError, RowPolicy

SOURCE_SPLITS = ("train", "test")
LABEL_DIRS = (("neg", 0), ("pos", 1))
HOW_TO_OBTAIN = (
    "run `python -m lra_data prepare lra_text --source DIR --out DATA_DIR`, where DIR holds "
    "{train,test}.jsonl.gz (HF schema; e.g. the project's shared copy in shared/data/imdb, "
    "see its README) or an extracted aclImdb_v1.tar.gz (Stanford, "
    "https://ai.stanford.edu/~amaas/data/sentiment/); with network access, "
    "`--source hf` uses datasets.load_dataset('imdb'). Or point LRA_DATA_DIR / data_dir at a "
    "directory containing imdb/{train,test}.jsonl.gz."
)


@dataclass(frozen=True)
class ImdbSource:
    """Where the reviews were found: ``kind`` is "jsonl" or "aclimdb"; ``files`` maps the
    source split to its file (jsonl) or directory (aclImdb)."""

    kind: str
    files: dict[str, Path]

    def describe(self) -> str:
        return f"{self.kind}: " + ", ".join(str(p) for p in self.files.values())


def candidate_locations(data_dir: Path) -> list[tuple[str, Path]]:
    """Locations checked, in order."""
    return [("jsonl", data_dir / "imdb"), ("jsonl", data_dir),
            ("aclimdb", data_dir / "aclImdb"), ("aclimdb", data_dir / "imdb" / "aclImdb"),
            ("aclimdb", data_dir)]


def find_imdb(data_dir: str | os.PathLike, task: str = "lra_text") -> ImdbSource:
    """Locate the reviews under ``data_dir`` or raise :class:`MissingDataError`."""
    root = Path(data_dir)
    looked = []
    for kind, base in candidate_locations(root):
        if kind == "jsonl":
            files = {s: base / f"{s}.jsonl.gz" for s in SOURCE_SPLITS}
            looked.append(str(base / "{train,test}.jsonl.gz"))
            if all(f.is_file() for f in files.values()):
                return ImdbSource(kind, files)
        else:
            dirs = {s: base / s for s in SOURCE_SPLITS}
            looked.append(str(base / "{train,test}/{neg,pos}/*.txt"))
            if all((d / lab).is_dir() for d in dirs.values() for lab, _ in LABEL_DIRS):
                return ImdbSource(kind, dirs)
    raise MissingDataError(task, looked, HOW_TO_OBTAIN)


def corrupt_gzip(path: Path, exc: BaseException) -> LRADataError:
    """The error for a ``.jsonl.gz`` that gzip cannot read to its end (one message, no chain)."""
    return LRADataError(
        f"{path}: the gzip file is truncated or corrupt ({type(exc).__name__}: {exc}). "
        "Replace it with a complete copy: re-run `python -m lra_data prepare lra_text --out "
        "DATA_DIR` (from the shared copy, --source DIR or --source hf), or re-download it."
    )


def _row(line: int, text: bytes, label: int, problem: str | None = None,
         path: str | None = None) -> dict[str, Any]:
    good = problem is None
    return {"line": line, "input_ids": text if good else b"", "label": label if good else -1,
            "problem": problem, "path": path}


def jsonl_rows(path: str, num_classes: int = 2) -> Iterator[dict[str, Any]]:
    """Rows ``{"line", "input_ids" (UTF-8 bytes), "label", "problem", "path"}`` of a gzip JSON
    lines file; a malformed row is kept as a ``problem``, a damaged gzip file raises."""
    try:
        with gzip.open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                yield _jsonl_row(line_no, raw, num_classes)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise corrupt_gzip(Path(path), exc) from None


def _jsonl_row(line_no: int, raw: bytes, num_classes: int) -> dict[str, Any]:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return _row(line_no, b"", 0, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return _row(line_no, b"", 0, f"not a JSON object ({exc.msg})")
    if not isinstance(row, dict) or "text" not in row or "label" not in row:
        return _row(line_no, b"", 0, "expected a JSON object with keys 'text' and 'label'")
    text, label = row["text"], row["label"]
    if not isinstance(text, str):
        return _row(line_no, b"", 0, f"'text' must be a string, got {type(text).__name__}")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        return _row(line_no, b"", 0, f"label {label!r} out of range: allowed "
                                     f"0..{num_classes - 1}")
    try:
        return _row(line_no, text.encode("utf-8"), label)
    except UnicodeEncodeError as exc:
        return _row(line_no, b"", 0, f"text is not valid Unicode ({exc.reason})")


def aclimdb_rows(split_dir: str) -> Iterator[dict[str, Any]]:
    """Rows of one aclImdb split directory (``neg/`` then ``pos/``, files sorted by name)."""
    index = 0
    for name, label in LABEL_DIRS:
        for path in sorted((Path(split_dir) / name).glob("*.txt")):
            index += 1
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _row(1, b"", 0, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                           str(path))
                continue
            yield _row(index, data, label)


def source_rows(kind: str, path: str) -> Iterator[dict[str, Any]]:
    """Rows of a source split: ``kind`` "jsonl" (a file) or "aclimdb" (a directory)."""
    return jsonl_rows(path) if kind == "jsonl" else aclimdb_rows(path)


def read_source_split(source: ImdbSource, split: str) -> tuple[list[bytes], list[int]]:
    """Reviews and labels of source split ``train`` or ``test``; the first bad row raises."""
    texts, labels = [], []
    for row in source_rows(source.kind, str(source.files[split])):
        if row["problem"] is not None:
            RowPolicy().bad(row["path"] or source.files[split], row["line"], row["problem"])
        texts.append(row["input_ids"])
        labels.append(row["label"])
    return texts, labels


def text_digests(texts: Any, rows: np.ndarray) -> list[bytes]:
    """128-bit BLAKE2b digest of the bytes of ``texts[i]`` (an Arrow binary column) for each
    row ``i`` (used to keep duplicate texts together)."""
    return [hashlib.blake2b(texts[int(i)].as_buffer(), digest_size=16).digest() for i in rows]


def held_out_split(digests: list[bytes], labels: np.ndarray, val_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, label-stratified ``(train_index, val_index)`` over rows; identical texts
    (same digest) always land on the same side. Per label, ``round(val_fraction * groups)``
    distinct texts (at least 1, at most groups - 1) go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    group_of: dict[bytes, int] = {}
    group = np.fromiter((group_of.setdefault(d, len(group_of)) for d in digests),
                        dtype=np.int64, count=len(digests))
    n_groups = len(group_of)
    group_label = np.zeros(n_groups, dtype=np.int64)
    group_label[group] = labels  # duplicate texts carry the same label in IMDB
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x1D3B,)))
    in_val = np.zeros(n_groups, dtype=bool)
    for label in np.unique(group_label):
        members = np.flatnonzero(group_label == label)
        if members.size < 2:
            continue
        k = min(max(1, round(val_fraction * members.size)), members.size - 1)
        in_val[rng.choice(members, size=k, replace=False)] = True
    val_row = in_val[group]
    return np.flatnonzero(~val_row), np.flatnonzero(val_row)
