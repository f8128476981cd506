"""Reader/writer of the official LRA retrieval files (ACL Anthology Network, Radev et al.
2013; LRA arXiv 2011.04006): ``new_aan_pairs.{train,eval,test}.tsv``, no header, five
tab-separated columns ``label id1 id2 text1 text2`` (LRA reads them without quote handling;
the label is a float 0/1). Texts are byte-level encoded by the task.

Locations checked for a data directory ``D`` (first complete set wins): ``D/aan/``,
``D/lra_release/tsv_data/``, ``D/tsv_data/``, ``D/``. Our ``val`` split is the ``eval`` file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MissingDataError

FILE_SPLITS = {"train": "train", "val": "eval", "test": "test"}
COLUMNS = ("label", "id1", "id2", "text1", "text2")
HOW_TO_OBTAIN = (
    "download the official LRA release archive lra_release.gz (linked from the README of "
    "https://github.com/google-research/long-range-arena; "
    "https://storage.googleapis.com/long-range-arena/lra_release.gz) and either extract it "
    "into DATA_DIR (giving DATA_DIR/lra_release/tsv_data/new_aan_pairs.train.tsv) or run "
    "`python -m lra_data prepare lra_retrieval --source lra_release.gz --out DATA_DIR`, which "
    "copies the three files to DATA_DIR/aan/. The AAN corpus cannot be downloaded in this "
    "environment; the task 'imdb_retrieval' is an offline SUBSTITUTE built from IMDB reviews "
    "(its numbers are not AAN numbers)."
)


def file_name(split: str) -> str:
    return f"new_aan_pairs.{FILE_SPLITS[split]}.tsv"


def candidate_dirs(data_dir: Path) -> list[Path]:
    return [data_dir / "aan", data_dir / "lra_release" / "tsv_data", data_dir / "tsv_data",
            data_dir]


def find_aan(data_dir: str | os.PathLike, split: str, task: str = "lra_retrieval") -> Path:
    """Path of the file of ``split`` under ``data_dir`` or :class:`MissingDataError`."""
    root = Path(data_dir)
    looked = []
    for base in candidate_dirs(root):
        path = base / file_name(split)
        looked.append(str(path))
        if path.is_file():
            return path
    raise MissingDataError(task, looked, HOW_TO_OBTAIN)


def _parse_label(raw: bytes) -> int | None:
    try:
        value = float(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return int(value) if value in (0.0, 1.0) else None


def aan_rows(path: str) -> Iterator[dict[str, Any]]:
    """Rows ``{"line", "input_ids", "input_ids2", "label", "problem", "path"}`` of one AAN file
    (the two texts' UTF-8 bytes); a malformed row is kept as a ``problem``."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            cols = raw.rstrip(b"\r\n").split(b"\t")
            problem = None
            label = _parse_label(cols[0]) if len(cols) == len(COLUMNS) else None
            if len(cols) != len(COLUMNS):
                problem = (f"expected {len(COLUMNS)} tab-separated columns "
                           f"({' '.join(COLUMNS)}), found {len(cols)}")
            elif label is None:
                problem = f"label {cols[0][:20]!r} out of range: allowed 0 or 1"
            else:
                try:
                    for col in cols[1:]:
                        col.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problem = f"not valid UTF-8 ({exc.reason})"
            good = problem is None
            yield {"line": line_no, "input_ids": cols[3] if good else b"",
                   "input_ids2": cols[4] if good else b"", "label": label if good else -1,
                   "problem": problem, "path": None}


def write_aan_tsv(path: str | os.PathLike,
                  rows: list[tuple[int, str, str, str, str]]) -> Path:
    """Write rows ``(label, id1, id2, text1, text2)`` in the official layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for label, id1, id2, t1, t2 in rows:
            for field in (id1, id2, t1, t2):
                if any(c in field for c in "\t\n\r"):
                    raise ValueError(f"AAN fields cannot contain tabs or newlines: {field[:40]!r}")
            f.write(f"{label}\t{id1}\t{id2}\t{t1}\t{t2}\n")
    return path
