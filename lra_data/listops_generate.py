"""Seeded ListOps generator (LRA's ``lra_benchmarks/data/listops.py`` algorithm, vectorized).

The tree distribution is LRA's (Nangia & Bowman 2018, arXiv 1804.06028; LRA arXiv 2011.04006):
a node at depth ``d < max_depth`` (root depth 1) becomes an operator when ``random() <=
value_p`` -- LRA's code emits a digit when ``r > VALUE_P``, so despite its name ``value_p =
0.25`` is the *operator* probability and a digit is drawn with probability 0.75 -- and nodes at
``max_depth`` are digits. An operator is uniform over MIN/MAX/MED/SM with ``randint(2,
max_args)`` arguments; a digit is uniform over 0..9. Samples are kept when ``min_length <
length < max_length`` (strict, as in LRA), ``length`` = tokens without parentheses. Rows are
deduplicated by source string and split in generation order into train/val/test.

:func:`reference_tree` is the plain recursive algorithm. :func:`generate_chunk` draws a batch
of trees level by level with numpy (all nodes of one depth at once), abandons a tree as soon
as its length can no longer be below ``max_length`` (this changes nothing about the accepted
samples: rejection sampling), and writes the accepted trees' LRA source text and labels with
array arithmetic. The distribution of accepted trees is the same; the random stream differs,
so the two are compared statistically in the tests. Chunk ``i`` uses the random stream
``SeedSequence(seed, spawn_key=(i,))``, so output does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .listops import END, OPERATORS, Tree
from .registry import SPLITS

GENERATOR_VERSION = 1
CHUNK_TREES = 16384
HEADER = b"Source\tTarget\n"

# Token codes of the serialized text (not the model vocabulary).
_OPEN, _CLOSE, _END, _OP0, _DIGIT0 = 0, 1, 2, 3, 3 + len(OPERATORS)
_TOKEN_TEXT = ["(", ")", END, *OPERATORS, *(str(d) for d in range(10))]
_TOKEN_WIDTH = np.array([len(t) for t in _TOKEN_TEXT], dtype=np.int64)
_TOKEN_BYTES = np.zeros((len(_TOKEN_TEXT), 4), dtype=np.uint8)
for _i, _t in enumerate(_TOKEN_TEXT):
    _TOKEN_BYTES[_i, : len(_t)] = np.frombuffer(_t.encode("ascii"), dtype=np.uint8)


@dataclass(frozen=True)
class ListOpsParams:
    """Generator parameters (LRA defaults). ``value_p`` is LRA's VALUE_P (operator prob.)."""

    max_depth: int = 10
    max_args: int = 10
    value_p: float = 0.25
    min_length: int = 500
    max_length: int = 2000
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000

    def __post_init__(self) -> None:
        if self.max_depth < 2:
            raise ValueError(f"max_depth must be >= 2 (got {self.max_depth})")
        if self.max_args < 2:
            raise ValueError(f"max_args must be >= 2 (got {self.max_args})")
        if not 0.0 < self.value_p < 1.0:
            raise ValueError(f"value_p must be in (0, 1) (got {self.value_p})")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(
                "need 0 <= min_length < max_length - 1 (lengths are kept when min_length < "
                f"length < max_length); got min_length={self.min_length}, "
                f"max_length={self.max_length}"
            )
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    @property
    def total(self) -> int:
        return self.num_train + self.num_val + self.num_test

    def cache_key(self, seed: int, n_trees: int = CHUNK_TREES) -> str:
        """Hash of the parameters, seed, chunk size and generator version (the cache key)."""
        blob = json.dumps(
            {"params": asdict(self), "seed": seed, "version": GENERATOR_VERSION,
             "chunk": n_trees},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- reference
def reference_tree(rng: random.Random, params: ListOpsParams, depth: int = 1) -> Tree:
    """One tree drawn by LRA's recursive algorithm (plain Python reference)."""
    r = rng.random() if depth < params.max_depth else 1.0
    if r > params.value_p:
        return rng.randrange(10)
    nargs = rng.randint(2, params.max_args)
    children = [reference_tree(rng, params, depth + 1) for _ in range(nargs)]
    return (rng.choice(OPERATORS), children)


# ------------------------------------------------------------------------------ fast path
@dataclass
class Chunk:
    """Accepted rows of one chunk: ``text[row_offsets[i]:row_offsets[i+1]]`` is the TSV line
    ``source\\tlabel\\n`` of row ``i``."""

    text: np.ndarray
    row_offsets: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    depths: np.ndarray
    trees_drawn: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def row_text(self, i: int) -> bytes:
        return self.text[self.row_offsets[i] : self.row_offsets[i + 1]].tobytes()


@dataclass
class _Level:
    tree: np.ndarray
    is_op: np.ndarray
    nargs: np.ndarray
    code: np.ndarray  # operator index for operators, digit for leaves
    parent: np.ndarray
    size: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    start: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def _draw_levels(rng: np.random.Generator, params: ListOpsParams,
                 n_trees: int) -> tuple[list[_Level], np.ndarray, np.ndarray]:
    """Draw ``n_trees`` trees breadth first. Returns the levels, each tree's length and a mask
    of trees abandoned because they reached ``max_length`` tokens."""
    tree = np.arange(n_trees, dtype=np.int64)
    parent = np.full(n_trees, -1, dtype=np.int64)
    committed = np.zeros(n_trees, dtype=np.int64)
    dead = np.zeros(n_trees, dtype=bool)
    levels: list[_Level] = []
    for depth in range(1, params.max_depth + 1):
        m = tree.shape[0]
        if m == 0:
            break
        if depth < params.max_depth:
            is_op = rng.random(m) <= params.value_p
        else:
            is_op = np.zeros(m, dtype=bool)
        n_op = int(is_op.sum())
        nargs = np.zeros(m, dtype=np.int64)
        nargs[is_op] = rng.integers(2, params.max_args + 1, size=n_op)
        code = np.empty(m, dtype=np.int64)
        code[is_op] = rng.integers(0, len(OPERATORS), size=n_op)
        code[~is_op] = rng.integers(0, 10, size=m - n_op)
        # An operator contributes 2 tokens (op and ']'), a digit 1.
        committed += np.bincount(tree, minlength=n_trees)
        committed += np.bincount(tree[is_op], minlength=n_trees)
        child_parent = np.repeat(np.flatnonzero(is_op), nargs[is_op])
        child_tree = tree[child_parent]
        pending = np.bincount(child_tree, minlength=n_trees)
        dead |= committed + pending >= params.max_length
        levels.append(_Level(tree, is_op, nargs, code, parent))
        keep = ~dead[child_tree]
        tree, parent = child_tree[keep], child_parent[keep]
    return levels, committed, dead


def _compact(levels: list[_Level], accepted: np.ndarray) -> list[_Level]:
    """Keep the nodes of accepted trees; renumber trees to rows and parents to new indices."""
    row_of_tree = np.cumsum(accepted) - 1
    out: list[_Level] = []
    prev_new_index: np.ndarray | None = None
    for lvl in levels:
        keep = accepted[lvl.tree]
        if not keep.any():
            break
        parent = lvl.parent[keep]
        if prev_new_index is not None:
            parent = prev_new_index[parent]
        out.append(
            _Level(row_of_tree[lvl.tree[keep]], lvl.is_op[keep], lvl.nargs[keep],
                   lvl.code[keep], parent)
        )
        prev_new_index = np.cumsum(keep) - 1
    return out


def _child_segments(lvl: _Level) -> tuple[np.ndarray, np.ndarray]:
    """Indices of operator nodes and the start of each one's children in the next level."""
    ops = np.flatnonzero(lvl.is_op)
    k = lvl.nargs[ops]
    starts = np.concatenate(([0], np.cumsum(k)[:-1])) if ops.size else np.empty(0, np.int64)
    return ops, starts


def _sizes_and_values(levels: list[_Level]) -> None:
    """Bottom up: text tokens of each subtree (``size``) and each node's value."""
    for li in range(len(levels) - 1, -1, -1):
        lvl = levels[li]
        size = np.where(lvl.is_op, 2 * lvl.nargs + 4, 1).astype(np.int64)
        value = lvl.code.copy()
        ops, starts = _child_segments(lvl)
        if ops.size:
            child = levels[li + 1]
            size[ops] += np.add.reduceat(child.size, starts)
            cv = child.value
            k = lvl.nargs[ops]
            v_min = np.minimum.reduceat(cv, starts)
            v_max = np.maximum.reduceat(cv, starts)
            v_sm = np.add.reduceat(cv, starts) % 10
            seg = np.repeat(np.arange(ops.size, dtype=np.int64), k)
            srt = np.sort(seg * 16 + cv) % 16
            v_med = (srt[starts + (k - 1) // 2] + srt[starts + k // 2]) // 2
            value[ops] = np.choose(lvl.code[ops], [v_min, v_max, v_med, v_sm])
        lvl.size, lvl.value = size, value


def _positions(levels: list[_Level]) -> int:
    """Top down: start index of each node's text tokens in the chunk's token stream."""
    root = levels[0]
    root.start = np.concatenate(([0], np.cumsum(root.size)[:-1]))
    for li in range(len(levels) - 1):
        lvl, child = levels[li], levels[li + 1]
        ops, starts = _child_segments(lvl)
        if not ops.size:
            break
        k = lvl.nargs[ops]
        step = child.size + 1  # each child is followed by ')'
        excl = np.cumsum(step) - step
        excl -= np.repeat(excl[starts], k)
        child.start = np.repeat(lvl.start[ops] + k + 2, k) + excl
    return int(root.size.sum())


def _token_codes(levels: list[_Level], total: int) -> np.ndarray:
    """Text token codes of all rows; every position not written below is an opening '('."""
    tok = np.full(total, _OPEN, dtype=np.int64)
    for li, lvl in enumerate(levels):
        leaf = ~lvl.is_op
        tok[lvl.start[leaf]] = _DIGIT0 + lvl.code[leaf]
        ops = lvl.is_op
        s, n, z = lvl.start[ops], lvl.nargs[ops], lvl.size[ops]
        tok[s + n + 1] = _OP0 + lvl.code[ops]
        tok[s + z - 2] = _END
        tok[s + z - 1] = _CLOSE
        if li > 0:
            tok[lvl.start + lvl.size] = _CLOSE
    return tok


def _render(tok: np.ndarray, row_start: np.ndarray, row_size: np.ndarray,
            labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of ``source\\tlabel\\n`` for every row (tokens joined by single spaces)."""
    width = _TOKEN_WIDTH[tok]
    last = row_start + row_size - 1
    step = width + 1
    step[last] += 2  # '\t', label digit, '\n' instead of ' '
    off = np.cumsum(step) - step
    out = np.full(int(step[-1] + off[-1]), ord(" "), dtype=np.uint8)
    out[off] = _TOKEN_BYTES[tok, 0]
    multi = np.flatnonzero(width > 1)  # operator tokens only
    for b in range(1, 4):
        sel = multi[width[multi] > b]
        out[off[sel] + b] = _TOKEN_BYTES[tok[sel], b]
    tail = off[last] + width[last]
    out[tail] = ord("\t")
    out[tail + 1] = ord("0") + labels
    out[tail + 2] = ord("\n")
    row_offsets = np.append(off[row_start], out.shape[0]).astype(np.int64)
    return out, row_offsets


def generate_chunk(params: ListOpsParams, seed: int, chunk_index: int,
                   n_trees: int = CHUNK_TREES) -> Chunk:
    """Draw ``n_trees`` trees from stream ``(seed, chunk_index)``; return the accepted rows."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk_index,)))
    levels, length, dead = _draw_levels(rng, params, n_trees)
    accepted = ~dead & (length > params.min_length) & (length < params.max_length)
    n_rows = int(accepted.sum())
    if n_rows == 0:
        empty = np.empty(0, np.int64)
        return Chunk(np.empty(0, np.uint8), np.zeros(1, np.int64), empty, empty, empty, n_trees)
    levels = _compact(levels, accepted)
    _sizes_and_values(levels)
    total = _positions(levels)
    tok = _token_codes(levels, total)
    depths = np.zeros(n_rows, dtype=np.int64)
    for li, lvl in enumerate(levels):
        depths[lvl.tree] = li + 1
    root = levels[0]
    text, row_offsets = _render(tok, root.start, root.size, root.value)
    return Chunk(text, row_offsets, root.value, length[accepted], depths, n_trees)


# ------------------------------------------------------------------------------- streaming
def iter_chunks(params: ListOpsParams, seed: int, workers: int = 1,
                n_trees: int = CHUNK_TREES) -> Iterator[Chunk]:
    """Chunks 0, 1, 2, ... in order (computed by ``workers`` processes when > 1). Endless."""
    if workers <= 1:
        index = 0
        while True:
            yield generate_chunk(params, seed, index, n_trees)
            index += 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Chunk]] = deque()
        index = 0
        try:
            while True:
                while len(pending) < 2 * workers:
                    pending.append(pool.submit(generate_chunk, params, seed, index, n_trees))
                    index += 1
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


@dataclass
class ListOpsRow:
    """One generated example."""

    source: str
    label: int
    length: int
    depth: int


def iter_unique_rows(params: ListOpsParams, seed: int, workers: int = 1,
                     n_trees: int = CHUNK_TREES) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Yield ``(chunk, kept)`` with ``kept`` the indices of rows not seen before (dedup by
    source string, via a 128-bit BLAKE2b digest of the row text)."""
    seen: set[bytes] = set()
    for chunk in iter_chunks(params, seed, workers, n_trees):
        kept = []
        view = memoryview(chunk.text)
        for i in range(len(chunk)):
            a, b = int(chunk.row_offsets[i]), int(chunk.row_offsets[i + 1])
            end = a + int(np.flatnonzero(chunk.text[a:b] == 9)[0])  # hash the source only
            digest = hashlib.blake2b(view[a:end], digest_size=16).digest()
            if digest not in seen:
                seen.add(digest)
                kept.append(i)
        yield chunk, np.asarray(kept, dtype=np.int64)


def generate_rows(n: int, params: ListOpsParams, seed: int = 0,
                  n_trees: int = CHUNK_TREES) -> list[ListOpsRow]:
    """The first ``n`` unique rows of the stream (small ``n``: tests and fixtures)."""
    rows: list[ListOpsRow] = []
    if n <= 0:
        return rows
    for chunk, kept in iter_unique_rows(params, seed, 1, n_trees):
        for i in kept:
            line = chunk.row_text(int(i)).decode("ascii")
            source, label = line.rstrip("\n").split("\t")
            rows.append(ListOpsRow(source, int(label), int(chunk.lengths[i]),
                                   int(chunk.depths[i])))
            if len(rows) == n:
                return rows
    raise AssertionError("unreachable: the chunk stream is endless")


def _next_open(split_i: int, counts: dict[str, int], sizes: dict[str, int]) -> int:
    """Index of the first split from ``split_i`` on that still needs rows (3 when none)."""
    while split_i < len(SPLITS) and counts[SPLITS[split_i]] >= sizes[SPLITS[split_i]]:
        split_i += 1
    return split_i


def write_listops(out_dir: str | os.PathLike, params: ListOpsParams, seed: int = 0, *,
                  workers: int | None = None, n_trees: int = CHUNK_TREES,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Write ``basic_{train,val,test}.tsv`` (LRA layout) into ``out_dir``; returns a summary.

    ``progress(k)`` is called with the number of rows added after each chunk.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    sizes = params.split_sizes
    counts = dict.fromkeys(SPLITS, 0)
    label_hist = {s: np.zeros(10, dtype=np.int64) for s in SPLITS}
    lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    tmp_paths = {s: out / f".basic_{s}.tsv.partial" for s in SPLITS}
    files = {s: open(tmp_paths[s], "wb") for s in SPLITS}
    trees_drawn = 0
    ok = False
    try:
        for f in files.values():
            f.write(HEADER)
        split_i = _next_open(0, counts, sizes)
        if split_i < len(SPLITS):
            for chunk, kept in iter_unique_rows(params, seed, workers, n_trees):
                trees_drawn += chunk.trees_drawn
                added = 0
                pos = 0
                while pos < kept.size and split_i < len(SPLITS):
                    split = SPLITS[split_i]
                    take = kept[pos : pos + sizes[split] - counts[split]]
                    for i in take:
                        a, b = chunk.row_offsets[i], chunk.row_offsets[i + 1]
                        files[split].write(memoryview(chunk.text[a:b]))
                    np.add.at(label_hist[split], chunk.labels[take], 1)
                    lengths[split].append(chunk.lengths[take])
                    counts[split] += take.size
                    added += take.size
                    pos += take.size
                    split_i = _next_open(split_i, counts, sizes)
                if progress is not None:
                    progress(added)
                if split_i >= len(SPLITS):
                    break
        ok = True
    finally:
        for f in files.values():
            f.close()
        if not ok:
            for path in tmp_paths.values():
                path.unlink(missing_ok=True)
    for s in SPLITS:
        os.replace(tmp_paths[s], out / f"basic_{s}.tsv")
    summary = {"params": asdict(params), "seed": seed, "version": GENERATOR_VERSION,
               "chunk_trees": n_trees, "trees_drawn": trees_drawn,
               "cache_key": params.cache_key(seed, n_trees), "splits": {}}
    for s in SPLITS:
        lens = np.concatenate(lengths[s]) if lengths[s] else np.empty(0, np.int64)
        summary["splits"][s] = {
            "rows": counts[s], "labels": label_hist[s].tolist(),
            "bytes": (out / f"basic_{s}.tsv").stat().st_size,
            "length_min": int(lens.min()) if lens.size else None,
            "length_max": int(lens.max()) if lens.size else None,
        }
    return summary
