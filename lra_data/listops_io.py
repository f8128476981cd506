"""Read LRA ListOps TSV files (``Source\\tTarget`` header) into token ids.

:func:`tokenize_sources` is the vectorized tokenizer (all rows of a block at once); the plain
reference is :func:`lra_data.listops.tokenize`. It splits on ASCII whitespace, drops ``(``/``)``,
maps the rest through the fixed vocabulary and checks that ``[OP``/``]`` are balanced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import LRADataError
from .listops import CLOSE, END_ID, NUM_CLASSES, OPEN, OPERATOR_IDS, TOKEN_TO_ID

HEADER_FIELDS = ("Source", "Target")
_BLOCK_BYTES = 1 << 24
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _pack(token: bytes) -> int:
    """Key of a token of at most 4 bytes: length in the high bits, bytes in the low 32."""
    return (len(token) << 32) | int.from_bytes(token.ljust(4, b"\0"), "little")


_DROP, _INVALID = -1, -2
# Single-byte tokens, looked up by their byte; every other first byte is invalid alone.
_SINGLE = np.full(256, _INVALID, dtype=np.int64)
_SINGLE[ord(OPEN)] = _SINGLE[ord(CLOSE)] = _DROP
for _tok, _id in TOKEN_TO_ID.items():
    if len(_tok) == 1:
        _SINGLE[ord(_tok)] = _id
# Multi-byte tokens (the operators), looked up by a packed key.
_MULTI = {_pack(tok.encode()): i for tok, i in TOKEN_TO_ID.items() if len(tok) > 1}
_KEYS = np.array(sorted(_MULTI), dtype=np.int64)
_VALUES = np.array([_MULTI[k] for k in sorted(_MULTI)], dtype=np.int64)
_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[list(OPERATOR_IDS)] = 1
_DEPTH_STEP[END_ID] = -1


def _describe_bad_token(source: bytes) -> str:
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"Source is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    for tok in text.split():
        if tok not in TOKEN_TO_ID and tok not in (OPEN, CLOSE):
            return (f"unknown ListOps token {tok[:20]!r}; allowed: ( ) "
                    + " ".join(TOKEN_TO_ID))
    return "unknown ListOps token"


def tokenize_sources(sources: list[bytes]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Ids of many sources at once.

    Returns ``(ids uint8, counts int64 per row, problems {row: message})``; rows with a
    problem contribute no ids (count 0).
    """
    n = len(sources)
    if n == 0:
        return np.empty(0, np.uint8), np.empty(0, np.int64), {}
    arr = np.frombuffer(b"\n".join(sources) + b"\n", dtype=np.uint8)
    sep = _WHITESPACE[arr]
    word = ~sep
    is_start = word.copy()
    is_start[1:] &= sep[:-1]
    starts = np.flatnonzero(is_start)
    value = _SINGLE[arr[starts]]
    multi = np.flatnonzero(word[starts + 1])  # the byte after a start is never past the end
    if multi.size:
        is_end = word.copy()
        is_end[:-1] &= sep[1:]
        ends = np.flatnonzero(is_end)
        m_start = starts[multi]
        length = ends[multi] - m_start + 1
        key = np.minimum(length, 5) << 32
        for b in range(4):
            byte = arr[np.minimum(m_start + b, arr.size - 1)].astype(np.int64)
            key |= np.where(length > b, byte, 0) << (8 * b)
        idx = np.minimum(np.searchsorted(_KEYS, key), _KEYS.size - 1)
        value[multi] = np.where(_KEYS[idx] == key, _VALUES[idx], _INVALID)
    newlines = np.flatnonzero(arr == 10)
    problems: dict[int, str] = {}
    bad = value == _INVALID
    if bad.any():
        for r in np.unique(np.searchsorted(newlines, starts[bad])):
            problems[int(r)] = _describe_bad_token(sources[int(r)])
    keep = value >= 0
    ids = value[keep]
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    counts = np.diff(kept_before[np.searchsorted(starts, newlines)], prepend=0)
    for r in np.flatnonzero(counts == 0):
        problems.setdefault(int(r), "empty Source (no tokens)")
    # Bracket balance: running depth (+1 per operator, -1 per ']') must stay >= 0 and end at 0.
    nonempty = counts > 0
    if ids.size:
        step = _DEPTH_STEP[ids]
        depth = np.cumsum(step)
        row_start = np.cumsum(counts) - counts
        first = row_start[nonempty]
        base = depth[first] - step[first]
        rel = depth - np.repeat(base, counts[nonempty])
        min_depth = np.minimum.reduceat(rel, first) if first.size else first
        final = rel[first + counts[nonempty] - 1]
        for r in np.flatnonzero(nonempty)[(min_depth < 0) | (final != 0)]:
            problems.setdefault(int(r), "unbalanced brackets: every [OP needs one ']'")
    if problems:
        ok_row = np.ones(n, dtype=bool)
        ok_row[np.fromiter(problems, dtype=np.int64)] = False
        ids = ids[np.repeat(ok_row, counts)]
        counts = np.where(ok_row, counts, 0)
    return ids.astype(np.uint8), counts, problems


def _parse_label(raw: bytes) -> int | None:
    text = raw.strip()
    if not text or not text.isdigit():
        return None
    value = int(text)
    return value if value < NUM_CLASSES else None


def listops_rows(path: str, close_bracket: bool = True) -> Iterator[dict[str, Any]]:
    """Rows of one ``basic_*.tsv`` file: ``{"line", "source", "label", "problem", "path"}``, a
    row with a wrong column count or a label outside 0..9 as a ``problem`` (the ids come from
    :func:`tokenize_batch`). A missing header raises :class:`LRADataError`."""
    with open(path, "rb") as f:
        header = f.readline()
        fields = tuple(header.rstrip(b"\r\n").decode("utf-8", "replace").split("\t"))
        if fields != HEADER_FIELDS:
            raise LRADataError(
                f"{path}, line 1: expected the header 'Source<TAB>Target' of an LRA ListOps "
                f"file, found {header[:60]!r}"
            )
        for line_no, raw in enumerate(f, 2):
            cols = raw.rstrip(b"\r\n").split(b"\t")
            problem = None
            label = _parse_label(cols[1]) if len(cols) == 2 else None
            if len(cols) != 2:
                problem = (f"expected 2 tab-separated columns (Source, Target), found "
                           f"{len(cols)}")
            elif label is None:
                problem = f"label {cols[1][:20]!r} is not an integer in 0..{NUM_CLASSES - 1}"
            yield {"line": line_no, "source": cols[0] if problem is None else b"",
                   "label": -1 if label is None else label, "problem": problem, "path": None}


def tokenize_batch(batch: dict[str, list], close_bracket: bool = True) -> dict[str, list]:
    """``Dataset.map`` step: the ids of a batch of sources as ``input_ids`` bytes (rows with a
    problem, or with a bad token or unbalanced brackets, get a ``problem`` and no ids);
    ``close_bracket=False`` drops the ``]`` tokens (LRA's original TF pipeline: its alphanumeric
    tokenizer dropped brackets; the Skyformer/Spectraformer reference code reads its output)."""
    sources, problem = batch["source"], list(batch["problem"])
    ids, counts, problems = tokenize_sources(sources)
    if not close_bracket and ids.size:
        keep = ids != END_ID
        rows = np.repeat(np.arange(counts.size), counts)
        counts = np.bincount(rows[keep], minlength=counts.size)
        ids = ids[keep]
    for r, text in problems.items():
        problem[r] = problem[r] or text
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    data = ids.tobytes()
    return {"input_ids": [data[offsets[i]: offsets[i + 1]] for i in range(counts.size)],
            "problem": problem}
