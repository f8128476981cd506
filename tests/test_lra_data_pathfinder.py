"""LRA Pathfinder-32: the generator (geometry, determinism, workers, balance, no shortcut), the
reader of the official release layout (folder and archive), prepare/caching and the errors."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import lra_data
from lra_data import pathfinder_generate as G
from lra_data.errors import BadRowError, MissingDataError
from lra_data.pathfinder_official import split_indices, write_official_layout

P = G.PathfinderParams()


pytestmark = pytest.mark.usefixtures("isolated_lra")  # tests/conftest.py


@pytest.fixture(scope="module")
def scenes() -> list[G.Scene]:
    return G.generate_scenes(24, P, seed=7)


def test_params_defaults_are_lra_pathfinder32_and_validated():
    assert (P.contour_length, P.n_distractor_dashes, P.n_distractors) == (14, 4, 5)
    assert (P.paddle_length, P.paddle_margin, P.marker_radius, P.seed_distance) == (2, 1, 1.5, 7)
    assert (P.num_train, P.num_val, P.num_test) == (160_000, 20_000, 20_000)
    assert G.PathfinderParams(contour_length=6).n_distractor_dashes == 2
    for bad in ({"contour_length": 0}, {"num_train": -1}, {"continuity": 0},
                {"paddle_contrast": 1.5}, {"num_distractors": -2}):
        with pytest.raises(ValueError):
            G.PathfinderParams(**bad)


def _points(dash: np.ndarray, k: int = 9) -> np.ndarray:
    t = np.linspace(0, 1, k)[:, None]
    return dash[0] + t * (dash[1] - dash[0])


def _gaps(path_a: np.ndarray, path_b: np.ndarray) -> np.ndarray:
    """(n_a, n_b) smallest distance between points along each pair of dashes."""
    pa = np.stack([_points(d) for d in path_a])  # (n_a, 9, 2)
    pb = np.stack([_points(d) for d in path_b])
    diff = pa[:, None, :, None, :] - pb[None, :, None, :, :]
    return np.sqrt((diff ** 2).sum(-1)).min(axis=(2, 3))


def test_scene_geometry(scenes):
    clearance = 2 * P.paddle_margin - 0.1  # sampled points; the grid guarantees the margin
    for scene in scenes:
        a, b = scene.targets
        assert len(a) == len(b) == P.contour_length
        assert all(len(d) == P.n_distractor_dashes for d in scene.distractors)
        assert len(scene.distractors) <= P.n_distractors
        assert math.dist(a[0, 0], b[0, 0]) == pytest.approx(P.seed_distance)
        paths = [a, b, *scene.distractors]
        for path in paths:
            lengths = np.linalg.norm(path[:, 1] - path[:, 0], axis=1)
            assert np.allclose(lengths, P.paddle_length)
            assert (path >= P.padding - 1e-9).all() and (path <= 32 - P.padding + 1e-9).all()
            theta = np.arctan2(*(path[:, 1] - path[:, 0]).T[::-1])
            turn = (np.diff(theta) + np.pi) % (2 * np.pi) - np.pi
            assert (np.abs(turn) <= np.pi / 2 / P.continuity + 1e-9).all()
            pivots = path[:-1, 1] + P.paddle_margin * np.stack([np.cos(theta[:-1]),
                                                                 np.sin(theta[:-1])], 1)
            assert np.allclose(np.linalg.norm(path[1:, 0] - pivots, axis=1), P.paddle_margin)
            own = _gaps(path, path)  # a path never touches itself (but for neighbours)
            assert (own[np.triu_indices(len(path), 2)] >= clearance).all()
        for i, p1 in enumerate(paths):  # nor another path
            for p2 in paths[i + 1:]:
                assert _gaps(p1, p2).min() >= clearance
        k = scene.target_index
        ends = scene.targets[k if scene.label == 1 else 1 - k]
        assert np.allclose(scene.markers, [scene.targets[k][0, 0], ends[-1, 1]])


def test_rendering(scenes):
    for scene in scenes:
        img = scene.image
        assert img.shape == (32, 32) and img.dtype == np.uint8
        for x, y in scene.markers:  # the pixel under a circle's centre is fully lit
            assert img[int(y), int(x)] == 255
        far = np.ones((32, 32), bool)
        for path in (*scene.targets, *scene.distractors):
            for dash in path:
                for x, y in _points(dash, 5):
                    far[max(int(y) - 2, 0):int(y) + 3, max(int(x) - 2, 0):int(x) + 3] = False
        for x, y in scene.markers:
            far[max(int(y) - 3, 0):int(y) + 4, max(int(x) - 3, 0):int(x) + 4] = False
        assert (img[far] == 0).all()  # nothing drawn away from the dashes and circles
    dash_only = G.render(scenes[0].targets[0][:1], np.zeros((0, 2)), P)
    assert 0 < dash_only.max() <= round(255 * P.paddle_contrast)


def test_write_is_deterministic_balanced_and_worker_independent(tmp_path):
    params = G.PathfinderParams(contour_length=6, num_train=12, num_val=4, num_test=6)
    one = G.write_pathfinder(tmp_path / "w1", params, seed=3, workers=1, n_images=4)
    two = G.write_pathfinder(tmp_path / "w2", params, seed=3, workers=2, n_images=4)
    assert one["cache_key"] == two["cache_key"]
    for split in G.SPLITS:
        for kind in ("images", "labels"):
            a = np.load(G.split_file(tmp_path / "w1", split, kind))
            b = np.load(G.split_file(tmp_path / "w2", split, kind))
            assert np.array_equal(a, b), (split, kind)
        labels = np.load(G.split_file(tmp_path / "w1", split, "labels"))
        assert labels.sum() * 2 == len(labels) == params.split_sizes[split]
    other = G.write_pathfinder(tmp_path / "w3", params, seed=4, workers=1, n_images=4)
    assert other["cache_key"] != one["cache_key"]
    assert not np.array_equal(np.load(G.split_file(tmp_path / "w3", "train", "images")),
                              np.load(G.split_file(tmp_path / "w1", "train", "images")))
    assert not list((tmp_path / "w1").glob(".*partial"))


def test_prepare_generates_caches_and_loads(tmp_path, capsys):
    opts = {"contour_length": 6, "num_train": 8, "num_val": 4, "num_test": 4, "workers": 1}
    out = lra_data.prepare("lra_pathfinder", tmp_path, seed=1, **opts)
    meta = json.loads((out / "pathfinder" / "generator.json").read_text())
    assert meta["splits"]["train"]["labels"] == [4, 4] and meta["params"]["contour_length"] == 6
    first = (out / "pathfinder" / "train_images.npy").stat().st_mtime_ns
    lra_data.prepare("lra_pathfinder", tmp_path, seed=1, progress=True, **opts)
    assert "already generated" in capsys.readouterr().out
    assert (out / "pathfinder" / "train_images.npy").stat().st_mtime_ns == first
    ds = lra_data.build_dataset("lra_pathfinder", "train", out)
    images = np.load(out / "pathfinder" / "train_images.npy")
    item = ds[3]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (1024,)
    assert item["input_ids"].tolist() == (images[3].reshape(-1).astype(int) + 1).tolist()
    assert ds.stats["source_kind"] == "generated" and ds.stats["contour_length"] == 6
    lra_data.prepare("lra_pathfinder", tmp_path, seed=2, **opts)  # new key: regenerated
    assert not np.array_equal(np.load(out / "pathfinder" / "train_images.npy"), images)


def test_official_layout_folder_archive_and_bad_rows(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 32, 32), dtype=np.uint8)
    labels = np.arange(20) % 2
    root = tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    write_official_layout(root, images, labels, batch_size=8)
    (root / "imgs" / "0" / "sample_3.png").write_bytes(b"")  # the release has empty PNGs
    meta0 = (root / "metadata" / "0.npy").read_text().splitlines()
    assert meta0[1].split()[:4] == ["imgs/0", "sample_1.png", "1", "1"]
    kept = np.array([i for i in range(20) if i != 3])
    rows = split_indices(19, 0)
    assert [len(r) for r in rows.values()] == [15, 2, 2]
    for split in lra_data.SPLITS:
        ds = lra_data.build_dataset("lra_pathfinder", split, tmp_path)
        assert len(ds) == len(rows[split]) and ds.stats["empty_images"] == 1
        for j, i in enumerate(kept[rows[split]]):
            assert ds[j]["input_ids"].tolist() == (images[i].reshape(-1).astype(int) + 1).tolist()
            assert ds[j]["label"] == labels[i]
    # prepare --source FOLDER / ARCHIVE converts to our layout with the same split
    lra_data.prepare("lra_pathfinder", tmp_path / "a", source=str(tmp_path / "lra_release"))
    archive = tmp_path / "lra_release.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "lra_release", arcname="lra_release")
    lra_data.prepare("lra_pathfinder", tmp_path / "b", source=str(archive))
    official = lra_data.build_dataset("lra_pathfinder", "test", tmp_path)
    for out in ("a", "b"):
        ds = lra_data.build_dataset("lra_pathfinder", "test", tmp_path / out)
        assert ds.stats["source_kind"] == "official"
        assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == \
            [official[i]["input_ids"].tolist() for i in range(len(official))]
    # a malformed metadata line names the file and line, or is counted
    meta1 = root / "metadata" / "1.npy"
    lines = meta1.read_text().splitlines()
    lines[2] = "imgs/1 sample_2.png 2 7 1.0"
    meta1.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadRowError, match=r"1\.npy, line 3: label must be 0 or 1, got '7'"):
        lra_data.build_dataset("lra_pathfinder", "train", tmp_path, cache_dir=False)
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        ds = lra_data.build_dataset("lra_pathfinder", "train", tmp_path, skip_bad_rows=True,
                                    cache_dir=False)
    assert ds.skipped_rows == 1


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(MissingDataError) as err:
        lra_data.build_dataset("lra_pathfinder", "train", tmp_path)
    text = str(err.value)
    assert "pathfinder/{train,val,test}_{images,labels}.npy" in text
    assert "lra_release/pathfinder32/curv_contour_length_14" in text
    assert "python -m lra_data prepare lra_pathfinder" in text and "lra_release.gz" in text
    with pytest.raises(MissingDataError, match="curv_contour_length_14"):
        lra_data.prepare("lra_pathfinder", tmp_path / "x", source=str(tmp_path))
    with pytest.raises(ValueError, match="difficulty must be one of"):
        lra_data.build_dataset("lra_pathfinder", "train", tmp_path, difficulty="hard")


# ------------------------------------------------------------------------- no shortcut
def _logistic_accuracy(features: np.ndarray, labels: np.ndarray, n_train: int) -> float:
    """Held-out accuracy of an L2-regularized logistic regression (standardized features)."""
    x = torch.tensor(features, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mu) / sd
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x[:n_train] @ w + b,
                                                                    y[:n_train])
        loss = loss + 1e-2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (x[n_train:] @ w + b > 0).double()
    return float((pred == y[n_train:]).double().mean())


@pytest.mark.slow
def test_no_shortcut_pixels_statistics_or_marker_positions():
    """A real connectivity task: the label is not predictable from raw pixels (linear), from
    image statistics or from where the circles are. 640 images (LRA parameters): 400 to fit,
    240 held out; 3 standard errors of a held-out accuracy at chance are ±0.097. (On 3,000
    images, 2,000 / 1,000: raw pixels 48.1 %, statistics 49.4 %, marker distance 49.6 %.)"""
    scenes = G.generate_scenes(640, P, seed=11)
    labels = np.array([s.label for s in scenes])
    assert labels.sum() == 320
    pixels = np.stack([s.image.reshape(-1) for s in scenes]).astype(np.float64) / 255
    markers = np.stack([s.markers.reshape(-1) for s in scenes])
    dist = np.linalg.norm(markers[:, :2] - markers[:, 2:], axis=1)
    stats = np.column_stack([pixels.mean(1), (pixels > 0.1).sum(1), (pixels > 0.9).sum(1),
                             [len(s.distractors) for s in scenes], dist, markers])
    for name, feats in (("pixels", pixels), ("statistics", stats)):
        acc = _logistic_accuracy(feats, labels, 400)
        assert abs(acc - 0.5) < 0.097, (name, acc)
    for j in range(stats.shape[1]):  # no single statistic differs between the classes
        a, b = stats[labels == 0, j], stats[labels == 1, j]
        se = math.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-12
        assert abs(a.mean() - b.mean()) / se < 4, j


# ------------------------------------------------------------------------------ training
def test_train_fdr_on_the_fixture(tmp_path, monkeypatch):
    """``python train.py task=lra_pathfinder debug=fdr`` (tiny model) on a fixture, in process."""
    from hydra import compose, initialize_config_dir
    from tiny import TINY_MODEL

    from spectra.training import train

    data = lra_data.write_fixture("lra_pathfinder", tmp_path / "data", rows_per_split=8, seed=0)
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    overrides = [f"paths.output_dir={tmp_path / 'run'}", "task=lra_pathfinder", "debug=fdr",
                 f"task.data_dir={data}", "task.search_dirs=[]", "task.batch_size=4",
                 "attention.num_features=16", *TINY_MODEL, "trainer.enable_model_summary=false",
                 "callbacks.progress_bar.refresh_rate=0"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    assert metrics["global_step"] == 1 and 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["data/train_size"] >= 8 and metrics["run_name"].startswith("lra_pathfinder.")
