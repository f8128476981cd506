"""ListOps: language, tokenizer, evaluator, generator (vs LRA's recursive algorithm), TSV I/O."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

import lra_data
from lra_data import listops as L
from lra_data.errors import BadRowError, MissingDataError
from lra_data.listops_generate import (
    ListOpsParams,
    generate_chunk,
    generate_rows,
    iter_unique_rows,
    reference_tree,
    write_listops,
)
from lra_data.listops_io import tokenize_sources

SMALL = ListOpsParams(max_depth=6, max_args=5, min_length=10, max_length=100, num_train=40,
                      num_val=8, num_test=8)


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


# ---------------------------------------------------------------- language and tokenizer
def test_vocabulary_is_fixed_and_documented():
    assert L.VOCAB_SIZE == 16 == lra_data.TASKS["lra_listops"].vocab_size
    assert L.VOCAB[0] == "<pad>"
    assert [L.TOKEN_TO_ID[str(d)] for d in range(10)] == list(range(1, 11))
    assert [L.TOKEN_TO_ID[t] for t in ("[MIN", "[MAX", "[MED", "[SM", "]")] == [11, 12, 13, 14, 15]


def test_tokenizer_on_hand_written_lra_source():
    source = "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"
    assert L.tokenize(source) == [12, 3, 10, 11, 5, 8, 15, 1, 15]
    assert L.detokenize([12, 3, 10, 11, 5, 8, 15, 1, 15, 0, 0]) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    ids, counts, problems = tokenize_sources([source.encode()])
    assert problems == {} and counts.tolist() == [9]
    assert ids.tolist() == L.tokenize(source)
    with pytest.raises(ValueError, match="unknown ListOps token"):
        L.tokenize("[MAXX 1 2 ]")


def test_lra_source_format_matches_lra_tuple_tree():
    tree = ("[MAX", [2, 9, ("[MIN", [4, 7]), 0])
    assert L.to_lra_source(tree) == "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"
    assert L.parse(L.to_lra_source(tree)) == tree
    assert L.tree_length(tree) == 9 and L.tree_depth(tree) == 3


@pytest.mark.parametrize(
    ("source", "value"),
    [("[MIN 4 7 2 ]", 2), ("[MAX 4 7 2 ]", 7), ("[SM 9 9 5 ]", 3), ("[MED 1 2 ]", 1),
     ("[MED 3 4 5 6 ]", 4), ("[MED 9 0 5 ]", 5), ("[MED 8 9 ]", 8), ("7", 7),
     ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9), ("[SM [MED 9 8 ] [MIN 3 5 ] ]", 1)],
)
def test_evaluator_on_hand_examples(source, value):
    assert L.evaluate(source) == value
    assert L.evaluate_ids(L.tokenize(source)) == value


def test_parser_rejects_malformed_expressions():
    for bad in ("[MAX 1 2", "1 2", "]", "[MIN ]", ""):
        with pytest.raises(ValueError):
            L.parse(bad)


# ------------------------------------------------------------------------ generator
def test_lra_parameters_chunk_every_label_verified_and_bounds_respected():
    params = ListOpsParams()
    chunk = generate_chunk(params, seed=0, chunk_index=0)
    assert len(chunk) > 800  # ~8% of 16384 trees fall in (500, 2000)
    assert ((chunk.lengths > 500) & (chunk.lengths < 2000)).all()
    assert (chunk.depths <= 10).all() and chunk.depths.max() == 10
    ids, counts, problems = tokenize_sources(
        [chunk.row_text(i).split(b"\t")[0] for i in range(len(chunk))])
    assert problems == {}
    assert counts.tolist() == chunk.lengths.tolist()
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for i in range(len(chunk)):
        tree = L.tree_from_ids(ids[offsets[i]: offsets[i + 1]])
        assert L.evaluate_tree(tree) == chunk.labels[i], f"row {i}"
        assert L.tree_depth(tree) == chunk.depths[i]
        if i < 100:  # exact LRA text (parentheses of the tuple tree) on a subset
            source, label = chunk.row_text(i).decode().rstrip("\n").split("\t")
            assert source == L.to_lra_source(tree) and int(label) == chunk.labels[i]


def _max_args(tree):
    if isinstance(tree, int):
        return 0
    return max(len(tree[1]), *(_max_args(c) for c in tree[1]))


def test_generator_deterministic_per_seed_and_bounds():
    a = generate_rows(60, SMALL, seed=3, n_trees=512)
    b = generate_rows(60, SMALL, seed=3, n_trees=512)
    c = generate_rows(60, SMALL, seed=4, n_trees=512)
    assert [r.source for r in a] == [r.source for r in b]
    assert [r.source for r in a] != [r.source for r in c]
    assert len({r.source for r in a}) == 60  # deduplicated
    for r in a:
        tree = L.parse(r.source)
        assert L.evaluate_tree(tree) == r.label
        assert SMALL.min_length < L.tree_length(tree) == r.length < SMALL.max_length
        assert L.tree_depth(tree) == r.depth <= SMALL.max_depth
        assert 2 <= _max_args(tree) <= SMALL.max_args


def test_dedup_when_duplicates_are_common():
    # Only [OP a b ] has 3 < length < 5: 400 possible sources, so the raw stream repeats.
    params = ListOpsParams(max_depth=3, max_args=2, min_length=3, max_length=5)
    rows = generate_rows(150, params, seed=0, n_trees=256)
    sources = [r.source for r in rows]
    assert len(set(sources)) == len(sources) == 150
    raw, kept = [], 0
    for chunk, keep in iter_unique_rows(params, 0, n_trees=256):
        raw += [chunk.row_text(i) for i in range(len(chunk))]
        kept += keep.size
        if kept >= 150:
            break
    assert len(raw) > kept == len(set(raw))
    assert [r.decode().split("\t")[0] for r in dict.fromkeys(raw)][:150] == sources


def _chi2_sf(stat: float, df: int) -> float:
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def _homogeneity_p(a: Counter, b: Counter) -> float:
    """Two-sample chi-square test of equal distributions (bins with expected < 5 merged)."""
    keys = sorted(set(a) | set(b))
    na, nb = sum(a.values()), sum(b.values())
    table = np.array([[a[k], b[k]] for k in keys], dtype=float)
    merged, acc = [], np.zeros(2)
    for row in table:  # merge sparse bins in key order
        acc = acc + row
        if acc.sum() * min(na, nb) / (na + nb) >= 5:
            merged.append(acc)
            acc = np.zeros(2)
    if acc.sum() and merged:
        merged[-1] = merged[-1] + acc
    t = np.array(merged)
    expected = t.sum(1, keepdims=True) * np.array([na, nb]) / (na + nb)
    stat = float(((t - expected) ** 2 / expected).sum())
    return _chi2_sf(stat, len(t) - 1)


def test_vectorized_generator_matches_lra_recursive_distribution():
    """The level-by-level numpy generator and LRA's recursive algorithm give the same
    distribution of accepted trees: two-sample chi-square tests (fixed seeds) of length,
    depth, root operator, root arity and label; each must have p > 1e-3."""
    params = ListOpsParams(max_depth=6, max_args=5, min_length=10, max_length=100)
    rng = random.Random(0)
    ref = []
    while len(ref) < 3000:
        tree = reference_tree(rng, params)
        if params.min_length < L.tree_length(tree) < params.max_length:
            ref.append(tree)
    fast = []
    index = 0
    while len(fast) < 3000:  # raw chunks: no dedup, like the sampling distribution
        chunk = generate_chunk(params, 1, index, n_trees=4096)
        fast += [L.parse(chunk.row_text(i).decode().split("\t")[0]) for i in range(len(chunk))]
        index += 1
    fast = fast[:3000]

    def features(trees):
        return {
            "length": Counter(L.tree_length(t) // 10 for t in trees),
            "depth": Counter(L.tree_depth(t) for t in trees),
            "root_op": Counter(t[0] for t in trees),
            "root_arity": Counter(len(t[1]) for t in trees),
            "label": Counter(L.evaluate_tree(t) for t in trees),
        }

    fr, ff = features(ref), features(fast)
    for name in fr:
        p = _homogeneity_p(fr[name], ff[name])
        assert p > 1e-3, f"{name}: p = {p:.2e}\nref {sorted(fr[name].items())}\n" \
                         f"fast {sorted(ff[name].items())}"
    # Sanity: the test can fail -- a generator with digit probability 0.25 differs a lot.
    wrong = ListOpsParams(max_depth=6, max_args=5, min_length=10, max_length=100, value_p=0.5)
    chunk = generate_chunk(wrong, 1, 0, n_trees=8192)
    other = [L.parse(chunk.row_text(i).decode().split("\t")[0]) for i in range(len(chunk))]
    assert _homogeneity_p(fr["length"], features(other)["length"]) < 1e-6


def test_params_validation():
    for bad in ({"max_depth": 1}, {"max_args": 1}, {"value_p": 0.0}, {"value_p": 1.0},
                {"min_length": 10, "max_length": 11}, {"num_train": -1}):
        with pytest.raises(ValueError):
            ListOpsParams(**bad)


# ------------------------------------------------------------------------------- files
def test_write_listops_layout_workers_and_round_trip(tmp_path):
    one = write_listops(tmp_path / "w1", SMALL, seed=5, workers=1, n_trees=512)
    two = write_listops(tmp_path / "w2", SMALL, seed=5, workers=2, n_trees=512)
    for split, n in (("train", 40), ("val", 8), ("test", 8)):
        text1 = (tmp_path / "w1" / f"basic_{split}.tsv").read_bytes()
        assert text1 == (tmp_path / "w2" / f"basic_{split}.tsv").read_bytes()
        lines = text1.decode().splitlines()
        assert lines[0] == "Source\tTarget" and len(lines) == n + 1
        assert one["splits"][split]["rows"] == two["splits"][split]["rows"] == n
    sources = []
    for split in ("train", "val", "test"):
        lines = (tmp_path / "w1" / f"basic_{split}.tsv").read_text().splitlines()[1:]
        sources += [line.split("\t")[0] for line in lines]
    assert len(set(sources)) == len(sources)  # no row in two splits
    (tmp_path / "data").mkdir()
    (tmp_path / "w1").rename(tmp_path / "data" / "listops")
    ds = lra_data.build_dataset("lra_listops", "val", tmp_path / "data")
    lines = (tmp_path / "data/listops/basic_val.tsv").read_text().splitlines()[1:]
    for i, line in enumerate(lines):
        source, label = line.split("\t")
        assert ds[i]["input_ids"].tolist() == L.tokenize(source)
        assert ds[i]["label"] == int(label) == L.evaluate(source)
    short = lra_data.build_dataset("lra_listops", "val", tmp_path / "data", max_length=12)
    assert short.num_truncated == sum(len(L.tokenize(x.split("\t")[0])) > 12 for x in lines)
    assert all(len(short[i]["input_ids"]) <= 12 for i in range(len(short)))


def test_prepare_is_cached_by_parameters(tmp_path):
    opts = {"num_train": 12, "num_val": 3, "num_test": 3, "min_length": 10, "max_length": 60,
            "workers": 1}
    out = lra_data.prepare("lra_listops", tmp_path, seed=0, **opts)
    train = out / "listops" / "basic_train.tsv"
    meta = json.loads((out / "listops" / "generator.json").read_text())
    assert meta["splits"]["train"]["rows"] == 12 and meta["params"]["max_length"] == 60
    stamp = train.stat().st_mtime_ns
    lra_data.prepare("lra_listops", tmp_path, seed=0, **opts)
    assert train.stat().st_mtime_ns == stamp  # cache hit: not rewritten
    before = train.read_bytes()
    lra_data.prepare("lra_listops", tmp_path, seed=1, **opts)
    assert train.read_bytes() != before  # other key: regenerated
    with pytest.raises(ValueError, match="unknown option"):
        lra_data.prepare("lra_listops", tmp_path, max_lenght=5)


def _write(path, text: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path


GOOD = b"( ( ( [MAX 2 ) 9 ) ] )\t9\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [(b"( [MAX 2 9 ] )\n", "expected 2 tab-separated columns"),
     (b"[MAX 2 9 ]\t9\textra\n", "expected 2 tab-separated columns"),
     (b"[MAX 2 9 ]\t10\n", "not an integer in 0..9"),
     (b"[MAX 2 9 ]\t-1\n", "not an integer in 0..9"),
     (b"[MAX 2 9 ]\tnine\n", "not an integer in 0..9"),
     (b"[MAX 2 \xff ]\t9\n", "not valid UTF-8"),
     (b"[MAX 2 x ]\t9\n", "unknown ListOps token 'x'"),
     (b"[MAX 2 9\t9\n", "unbalanced brackets"),
     (b"( )\t9\n", "empty Source")],
)
def test_bad_rows_name_file_and_line_or_are_counted(tmp_path, line, message):
    path = _write(tmp_path / "listops" / "basic_train.tsv", b"Source\tTarget\n" + GOOD + line
                  + GOOD)
    with pytest.raises(BadRowError, match=message) as info:
        lra_data.build_dataset("lra_listops", "train", tmp_path)
    assert info.value.line == 3 and str(path) in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        ds = lra_data.build_dataset("lra_listops", "train", tmp_path, skip_bad_rows=True)
    assert len(ds) == 2 and ds.skipped_rows == 1 and ds.stats["skipped_rows"] == 1


def test_missing_header_and_missing_files(tmp_path):
    _write(tmp_path / "listops" / "basic_train.tsv", GOOD)
    with pytest.raises(ValueError, match=r"line 1: expected the header"):
        lra_data.build_dataset("lra_listops", "train", tmp_path)
    with pytest.raises(MissingDataError) as info:
        lra_data.build_dataset("lra_listops", "test", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "listops" / "basic_test.tsv") in msg
    assert "lra_release/listops-1000/basic_test.tsv" in msg
    assert "lra_release.gz" in msg and "prepare lra_listops" in msg


def test_official_release_layout_and_archive(tmp_path):
    body = b"Source\tTarget\n" + GOOD
    release = tmp_path / "rel"
    for split in ("train", "val", "test"):
        _write(release / "lra_release" / "listops-1000" / f"basic_{split}.tsv", body)
    ds = lra_data.build_dataset("lra_listops", "val", release)
    assert len(ds) == 1 and ds[0]["label"] == 9
    archive = tmp_path / "lra_release.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "val", "test"):
            info = tarfile.TarInfo(f"lra_release/listops-1000/basic_{split}.tsv")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    out = lra_data.prepare("lra_listops", tmp_path / "out", source=archive)
    assert (out / "listops" / "basic_test.tsv").read_bytes() == body
    with pytest.raises(MissingDataError):
        lra_data.prepare("lra_listops", tmp_path / "out2", source=tmp_path / "nothing")
