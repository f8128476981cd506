"""Read LRA ListOps TSV files (``Source\\tTarget`` header) into token ids.

:func:`tokenize_sources` is the vectorized tokenizer (all rows of a block at once); the plain
reference is :func:`lra_data.listops.tokenize`. It splits on ASCII whitespace, drops ``(``/``)``,
maps the rest through the fixed vocabulary and checks that ``[OP``/``]`` are balanced.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import Ragged
from .errors import LRADataError, RowPolicy
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


def read_listops_tsv(path: str | os.PathLike, max_length: int, policy: RowPolicy,
                     close_bracket: bool = True) -> tuple[Ragged, np.ndarray]:
    """Read one ``basic_*.tsv`` file: ids cut to ``max_length`` (full lengths kept) and labels.

    ``close_bracket=False`` drops the ``]`` tokens before cutting, as LRA's original TF
    pipeline did (its alphanumeric tokenizer dropped brackets; the Skyformer/Spectraformer
    reference code reads that pipeline's output): same ids, no id 15.

    Raises :class:`BadRowError` naming the file and line for a missing header, a wrong
    column count, a label outside 0..9, non-UTF-8 text, an unknown token or unbalanced
    brackets (or counts them with ``policy.skip``).
    """
    path = Path(path)
    data_parts: list[np.ndarray] = []
    length_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    with open(path, "rb") as f:
        header = f.readline()
        fields = tuple(header.rstrip(b"\r\n").decode("utf-8", "replace").split("\t"))
        if fields != HEADER_FIELDS:
            raise LRADataError(
                f"{path}, line 1: expected the header 'Source<TAB>Target' of an LRA ListOps "
                f"file, found {header[:60]!r}"
            )
        line_no = 1
        while True:
            lines = f.readlines(_BLOCK_BYTES)
            if not lines:
                break
            sources: list[bytes] = []
            labels: list[int] = []
            line_of: list[int] = []
            for raw in lines:
                line_no += 1
                line = raw.rstrip(b"\r\n")
                cols = line.split(b"\t")
                if len(cols) != 2:
                    policy.bad(path, line_no, f"expected 2 tab-separated columns (Source, "
                                              f"Target), found {len(cols)}")
                    continue
                label = _parse_label(cols[1])
                if label is None:
                    policy.bad(path, line_no, f"label {cols[1][:20]!r} is not an integer in "
                                              f"0..{NUM_CLASSES - 1}")
                    continue
                sources.append(cols[0])
                labels.append(label)
                line_of.append(line_no)
            ids, counts, problems = tokenize_sources(sources)
            if not close_bracket and ids.size:
                keep = ids != END_ID
                rows = np.repeat(np.arange(counts.size), counts)
                counts = np.bincount(rows[keep], minlength=counts.size)
                ids = ids[keep]
            good = np.ones(len(sources), dtype=bool)
            for r in sorted(problems):
                policy.bad(path, line_of[r], problems[r])
                good[r] = False
            counts = counts[good]
            offsets = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            if counts.size and int(counts.max()) > max_length:
                kept = np.minimum(counts, max_length)
                ids = ids[np.repeat(offsets[:-1], kept) + (
                    np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept))]
            data_parts.append(ids)
            length_parts.append(counts)
            label_parts.append(np.asarray(labels, dtype=np.int64)[good])
    lengths = np.concatenate(length_parts) if length_parts else np.empty(0, np.int64)
    kept = np.minimum(lengths, max_length)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    data = np.concatenate(data_parts) if data_parts else np.empty(0, np.uint8)
    labels_arr = np.concatenate(label_parts) if label_parts else np.empty(0, np.int64)
    return Ragged(data, offsets, lengths, 0), labels_arr
