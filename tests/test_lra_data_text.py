"""Byte-level IMDB text task: codec, source layouts, held-out val split, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import lra_data
from lra_data import byte_codec
from lra_data.errors import BadRowError, LRADataError, MissingDataError
from lra_data.task_text import SHARED_IMDB, write_jsonl_gz

TEXTS = ["Café au lait — très bien! 😀", "日本の映画。Good.", "plain ascii review", "naïve Zoë"]


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


def _reviews(n: int, offset: int = 0) -> list[tuple[str, int]]:
    return [(f"{TEXTS[i % len(TEXTS)]} review {i + offset}", i % 2) for i in range(n)]


def _imdb(root: Path, train, test) -> Path:
    write_jsonl_gz(root / "imdb" / "train.jsonl.gz", train)
    write_jsonl_gz(root / "imdb" / "test.jsonl.gz", test)
    return root


def test_byte_codec_non_ascii_round_trip():
    text = "Zoë 😀 日本"
    ids = byte_codec.encode(text)
    assert ids.tolist() == [b + 1 for b in text.encode("utf-8")]
    assert ids.dtype.is_floating_point is False and int(ids.min()) >= 1
    assert byte_codec.decode(ids) == text
    assert byte_codec.decode([*ids.tolist(), 0, 0]) == text  # padding skipped
    cut = byte_codec.encode(text, max_length=6)  # "Zoë " is 5 bytes, then half an emoji byte
    assert len(cut) == 6
    assert byte_codec.decode(cut) == "Zoë \ufffd"
    with pytest.raises(UnicodeDecodeError):
        byte_codec.decode(cut, errors="strict")
    with pytest.raises(ValueError, match="byte-level ids must be in"):
        byte_codec.decode([257])


def test_jsonl_layout_splits_and_encoding(tmp_path):
    train, test = _reviews(60), _reviews(10, offset=100)
    _imdb(tmp_path, train, test)
    ds = {s: lra_data.build_dataset("lra_text", s, tmp_path) for s in lra_data.SPLITS}
    assert len(ds["test"]) == 10 and len(ds["train"]) + len(ds["val"]) == 60
    assert ds["val"].stats["label_counts"] == [3, 3]  # 10 % of 30 per class
    decoded = {s: [byte_codec.decode(ds[s][i]["input_ids"], "strict") for i in range(len(ds[s]))]
               for s in ds}
    assert set(decoded["train"]).isdisjoint(decoded["val"])
    assert sorted(decoded["train"] + decoded["val"]) == sorted(t for t, _ in train)
    assert decoded["test"] == [t for t, _ in test]
    label_of = dict(train + test)
    for s in ds:
        for i in range(len(ds[s])):
            assert ds[s][i]["label"] == label_of[decoded[s][i]]
    assert ds["test"].stats["source_rows"] == 10 and ds["val"].stats["source_rows"] == 60
    # Seeded: same seed same val, other seed other val; bad fraction rejected.
    again = lra_data.build_dataset("lra_text", "val", tmp_path)
    assert [again[i]["input_ids"].tolist() for i in range(len(again))] == \
        [ds["val"][i]["input_ids"].tolist() for i in range(len(ds["val"]))]
    other = lra_data.build_dataset("lra_text", "val", tmp_path, split_seed=1)
    assert {byte_codec.decode(other[i]["input_ids"]) for i in range(len(other))} != \
        set(decoded["val"])
    with pytest.raises(ValueError, match="val_fraction"):
        lra_data.build_dataset("lra_text", "val", tmp_path, val_fraction=1.5)


def test_duplicate_texts_never_straddle_train_and_val(tmp_path):
    train = _reviews(40) + [("the same text", 1)] * 6 + [("another dup", 0)] * 4
    _imdb(tmp_path, train, _reviews(4))
    for seed in range(6):
        tr = lra_data.build_dataset("lra_text", "train", tmp_path, split_seed=seed)
        va = lra_data.build_dataset("lra_text", "val", tmp_path, split_seed=seed)
        a = {byte_codec.decode(tr[i]["input_ids"]) for i in range(len(tr))}
        b = {byte_codec.decode(va[i]["input_ids"]) for i in range(len(va))}
        assert a.isdisjoint(b) and len(tr) + len(va) == 50


def test_truncation_is_counted(tmp_path):
    _imdb(tmp_path, _reviews(20), [("x" * 50, 0), ("é" * 30, 1), ("short", 0)])
    ds = lra_data.build_dataset("lra_text", "test", tmp_path, max_length=40)
    assert ds.num_truncated == 2 and ds.stats["truncated"] == [2]
    assert [len(ds[i]["input_ids"]) for i in range(3)] == [40, 40, 5]
    assert ds.lengths().tolist() == [50, 60, 5]


def test_aclimdb_layout_and_data_dir_sources(tmp_path, monkeypatch):
    acl = tmp_path / "dl" / "aclImdb"
    for split in ("train", "test"):
        for name, label in (("neg", 0), ("pos", 1)):
            d = acl / split / name
            d.mkdir(parents=True)
            for i in range(6):
                (d / f"{i}_{3 if label == 0 else 8}.txt").write_text(
                    f"{split} {name} {i} — ok", encoding="utf-8")
    ds = lra_data.build_dataset("lra_text", "test", tmp_path / "dl")
    assert len(ds) == 12 and ds.stats["label_counts"] == [6, 6]
    assert byte_codec.decode(ds[0]["input_ids"]) == "test neg 0 — ok" and ds[0]["label"] == 0
    # prepare converts aclImdb into our jsonl layout; LRA_DATA_DIR is the default data_dir.
    out = lra_data.prepare("lra_text", tmp_path / "prepared", source=tmp_path / "dl")
    monkeypatch.setenv("LRA_DATA_DIR", str(out))
    again = lra_data.build_dataset("lra_text", "test")
    assert [again[i]["input_ids"].tolist() for i in range(12)] == \
        [ds[i]["input_ids"].tolist() for i in range(12)]
    # data_dir may also be the imdb directory itself; prepare can link instead of copying.
    assert len(lra_data.build_dataset("lra_text", "test", out / "imdb")) == 12
    linked = lra_data.prepare("lra_text", tmp_path / "linked", source=out / "imdb", link=True)
    assert (linked / "imdb" / "train.jsonl.gz").is_symlink()


def _gz_lines(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return path


GOOD = json.dumps({"text": "fine", "label": 1}).encode()


@pytest.mark.parametrize(
    ("line", "message"),
    [(b"not json", "not a JSON object"),
     (json.dumps({"text": "x"}).encode(), "keys 'text' and 'label'"),
     (json.dumps({"text": "x", "label": 2}).encode(), "label 2 out of range"),
     (json.dumps({"text": "x", "label": "1"}).encode(), "label '1' out of range"),
     (json.dumps({"text": "x", "label": True}).encode(), "label True out of range"),
     (json.dumps({"text": 5, "label": 1}).encode(), "'text' must be a string"),
     (b'{"text": "caf\xe9", "label": 0}', "not valid UTF-8"),
     (b'{"text": "\\ud800", "label": 0}', "not valid Unicode")],
)
def test_bad_rows_name_file_and_line_or_are_counted(tmp_path, line, message):
    path = _gz_lines(tmp_path / "imdb" / "test.jsonl.gz", [GOOD, GOOD, line, GOOD])
    _gz_lines(tmp_path / "imdb" / "train.jsonl.gz", [GOOD])
    with pytest.raises(BadRowError, match=message) as info:
        lra_data.build_dataset("lra_text", "test", tmp_path)
    assert info.value.line == 3 and info.value.path == str(path)
    assert f"{path}, line 3" in str(info.value)
    assert "task.skip_bad_rows=true" in str(info.value)  # the train.py override, by name
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        ds = lra_data.build_dataset("lra_text", "test", tmp_path, skip_bad_rows=True)
    assert len(ds) == 3 and ds.skipped_rows == 1


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gzip_is_one_error_naming_the_file_and_the_fix(tmp_path, damage):
    _imdb(tmp_path, _reviews(400), _reviews(10))
    path = tmp_path / "imdb" / "train.jsonl.gz"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:20] + bytes(b ^ 0x5A for b in data[20:200]) + data[200:])
    with pytest.raises(LRADataError) as info:
        lra_data.build_dataset("lra_text", "train", tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "truncated or corrupt" in msg
    assert "python -m lra_data prepare lra_text" in msg and "re-download" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained trace


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError) as info:
        lra_data.build_dataset("lra_text", "train", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "imdb" / "{train,test}.jsonl.gz") in msg
    assert "aclImdb" in msg and "shared/data/imdb" in msg and "--source hf" in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(MissingDataError):
        lra_data.prepare("lra_text", tmp_path / "out", source=tmp_path / "nowhere")


@pytest.mark.skipif(not (SHARED_IMDB / "train.jsonl.gz").is_file(),
                    reason="the shared IMDB copy is not available on this machine")
def test_shared_imdb_reviews_counts_and_balance():
    test = lra_data.build_dataset("lra_text", "test", SHARED_IMDB.parent)
    assert len(test) == 25_000 and test.stats["label_counts"] == [12_500, 12_500]
    train = lra_data.build_dataset("lra_text", "train", SHARED_IMDB.parent)
    val = lra_data.build_dataset("lra_text", "val", SHARED_IMDB.parent)
    assert train.stats["source_rows"] == 25_000 and len(train) + len(val) == 25_000
    assert abs(val.stats["label_counts"][0] - val.stats["label_counts"][1]) <= 10
    lengths = np.concatenate([train.lengths(), val.lengths()])
    assert lengths.max() > 4000 and train.num_truncated > 0


def test_prepare_default_source_and_hf_path(tmp_path, monkeypatch):
    import datasets

    import lra_data.task_text as task_text

    src = _imdb(tmp_path / "src", _reviews(6), _reviews(4, offset=50))
    monkeypatch.setenv("LRA_IMDB_SOURCE", str(src / "imdb"))
    out = lra_data.prepare("lra_text", tmp_path / "a")  # no source: $LRA_IMDB_SOURCE first
    assert (out / "imdb" / "test.jsonl.gz").read_bytes() == \
        (src / "imdb" / "test.jsonl.gz").read_bytes()
    monkeypatch.delenv("LRA_IMDB_SOURCE")
    monkeypatch.setattr(task_text, "SHARED_IMDB", tmp_path / "no-shared-copy")
    with pytest.raises(MissingDataError, match="no-shared-copy"):
        lra_data.prepare("lra_text", tmp_path / "b")

    def fake_load_dataset(name):
        assert name == "imdb"
        return {"train": [{"text": "Très bon 😀", "label": 1}, {"text": "bad", "label": 0}],
                "test": [{"text": "ok", "label": 1}]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = lra_data.prepare("imdb_retrieval", tmp_path / "hf", source="hf")
    ds = lra_data.build_dataset("lra_text", "test", out)
    assert len(ds) == 1 and byte_codec.decode(ds[0]["input_ids"]) == "ok"

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingDataError, match="no network"):
        lra_data.prepare("lra_text", tmp_path / "hf2", source="hf")
