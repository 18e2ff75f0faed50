"""Readers for the data formats advaudit accepts.

Each reader returns raw arrays ``(x, y, class_names)``: ``x`` as stored (uint8 or float), ``y`` int64
labels or ``None``.  None of them unpickles user files, with one exception the user must ask for by
name: CIFAR-10's own "python version" batches (``--data-format cifar10-batch``), read through a
restricted unpickler that only rebuilds dicts, lists, strings, bytes and numpy arrays.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FORMATS = ("npz", "idx", "cifar10-batch", "image-folder", "images")

Raw = tuple[np.ndarray, np.ndarray | None, list[str] | None]


def detect_format(path: Path) -> str:
    """Guess the format from the path; CIFAR-10 pickles are never guessed."""
    if path.is_dir():
        return "image-folder" if any(p.is_dir() for p in path.iterdir()) else "images"
    suffixes = "".join(path.suffixes).lower()
    if path.suffix.lower() == ".npz":
        return "npz"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    if "idx" in path.name.lower() or suffixes.endswith((".idx", ".ubyte", ".ubyte.gz")):
        return "idx"
    raise DataError(
        f"cannot tell the format of {path.name}",
        f"name it with --data-format ({', '.join(FORMATS)})",
    )


# --------------------------------------------------------------------------- npz
def read_npz(path: Path) -> Raw:
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle or a bare .npy array
        raise DataError(f"{path.name} is not a readable .npz file (not a zip archive)", "save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if "x" not in keys:
                raise DataError(f"{path.name} has no array 'x' (found: {', '.join(sorted(keys)) or 'none'})",
                                "store images as x and labels as y")
            x = f["x"]
            y = f["y"] if "y" in keys else None
            names = [str(n) for n in f["class_names"]] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path.name} stores Python objects; advaudit reads only plain numeric arrays") from None
        raise DataError(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable .npz file ({str(exc).splitlines()[0]})") from None
    return x, y, names


# --------------------------------------------------------------------------- IDX
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_idx_array(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path.name}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path.name} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) < header + count * dtype.itemsize:
        raise DataError(f"{path.name} is truncated: header says {shape}, file holds fewer values")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path, labels_path: Path | None = None) -> Raw:
    """MNIST-style IDX images; labels from ``labels_path`` or the sibling ``*labels-idx1*`` file."""
    x = _read_idx_array(path)
    if x.ndim == 1:
        raise DataError(f"{path.name} holds labels, not images", "pass the images file (idx3)")
    if labels_path is None:
        guess = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        labels_path = guess if guess != path and guess.exists() else None
    y = None
    if labels_path is not None:
        y = _read_idx_array(labels_path).astype(np.int64)
        if y.shape != (len(x),):
            raise DataError(f"{labels_path.name} has {y.shape[0]} labels for {len(x)} images")
    return x, y, None


# ------------------------------------------------------------------ CIFAR-10 batch
class _RestrictedUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refused: the CIFAR-10 batch asks to load {module}.{name}, which a real batch never does")
        return super().find_class(module, name)


def read_cifar10_batch(path: Path) -> Raw:
    if path.is_dir():
        raise DataError(f"{path} is a folder", "name one batch file, for example cifar-10-batches-py/test_batch")
    try:
        with open(path, "rb") as f:
            batch = _RestrictedUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path.name} is not a CIFAR-10 python batch ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path.name} is not a CIFAR-10 python batch (no data/labels)")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path.name}: data has shape {data.shape}, expected (N, 3072)")
    names = None
    meta = path.with_name("batches.meta")
    if meta.is_file():
        try:
            with open(meta, "rb") as f:
                m = _RestrictedUnpickler(f, encoding="bytes").load()
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in m.get(b"label_names", [])] or None
        except Exception:
            names = None
    return data.reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], dtype=np.int64), names


# -------------------------------------------------------------------- images
def _load_image(path: Path, mode: str | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0]}") from None


def _stack_images(paths: list[Path], where: Path) -> np.ndarray:
    if not paths:
        raise DataError(f"no images found in {where}", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    first = _load_image(paths[0], None)
    mode = "L" if first.ndim == 2 else "RGB"
    arrays = [first] + [_load_image(p, mode) for p in paths[1:]]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images in {where} have different sizes {sorted(shapes)[:3]}", "resize them to one size first")
    return np.stack(arrays)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(path: Path) -> Raw:
    """``path/<class>/*.png``; classes sorted by name, or by number when every name is an integer."""
    classes = [p for p in path.iterdir() if p.is_dir()]
    if all(c.name.isdigit() for c in classes):
        classes.sort(key=lambda c: int(c.name))
        labels_of = {c: int(c.name) for c in classes}
    else:
        classes.sort(key=lambda c: c.name)
        labels_of = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in classes:
        found = _image_files(c)
        files += found
        labels += [labels_of[c]] * len(found)
    names = None if all(c.name.isdigit() for c in classes) else [c.name for c in classes]
    return _stack_images(files, path), np.asarray(labels, dtype=np.int64), names


def read_images(path: Path) -> Raw:
    """One image file or a flat folder of images, unlabelled."""
    files = _image_files(path) if path.is_dir() else [path]
    return _stack_images(files, path), None, None
