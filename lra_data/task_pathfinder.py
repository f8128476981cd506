"""``lra_pathfinder``: LRA Pathfinder-32 (are the two circles connected by a dashed path?).

Sequences are the 1,024 pixels of a 32 × 32 grayscale image in row-major order, id = pixel
value + 1 (ids 1–256; 0 = pad, which never occurs), label 1 = connected.

Where the data is looked for under a data directory ``D`` (first hit wins):

1. ``D/pathfinder/{train,val,test}_{images,labels}.npy`` -- our layout, written by ``prepare``
   (generated, or converted from the official release) with ``D/pathfinder/generator.json``;
2. the official release ``D/lra_release/pathfinder32/curv_contour_length_14/{imgs,metadata}``
   (also ``D/pathfinder32/…``, ``D/curv_contour_length_14/`` and ``D`` itself), split 80/10/10
   by a seeded permutation (``split_seed``), encoded once and cached.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.compute as pc
from datasets import Value
from tqdm.auto import tqdm

from .arrow import apply_policy, encoded
from .dataset import LRADataset, Ragged, ragged_from_rows
from .errors import MissingDataError
from .pathfinder_generate import PathfinderParams, split_file, write_pathfinder
from .pathfinder_official import (
    DEFAULT_DIFFICULTY,
    DIFFICULTIES,
    official_rows,
    official_subdirs,
    open_source,
    read_official,
    split_indices,
)
from .registry import SPLITS, TaskData, TaskSpec, register

READER_VERSION = 1
OUR_DIR = "pathfinder"
HOW_TO_OBTAIN = (
    "generate it with `python -m lra_data prepare lra_pathfinder --out DATA_DIR` (our seeded "
    "implementation of the Linsley et al. 2018 generator with LRA's Pathfinder-32 parameters; "
    "160k/20k/20k images, see lra_data/README.md for the time it takes; `--option "
    "num_train=…` for fewer), or download the official LRA release archive lra_release.gz "
    "(linked from https://github.com/google-research/long-range-arena; "
    "https://storage.googleapis.com/long-range-arena/lra_release.gz) and extract it into "
    "DATA_DIR (giving DATA_DIR/lra_release/pathfinder32/curv_contour_length_14/metadata/), or "
    "run `python -m lra_data prepare lra_pathfinder --source lra_release.gz --out DATA_DIR`."
)
_PARAM_NAMES = tuple(f.name for f in fields(PathfinderParams))
FEATURES = {"input_ids": Value("binary"), "label": Value("int64")}


def _our_files(root: Path) -> dict[str, tuple[Path, Path]]:
    return {s: (split_file(root, s, "images"), split_file(root, s, "labels")) for s in SPLITS}


def _has_our_layout(root: Path) -> bool:
    return all(a.is_file() and b.is_file() for a, b in _our_files(root).values())


def _check_difficulty(difficulty: Any) -> str:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got "
                         f"{difficulty!r}")
    return str(difficulty)


class PathfinderTask(TaskData):
    spec = TaskSpec(
        name="lra_pathfinder", num_classes=2, vocab_size=257, max_length=1024, pair=False,
        description=(
            "LRA Pathfinder-32 (Linsley et al. 2018): are the two circles of a 32x32 image "
            "joined by a dashed path? 1024 pixel tokens (id = grey level + 1), label 1 = "
            "connected; generated (seeded) or the official curv_contour_length_14 release."
        ),
        image_shape=(32, 32),
    )
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None, "split_seed": 0,
                                              "difficulty": DEFAULT_DIFFICULTY}
    prepare_options: ClassVar[dict[str, Any]] = {
        **{f.name: f.default for f in fields(PathfinderParams)},
        "workers": None, "force": False, "source": None, "split_seed": 0,
        "difficulty": DEFAULT_DIFFICULTY,
    }

    # -- loading -------------------------------------------------------------------------------
    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        difficulty = _check_difficulty(options["difficulty"])
        ours = data_dir / OUR_DIR
        if _has_our_layout(ours):
            image_path, label_path = _our_files(ours)[split]
            images = np.load(image_path, mmap_mode="r")
            labels = np.load(label_path)
            info = _generator_info(ours)
            return self._dataset(split, images, labels, max_length, 0, str(image_path), info)
        looked = [str(ours / "{train,val,test}_{images,labels}.npy")]
        looked += [str(data_dir / sub / "{imgs,metadata}") for sub in official_subdirs(difficulty)]
        found = open_source(data_dir, difficulty) if data_dir.is_dir() else None
        if found is not None:
            files, where = found
            images, labels, skipped, empty = self._official(files, Path(where), skip_bad_rows,
                                                            options["cache_dir"])
            rows = split_indices(len(labels), int(options["split_seed"]))[split]
            info = {"source_kind": "official", "difficulty": difficulty,
                    "split_seed": int(options["split_seed"]), "empty_images": empty,
                    "source_rows": len(labels)}
            return LRADataset(self.spec.name, split, [images.take(rows)],
                              labels[rows].astype(np.int64), max_length, num_classes=2,
                              skipped_rows=skipped, source=where, info=info)
        raise MissingDataError(self.spec.name, looked, HOW_TO_OBTAIN)

    def _official(self, files: Any, where: Path, skip_bad_rows: bool,
                  cache_dir: Any) -> tuple[Ragged, np.ndarray, int, int]:
        """``(images, labels, skipped, empty)`` of the release (an Arrow dataset, cached)."""
        ds = encoded("pathfinder-official", READER_VERSION, [where / "metadata"], {},
                     official_rows, FEATURES, cache_dir, source=files)
        good, skipped = apply_policy(ds, str(where), skip_bad_rows)
        pixels = ds.data.column("input_ids")
        lengths = pc.binary_length(pixels).to_numpy(zero_copy_only=False)[good]
        rows = good[lengths > 0]
        return (Ragged(pixels, rows, shift=1), ds.data.column("label").to_numpy()[rows],
                skipped, int((lengths == 0).sum()))

    def _dataset(self, split: str, images: np.ndarray, labels: np.ndarray, max_length: int,
                 skipped: int, source: str, info: dict[str, Any]) -> LRADataset:
        if images.ndim != 3 or images.shape[1:] != self.spec.image_shape:
            raise ValueError(f"{source}: expected images of shape (N, 32, 32), got "
                             f"{images.shape}")
        return LRADataset(self.spec.name, split, [ragged_from_rows(images, shift=1)],
                          np.asarray(labels, dtype=np.int64), max_length, num_classes=2,
                          skipped_rows=skipped, source=source, info=info)

    # -- preparing -----------------------------------------------------------------------------
    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        target = out_dir / OUR_DIR
        if options["source"] is not None:
            self._convert_official(Path(options["source"]), target, options, progress)
            return out_dir
        params = PathfinderParams(**{k: options[k] for k in _PARAM_NAMES})
        meta_path = target / "generator.json"
        if not options["force"] and _cache_hit(meta_path, params.cache_key(seed)):
            if progress:
                print(f"{target}: already generated with these parameters "
                      f"(key {params.cache_key(seed)}); use --force to regenerate")
            return out_dir
        meta_path.unlink(missing_ok=True)
        with tqdm(total=params.total, unit="img", desc="Pathfinder", disable=not progress,
                  smoothing=0.05) as bar:
            summary = write_pathfinder(target, params, seed, workers=options["workers"],
                                       progress=bar.update)
        meta_path.write_text(json.dumps(summary, indent=2) + "\n")
        return out_dir

    def _convert_official(self, source: Path, target: Path, options: dict[str, Any],
                          progress: bool) -> None:
        difficulty = _check_difficulty(options["difficulty"])
        found = open_source(source, difficulty)
        if found is None:
            looked = ([str(source / sub / "{imgs,metadata}") for sub in
                       official_subdirs(difficulty)] if source.is_dir() else
                      [f"{source} (archive members */pathfinder32/{difficulty}/metadata/*.npy)"])
            raise MissingDataError(self.spec.name, looked, HOW_TO_OBTAIN)
        files, where = found
        if progress:
            print(f"reading the official release at {where} …")
        images, labels, empty = read_official(files)
        split_seed = int(options["split_seed"])
        target.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {
            "source": f"official LRA release ({where})", "difficulty": difficulty,
            "split_seed": split_seed, "empty_images_skipped": empty, "splits": {},
            "cache_key": f"official:{difficulty}:{split_seed}"}
        for split, rows in tqdm(split_indices(len(labels), split_seed).items(), desc="write",
                                disable=not progress):
            image_path, label_path = _our_files(target)[split]
            np.save(image_path, images[rows])
            np.save(label_path, labels[rows])
            summary["splits"][split] = {"rows": int(rows.size),
                                        "labels": np.bincount(labels[rows], minlength=2).tolist(),
                                        "bytes": image_path.stat().st_size}
        (target / "generator.json").write_text(json.dumps(summary, indent=2) + "\n")

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        params = PathfinderParams(num_train=rows_per_split, num_val=rows_per_split,
                                  num_test=rows_per_split)
        self.prepare(data_dir, seed, False, **{**self.prepare_options,
                                                **asdict(params), "workers": 1})
        return data_dir


def _generator_info(root: Path) -> dict[str, Any]:
    try:
        meta = json.loads((root / "generator.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {"source_kind": "unknown (no generator.json)"}
    kind = "official" if str(meta.get("source", "")).startswith("official") else "generated"
    out: dict[str, Any] = {"source_kind": kind}
    if kind == "generated":
        out["contour_length"] = meta.get("params", {}).get("contour_length")
        out["generator_seed"] = meta.get("seed")
    else:
        out["split_seed"] = meta.get("split_seed")
    return out


def _cache_hit(meta_path: Path, key: str) -> bool:
    """True when ``generator.json`` records ``key`` and the files have the recorded sizes."""
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    if meta.get("cache_key") != key:
        return False
    for split, info in meta.get("splits", {}).items():
        path = split_file(meta_path.parent, split, "images")
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return False
    return True


register(PathfinderTask())
