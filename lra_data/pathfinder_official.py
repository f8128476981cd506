"""The official LRA Pathfinder release: ``pathfinder32/<difficulty>/{imgs,metadata}``.

Layout (``lra_release.gz`` → ``lra_release/pathfinder32/curv_contour_length_14/``, as written by
the Pathfinder generator of Linsley et al. and read by LRA's ``lra_benchmarks/data/
pathfinder.py``): ``metadata/<batch>.npy`` are *text* files (despite the suffix), one image per
line, space-separated: ``imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour length>
<distractor length> <paddle length> <paddle thickness> <paddle margin> <#contrasts>``; field 0
and 1 locate the PNG, field 3 is the label (1 = connected). ``imgs/<batch>/sample_<i>.png`` are
32 × 32 8-bit grayscale PNGs. Some PNGs of the release are empty (0 bytes); LRA and the
Skyformer/Spectraformer preprocessing skip them, and so do we (counted in ``empty_images``).

Metadata files are read in numeric order (``0.npy``, ``1.npy``, …), lines in file order; the
train/val/test split is a seeded permutation cut 80 % / 10 % / 10 % (the cut of the Skyformer
code, which shuffled without a seed; LRA slices a TFDS build). So the split membership is
ours, its sizes are LRA's.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RowPolicy

DIFFICULTIES = ("curv_baseline", "curv_contour_length_9", "curv_contour_length_14")
DEFAULT_DIFFICULTY = "curv_contour_length_14"
IMAGE_SIZE = 32


def official_subdirs(difficulty: str) -> tuple[str, ...]:
    """Where the release's folder may sit under a data directory, in lookup order."""
    return (f"lra_release/pathfinder32/{difficulty}", f"pathfinder32/{difficulty}", difficulty,
            ".")


def is_official_root(path: Path) -> bool:
    return (path / "metadata").is_dir() and (path / "imgs").is_dir()


def _batch_key(name: str) -> tuple[int, str]:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return (int(stem), stem) if stem.isdigit() else (1 << 62, stem)


class _Files:
    """The metadata texts and PNG bytes of one difficulty, from a folder or a tar archive."""

    def metadata(self) -> Iterator[tuple[str, str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def image(self, relpath: str) -> bytes | None:  # pragma: no cover - interface
        raise NotImplementedError


class _DirFiles(_Files):
    def __init__(self, root: Path) -> None:
        self.root = root

    def metadata(self) -> Iterator[tuple[str, str]]:
        files = sorted((p for p in (self.root / "metadata").iterdir() if p.suffix == ".npy"),
                       key=lambda p: _batch_key(p.name))
        for path in files:
            yield str(path), path.read_bytes().decode("utf-8")

    def image(self, relpath: str) -> bytes | None:
        path = self.root / relpath
        return path.read_bytes() if path.is_file() else None


class _TarFiles(_Files):
    """Members ``*/pathfinder32/<difficulty>/{metadata,imgs}/…`` of a release archive (read in
    one streaming pass; the PNGs of one difficulty take ~60 MB)."""

    def __init__(self, archive: Path, difficulty: str) -> None:
        self.archive = archive
        self.meta: dict[str, str] = {}
        self.images: dict[str, bytes] = {}
        marker = f"pathfinder32/{difficulty}/"
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isfile() or marker not in member.name:
                    continue
                rel = member.name.split(marker, 1)[1]
                fobj = tar.extractfile(member)
                if fobj is None:
                    continue
                data = fobj.read()
                if rel.startswith("metadata/") and rel.endswith(".npy"):
                    self.meta[rel] = data.decode("utf-8")
                elif rel.startswith("imgs/"):
                    self.images[rel] = data

    def metadata(self) -> Iterator[tuple[str, str]]:
        for rel in sorted(self.meta, key=_batch_key):
            yield f"{self.archive}:{rel}", self.meta[rel]

    def image(self, relpath: str) -> bytes | None:
        return self.images.get(relpath)


def open_source(source: Path, difficulty: str) -> tuple[_Files, str] | None:
    """The release files under ``source`` (a folder searched at :func:`official_subdirs`, or a
    tar archive), with a description; None when not found there."""
    if source.is_dir():
        for sub in official_subdirs(difficulty):
            root = source / sub
            if is_official_root(root):
                return _DirFiles(root), str(root)
        return None
    if source.is_file():
        try:
            files = _TarFiles(source, difficulty)
        except tarfile.TarError as exc:
            raise ValueError(f"{source}: not a readable tar archive ({exc}); expected the LRA "
                             "release archive lra_release.gz or an extracted folder") from exc
        if files.meta:
            return files, f"{source} (archive)"
    return None


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as a 2-D ``uint8`` array (colour images are converted with PIL's ``L`` mode)."""
    from PIL import Image  # pillow: a dependency of matplotlib

    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            img = img.convert("L")
        return np.asarray(img, dtype=np.uint8)


def official_rows(source: _Files) -> Iterator[dict[str, Any]]:
    """Rows ``{"line", "input_ids" (1,024 grey levels), "label", "problem", "path"}``, one per
    metadata line; an empty PNG of the release is a row without ids (skipped by the reader and
    counted in ``empty_images``), a malformed line, a missing or undecodable PNG or a label
    other than 0/1 a ``problem`` naming the metadata file and line."""
    for name, text in source.metadata():
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                pixels, label, problem = _official_image(source, line.split())
                yield {"line": line_no, "input_ids": pixels, "label": label,
                       "problem": problem, "path": name}


def _official_image(files: _Files, parts: list[str]) -> tuple[bytes, int, str | None]:
    if len(parts) < 4:
        return b"", -1, (f"expected at least 4 space-separated fields (folder, file, index, "
                         f"label), got {len(parts)}")
    if parts[3] not in ("0", "1"):
        return b"", -1, f"label must be 0 or 1, got {parts[3]!r}"
    relpath = f"{parts[0]}/{parts[1]}"
    data = files.image(relpath)
    if data is None:
        return b"", -1, f"image {relpath} not found"
    if len(data) == 0:
        return b"", int(parts[3]), None
    try:
        img = decode_png(data)
    except Exception as exc:  # PIL raises several types for a bad file
        return b"", -1, f"image {relpath} is not a readable PNG ({exc})"
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return b"", -1, (f"image {relpath} is {img.shape[1]}×{img.shape[0]}, expected "
                         f"{IMAGE_SIZE}×{IMAGE_SIZE}")
    return img.tobytes(), int(parts[3]), None


def read_official(files: _Files) -> tuple[np.ndarray, np.ndarray, int]:
    """All images (N, 32, 32) ``uint8``, labels (N,) ``int8`` and the number of empty PNGs
    skipped; the first bad row raises :class:`~lra_data.errors.BadRowError`."""
    images: list[bytes] = []
    labels: list[int] = []
    empty = 0
    for row in official_rows(files):
        if row["problem"] is not None:
            RowPolicy().bad(row["path"], row["line"], row["problem"])
        if not row["input_ids"]:
            empty += 1
            continue
        images.append(row["input_ids"])
        labels.append(row["label"])
    out = np.frombuffer(b"".join(images), dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return out, np.asarray(labels, dtype=np.int8), empty


def split_indices(n: int, split_seed: int) -> dict[str, np.ndarray]:
    """Seeded permutation of ``range(n)`` cut at 80 % and 90 % (train / val / test)."""
    order = np.random.default_rng(split_seed).permutation(n)
    a, b = int(n * 0.8), int(n * 0.9)
    return {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}


def write_official_layout(root: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *,
                          batch_size: int = 1000, params: tuple[str, ...] = (
                              "1.0", "14", "4", "2", "0.5", "1", "1")) -> Path:
    """Write ``images``/``labels`` in the release layout (``imgs/<batch>/sample_<i>.png`` and
    text ``metadata/<batch>.npy``) under ``root``: test fixtures of the official format."""
    from PIL import Image

    root = Path(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for start in range(0, len(labels), batch_size):
        batch = start // batch_size
        folder = root / "imgs" / str(batch)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(start, min(start + batch_size, len(labels))):
            name = f"sample_{i - start}.png"
            Image.fromarray(np.asarray(images[i], dtype=np.uint8)).save(folder / name)
            lines.append(" ".join([f"imgs/{batch}", name, str(i - start), str(int(labels[i])),
                                   *params]))
        (root / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
    return root
