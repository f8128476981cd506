"""Retrieval: official AAN TSV reader and the IMDB substitute task (``imdb_retrieval``)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import lra_data
from lra_data import byte_codec
from lra_data.aan import write_aan_tsv
from lra_data.errors import BadRowError, MissingDataError
from lra_data.imdb_retrieval import build_pairs, split_point
from lra_data.task_text import write_jsonl_gz

ROWS = [(1, "A00-1", "B00-2", "Parsing with trees — über fast.", "A treebank parser 😀."),
        (0, "A00-3", "C01-4", "Speech recognition.", "Statistical machine translation."),
        (1, "D02-5", "E03-6", "日本語 text", "more text")]


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


def _aan(root: Path, rows=ROWS, sub="aan") -> Path:
    for name in ("train", "eval", "test"):
        write_aan_tsv(root / sub / f"new_aan_pairs.{name}.tsv", rows)
    return root


# ----------------------------------------------------------------------------------- AAN
@pytest.mark.parametrize("sub", ["aan", "lra_release/tsv_data"])
def test_aan_round_trip_official_layouts(tmp_path, sub):
    _aan(tmp_path, sub=sub)
    for split in lra_data.SPLITS:
        ds = lra_data.build_dataset("lra_retrieval", split, tmp_path)
        assert len(ds) == 3 and ds.pair
        for i, (label, _, _, t1, t2) in enumerate(ROWS):
            item = ds[i]
            assert item["label"] == label
            assert byte_codec.decode(item["input_ids"], "strict") == t1
            assert byte_codec.decode(item["input_ids2"], "strict") == t2
    assert ds.source.endswith("new_aan_pairs.test.tsv")
    val = lra_data.build_dataset("lra_retrieval", "val", tmp_path)
    assert val.source.endswith("new_aan_pairs.eval.tsv")


def test_aan_float_labels_and_truncation(tmp_path):
    path = tmp_path / "aan" / "new_aan_pairs.train.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("1.0\ta\tb\t" + "x" * 50 + "\tshort\n0\tc\td\tone\ttwo\n", encoding="utf-8")
    ds = lra_data.build_dataset("lra_retrieval", "train", tmp_path, max_length=10)
    assert [ds[i]["label"] for i in range(2)] == [1, 0]
    assert len(ds[0]["input_ids"]) == 10 and ds.truncated_per_side == [1, 0]
    assert ds.num_truncated == 1 and ds.lengths(0).tolist() == [50, 3]


@pytest.mark.parametrize(
    ("line", "message"),
    [(b"1\ta\tb\tonly four", "expected 5 tab-separated columns"),
     (b"1\ta\tb\tt1\tt2\textra", "expected 5 tab-separated columns"),
     (b"2\ta\tb\tt1\tt2", "label b?'2' out of range"),
     (b"yes\ta\tb\tt1\tt2", "out of range"),
     (b"1\ta\tb\tt\xff1\tt2", "not valid UTF-8")],
)
def test_aan_bad_rows(tmp_path, line, message):
    path = tmp_path / "aan" / "new_aan_pairs.test.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0\tx\ty\tfine\tfine\n" + line + b"\n")
    with pytest.raises(BadRowError, match=message) as info:
        lra_data.build_dataset("lra_retrieval", "test", tmp_path)
    assert info.value.line == 2 and f"{path}, line 2" in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        ds = lra_data.build_dataset("lra_retrieval", "test", tmp_path, skip_bad_rows=True)
    assert len(ds) == 1 and ds.skipped_rows == 1


def test_aan_missing_and_prepare_from_archive(tmp_path):
    with pytest.raises(MissingDataError) as info:
        lra_data.build_dataset("lra_retrieval", "val", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "aan" / "new_aan_pairs.eval.tsv") in msg
    assert "lra_release/tsv_data/new_aan_pairs.eval.tsv" in msg
    assert "lra_release.gz" in msg and "imdb_retrieval" in msg and "SUBSTITUTE" in msg
    with pytest.raises(MissingDataError):
        lra_data.prepare("lra_retrieval", tmp_path / "out")
    archive = tmp_path / "lra_release.gz"
    body = b"1\ta\tb\tx\ty\n"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("train", "eval", "test"):
            info = tarfile.TarInfo(f"lra_release/tsv_data/new_aan_pairs.{name}.tsv")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    out = lra_data.prepare("lra_retrieval", tmp_path / "out", source=archive)
    ds = lra_data.build_dataset("lra_retrieval", "train", out)
    assert len(ds) == 1 and (out / "aan" / "new_aan_pairs.eval.tsv").read_bytes() == body


# ---------------------------------------------------------------------------- substitute
def test_split_point_cases():
    text = b"First sentence here. Second sentence is there."
    a, b = split_point(text)
    assert (text[:a], text[b:]) == (b"First sentence here.", b"Second sentence is there.")
    text = b"Intro part<br /><br />Closing part"
    a, b = split_point(text)
    assert (text[:a], text[b:]) == (b"Intro part", b"Closing part")
    a, b = split_point(b"Ok. " + b"word " * 20)  # boundary too close to the start: use spaces
    assert a > 40
    text = "é" * 5
    a, b = split_point(text.encode())
    assert a == b and text.encode()[:a].decode() + text.encode()[b:].decode() == text


def _sentiment_reviews(n: int, offset: int = 0) -> list[tuple[str, int]]:
    words = ["plot", "café", "acting", "score", "naïve", "世界", "ending", "cast"]
    return [(f"Review {i} about the {words[i % 8]}. It is {'good' if i % 2 else 'bad'} and "
             f"number {i * 7}. The end of {i}.", i % 2) for i in range(offset, offset + n)]


def _imdb(root: Path, train, test) -> Path:
    write_jsonl_gz(root / "imdb" / "train.jsonl.gz", train)
    write_jsonl_gz(root / "imdb" / "test.jsonl.gz", test)
    return root


def test_substitute_is_deterministic_balanced_and_correct(tmp_path):
    train = _sentiment_reviews(200)
    test = _sentiment_reviews(50, offset=1000) + [("duplicate text.", 1)] * 3 + [train[0]]
    _imdb(tmp_path, train, test)
    spec = lra_data.TASKS["imdb_retrieval"]
    assert spec.pair and spec.substitute_for == "lra_retrieval" and "SUBSTITUTE" in \
        spec.description
    texts = {t for t, _ in train + test}
    sentiment = dict(train + test)
    for split in lra_data.SPLITS:
        ds = lra_data.build_dataset("imdb_retrieval", split, tmp_path, cache_dir=False)
        again = lra_data.build_dataset("imdb_retrieval", split, tmp_path, cache_dir=False)
        items = [(ds[i]["input_ids"].tolist(), ds[i]["input_ids2"].tolist(), ds[i]["label"])
                 for i in range(len(ds))]
        assert items == [(again[i]["input_ids"].tolist(), again[i]["input_ids2"].tolist(),
                          again[i]["label"]) for i in range(len(again))]
        counts = Counter(label for _, _, label in items)
        assert abs(counts[0] - counts[1]) <= 2, counts
        firsts = [byte_codec.decode(a, "strict") for a, _, _ in items]
        seconds = [byte_codec.decode(b, "strict") for _, b, _ in items]
        assert len(set(firsts)) == len(firsts) and len(set(seconds)) == len(seconds)
        origin_of_first = {}
        for text in texts:  # which review each passage came from
            cut_a, cut_b = split_point(text.encode())
            origin_of_first[text.encode()[:cut_a].decode()] = text
        origin_of_second = {}
        for text in texts:
            cut_a, cut_b = split_point(text.encode())
            origin_of_second[text.encode()[cut_b:].decode()] = text
        for f, s, (_, _, label) in zip(firsts, seconds, items):
            ra, rb = origin_of_first[f], origin_of_second[s]
            assert (ra == rb) == (label == 1)
            assert sentiment[ra] == sentiment[rb]  # negatives share the sentiment
        if split == "test":
            assert ds.info["duplicates_dropped"] == 2
            assert ds.info["test_reviews_also_in_train_excluded"] == 1
            assert all(origin_of_first[f] != train[0][0] for f in firsts)
            assert len(ds) == 51
    other = lra_data.build_dataset("imdb_retrieval", "train", tmp_path, pair_seed=1)
    first = lra_data.build_dataset("imdb_retrieval", "train", tmp_path)
    assert [other[i]["label"] for i in range(20)] != [first[i]["label"] for i in range(20)] or \
        [other[i]["input_ids"].tolist() for i in range(5)] != \
        [first[i]["input_ids"].tolist() for i in range(5)]


@pytest.mark.parametrize("n_per_class", [1, 2, 3, 4, 5, 50])
def test_build_pairs_small_classes(n_per_class):
    texts = [f"Text number {i}. Has two halves {i}.".encode() for i in range(2 * n_per_class)]
    labels = np.array([i % 2 for i in range(2 * n_per_class)])
    digests = [t for t in texts]
    pairs = build_pairs(texts, labels, digests, seed=0)
    n = len(texts)
    assert pairs.labels.size == n
    assert sorted(pairs.review_a.tolist()) == list(range(n))
    assert sorted(pairs.review_b.tolist()) == list(range(n))  # each second passage once
    assert ((pairs.review_a == pairs.review_b) == (pairs.labels == 1)).all()
    assert abs(int(pairs.labels.sum()) * 2 - n) <= 2


def test_substitute_counts_skipped_source_rows(tmp_path):
    _imdb(tmp_path, _sentiment_reviews(40), _sentiment_reviews(10, offset=500))
    path = tmp_path / "imdb" / "train.jsonl.gz"
    with gzip.open(path, "ab") as f:
        f.write(b'{"text": "bad label", "label": 7}\n')
    with pytest.raises(BadRowError, match="line 41"):
        lra_data.build_dataset("imdb_retrieval", "train", tmp_path)
    for _ in range(2):  # computed, then from the cache: warned and counted both times
        with pytest.warns(UserWarning, match="skipped 1 malformed row"):
            ds = lra_data.build_dataset("imdb_retrieval", "train", tmp_path,
                                        skip_bad_rows=True)
        assert ds.skipped_rows == 1
