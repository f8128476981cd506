"""LRA Image: CIFAR-10 python batches (the original pickle format), LRA's grayscale, splits,
sources (folder, .tar.gz, hf) and the errors for missing or foreign files."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import lra_data
from lra_data import cifar
from lra_data.errors import MissingDataError
from lra_data.task_image import val_size

pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


def _rgb(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def test_lra_grayscale_formula():
    px = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                   [10, 200, 30]], dtype=np.uint8)
    # trunc((0.2989 R + 0.5870 G + 0.1140 B) / 255 * 255.5), float32 (tf.image.rgb_to_grayscale)
    assert cifar.lra_grayscale(px).tolist() == [255, 0, 76, 149, 29, 124]
    rgb = np.random.default_rng(1).integers(0, 256, size=(5000, 3), dtype=np.uint8)
    exact = (rgb.astype(np.float64) / 255 @ np.array([0.2989, 0.587, 0.114])) * 255.5
    assert np.abs(cifar.lra_grayscale(rgb) - np.floor(exact)).max() <= 1  # float32 vs float64


def test_batches_are_python2_pickles_and_round_trip(tmp_path):
    rgb, labels = _rgb(12)
    folder = cifar.write_batches(tmp_path / "b", rgb[:10], labels[:10], rgb[10:], labels[10:])
    raw = (folder / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw  # byte strings as Python 2 wrote them (BINSTRING)
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # how the CIFAR-10 page says to read it
    assert set(batch) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (2, 3072)
    assert batch[b"batch_label"] == b"training batch 1 of 5"
    red = rgb[0][..., 0].reshape(-1)
    assert batch[b"data"][0, :1024].tolist() == red.tolist()  # R plane first, row-major
    pixels, got = cifar.read_batch(folder / "data_batch_1")
    assert got.tolist() == labels[:2].tolist()
    assert pixels.tolist() == cifar.lra_grayscale(rgb[:2].reshape(2, 1024, 3)).tolist()


def test_safe_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins).print"):
        cifar.read_batch(bad)
    bad.write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match="no data entry"):
        cifar.read_batch(bad)
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        cifar.read_batch(bad)


def test_splits_sizes_order_and_items(tmp_path):
    root = lra_data.write_fixture("lra_image", tmp_path / "d", rows_per_split=16, seed=3)
    train, val, test = (lra_data.build_dataset("lra_image", s, root) for s in lra_data.SPLITS)
    n_train = len(train) + len(val)
    assert len(val) == val_size(n_train) >= 2 and len(train) >= 16 and len(test) == 16
    assert val_size(50_000) == 5_000
    pixels, labels = zip(*(cifar.read_batch(root / "cifar10" / n) for n in cifar.TRAIN_FILES))
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    item = val[0]  # val = the last 10 % of the training files
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (1024,)
    assert item["input_ids"].tolist() == (pixels[len(train)].astype(int) + 1).tolist()
    assert item["label"] == labels[len(train)]
    assert train[0]["input_ids"].tolist() == (pixels[0].astype(int) + 1).tolist()
    assert train.num_truncated == 0 and train.stats["source_rows"] == n_train
    short = lra_data.build_dataset("lra_image", "test", root, max_length=100)
    assert short[0]["input_ids"].shape == (100,) and short.num_truncated == 16


def test_sources_folder_archive_hf_and_missing(tmp_path, monkeypatch):
    rgb, labels = _rgb(14, seed=2)
    src = cifar.write_batches(tmp_path / "cifar-10-batches-py", rgb[:10], labels[:10], rgb[10:],
                              labels[10:])
    with pytest.raises(MissingDataError) as err:
        lra_data.build_dataset("lra_image", "train", tmp_path / "empty")
    text = str(err.value)
    assert "cifar-10-batches-py" in text and "cifar-10-python.tar.gz" in text and "hf" in text
    # the extracted folder itself, found as D/cifar-10-batches-py
    assert len(lra_data.build_dataset("lra_image", "test", tmp_path)) == 4
    # --source FOLDER and --source ARCHIVE (.tar.gz) copy the six batches into D/cifar10
    lra_data.prepare("lra_image", tmp_path / "a", source=str(src))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    lra_data.prepare("lra_image", tmp_path / "b", source=str(archive))
    for out in ("a", "b"):
        for name in cifar.FILES:
            assert (tmp_path / out / "cifar10" / name).read_bytes() == (src / name).read_bytes()
    with pytest.raises(MissingDataError, match="How to obtain"):
        lra_data.prepare("lra_image", tmp_path / "c")  # no source, nothing there

    import datasets
    from PIL import Image

    def fake_load_dataset(name):
        assert name == "cifar10"

        class Split(list):
            column_names = ("img", "label")

            def __getitem__(self, key):
                if key == "label":
                    return [r["label"] for r in self]
                return list.__getitem__(self, key)

        rows = [{"img": Image.fromarray(im), "label": int(y)} for im, y in zip(rgb, labels)]
        return {"train": Split(rows[:10]), "test": Split(rows[10:])}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    lra_data.prepare("lra_image", tmp_path / "hf", source="hf")
    hf = lra_data.build_dataset("lra_image", "test", tmp_path / "hf")
    ref = lra_data.build_dataset("lra_image", "test", tmp_path / "a")
    assert [hf[i]["input_ids"].tolist() for i in range(4)] == \
        [ref[i]["input_ids"].tolist() for i in range(4)]

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingDataError, match="no network"):
        lra_data.prepare("lra_image", tmp_path / "hf2", source="hf")


def test_pickle_bytes_survive_a_stream(tmp_path):
    """The writer's pickle is byte-for-byte reproducible (fixtures are deterministic)."""
    rgb, labels = _rgb(3)
    a = cifar.py2_batch_pickle(rgb.transpose(0, 3, 1, 2).reshape(3, -1), labels, "x", ["a"] * 3)
    b = cifar.py2_batch_pickle(rgb.transpose(0, 3, 1, 2).reshape(3, -1), labels, "x", ["a"] * 3)
    assert a == b
    loaded = cifar.SafeUnpickler(io.BytesIO(a), encoding="bytes").load()
    assert loaded[b"filenames"] == [b"a"] * 3


# ------------------------------------------------------------------------------ training
def test_train_fdr_on_the_fixture(tmp_path, monkeypatch):
    """``python train.py task=lra_image debug=fdr`` (tiny model) on a fixture, in process."""
    from hydra import compose, initialize_config_dir
    from tiny import TINY_MODEL

    from spectra.training import train

    data = lra_data.write_fixture("lra_image", tmp_path / "data", rows_per_split=8, seed=0)
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    overrides = [f"paths.output_dir={tmp_path / 'run'}", "task=lra_image", "debug=fdr",
                 f"task.data_dir={data}", "task.search_dirs=[]", "task.batch_size=4",
                 "attention.num_features=16", *TINY_MODEL, "trainer.enable_model_summary=false",
                 "callbacks.progress_bar.refresh_rate=0"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    assert metrics["global_step"] == 1 and 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["data/train_size"] >= 8 and metrics["run_name"].startswith("lra_image.")
