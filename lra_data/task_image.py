"""``lra_image``: LRA Image -- CIFAR-10 as 1,024 grayscale pixel tokens, 10 classes.

Pixels in row-major order, id = LRA grayscale value + 1 (ids 1–256; 0 = pad, never used: every
image has 1,024 tokens). Splits as LRA's ``lra_benchmarks/image/input_pipeline.py`` sizes them:
``train`` = the first 90 % of the 50,000 training images (45,000), ``val`` = the last 10 %
(5,000), ``test`` = the 10,000 test images. Order = file order (``data_batch_1`` … ``_5``);
LRA slices a TFDS build, whose order is a hash of the example keys, so the membership of
train/val differs from LRA's while the sizes match (the Skyformer/Spectraformer preprocessing
``create_cifar10.py`` uses the same TFDS slices).

Where the batches are looked for under a data directory ``D`` (first hit wins):
``D/cifar10/``, ``D/cifar10/cifar-10-batches-py/``, ``D/cifar-10-batches-py/``, ``D/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Value
from tqdm.auto import tqdm

from .arrow import encoded
from .cifar import FILES, TEST_FILE, TRAIN_FILES, read_batch, write_batches
from .dataset import LRADataset, Ragged
from .errors import MissingDataError
from .official import copy_official
from .registry import TaskData, TaskSpec, register

READER_VERSION = 1
OUR_DIR = "cifar10"
SUBDIRS = (OUR_DIR, f"{OUR_DIR}/cifar-10-batches-py", "cifar-10-batches-py", ".")
VAL_FRACTION = 0.1
FEATURES = {"input_ids": Value("binary"), "label": Value("int64")}
HOW_TO_OBTAIN = (
    "download the CIFAR-10 python version cifar-10-python.tar.gz "
    "(https://www.cs.toronto.edu/~kriz/cifar.html) and run `python -m lra_data prepare "
    "lra_image --source cifar-10-python.tar.gz --out DATA_DIR` (or pass the extracted "
    "cifar-10-batches-py/ folder), or, with network access, `--source hf` "
    "(datasets.load_dataset('cifar10')); or extract it into DATA_DIR (giving "
    "DATA_DIR/cifar-10-batches-py/data_batch_1)."
)


def find_cifar(data_dir: Path, task: str = "lra_image") -> Path:
    """The folder under ``data_dir`` holding all six batch files, or :class:`MissingDataError`."""
    looked = []
    for sub in SUBDIRS:
        folder = data_dir / sub
        looked.append(str(folder / "{data_batch_1..5,test_batch}"))
        if all((folder / name).is_file() for name in FILES):
            return folder
    raise MissingDataError(task, looked, HOW_TO_OBTAIN)


def cifar_rows(paths: list[str]) -> Iterator[dict[str, Any]]:
    """Rows ``{"input_ids": 1,024 grey levels, "label"}`` of the batch files, in order."""
    for name in paths:
        pixels, labels = read_batch(name)
        for i in range(len(labels)):
            yield {"input_ids": pixels[i].tobytes(), "label": int(labels[i]), "line": i + 1,
                   "problem": None, "path": None}


def val_size(n_train: int) -> int:
    """Images held out from the end of the training files: 10 % (5,000 of 50,000)."""
    return int(n_train * VAL_FRACTION + 0.5)


class ImageTask(TaskData):
    spec = TaskSpec(
        name="lra_image", num_classes=10, vocab_size=257, max_length=1024, pair=False,
        description=(
            "LRA Image: CIFAR-10 class (0-9) of a 32x32 image read as 1024 grayscale pixel "
            "tokens (LRA's rgb_to_grayscale; id = grey level + 1); 45k/5k train/val from the "
            "training files, 10k test."
        ),
        image_shape=(32, 32),
    )
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None}
    prepare_options: ClassVar[dict[str, Any]] = {"source": None}

    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        folder = find_cifar(data_dir, self.spec.name)
        names = (TEST_FILE,) if split == "test" else TRAIN_FILES
        files = [folder / name for name in names]

        ds = encoded("cifar10", READER_VERSION, files, {}, cifar_rows, FEATURES,
                     options["cache_dir"], paths=[str(f) for f in files])
        pixels, labels = ds.data.column("input_ids"), ds.data.column("label").to_numpy()
        n = len(labels)
        if split == "test":
            rows = slice(0, n)
        else:
            cut = n - val_size(n)
            rows = slice(0, cut) if split == "train" else slice(cut, n)
        info = {"source_rows": int(n), "source_split": "test" if split == "test" else "train"}
        index = np.arange(n)[rows]
        return LRADataset(self.spec.name, split, [Ragged(pixels, index, shift=1)],
                          labels[index], max_length, num_classes=10,
                          source=str(folder / names[0]), info=info)

    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        source = options["source"]
        target = out_dir / OUR_DIR
        if source is None:
            find_cifar(out_dir, self.spec.name)  # already there? else: how to get it
            return out_dir
        if source == "hf":
            _prepare_from_hf(target, progress)
        else:
            copy_official(self.spec.name, Path(source), list(FILES), SUBDIRS, target,
                          HOW_TO_OBTAIN)
        for name in FILES:  # validate what we have (raises naming a bad file)
            read_batch(target / name)
        return out_dir

    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        """Tiny CIFAR-10 python batches in the original pickle format: ``rows_per_split`` test
        images and enough training images for ``train`` to keep ``rows_per_split`` after the
        10 % ``val`` slice (at least 2). Images are noise plus a class-dependent brightness
        gradient, so a model can learn something."""
        rng = np.random.default_rng(seed)
        n_train = rows_per_split + 2
        while n_train - val_size(n_train) < rows_per_split or val_size(n_train) < 2:
            n_train += 1

        def images(n: int) -> tuple[np.ndarray, np.ndarray]:
            labels = np.arange(n) % 10
            rng.shuffle(labels)
            ramp = np.linspace(0, 1, 32)[None, :, None, None] * labels[:, None, None, None]
            noise = rng.integers(0, 40, size=(n, 32, 32, 3))
            rgb = np.clip(noise + ramp * 20 + 10 * labels[:, None, None, None], 0, 255)
            return rgb.astype(np.uint8), labels

        train, test = images(n_train), images(rows_per_split)
        write_batches(data_dir / OUR_DIR, train[0], train[1], test[0], test[1])
        return data_dir


def _prepare_from_hf(target: Path, progress: bool) -> None:
    try:
        from datasets import load_dataset
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise MissingDataError("lra_image", ["datasets.load_dataset('cifar10')"],
                               HOW_TO_OBTAIN) from exc
    try:
        ds = load_dataset("cifar10")
    except Exception as exc:  # network/hub errors come in many types
        raise MissingDataError("lra_image", [f"datasets.load_dataset('cifar10') failed: {exc}"],
                               HOW_TO_OBTAIN) from exc
    arrays = {}
    for split in ("train", "test"):
        rows = ds[split]
        image_key = "img" if "img" in rows.column_names else "image"
        rgb = np.stack([np.asarray(r[image_key].convert("RGB"), dtype=np.uint8)
                        for r in tqdm(rows, desc=f"CIFAR-10 {split}", disable=not progress)])
        arrays[split] = (rgb, np.asarray(rows["label"], dtype=np.int64))
    write_batches(target, *arrays["train"], *arrays["test"])


register(ImageTask())
