"""Readers for the data formats advaudit accepts.

Each reader returns raw arrays ``(x, y, class_names)``: ``x`` as stored (uint8 or float), ``y`` int64
labels or ``None``.  None of them unpickles user files, with one exception the user must ask for by
name: CIFAR-10's own "python version" batches (``--data-format cifar10-batch``), read through a
restricted unpickler that only rebuilds dicts, lists, strings, bytes and numpy arrays.
"""

from __future__ import annotations

import gzip
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .transforms import ImageTransform, resize_crop_pil

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
LABELS_FROM_NAME = "from-name"
"""``--labels from-name``: each image's label is the number after the last ``_`` of its file name."""
_GREY_MODES = ("1", "L", "I", "I;16", "F")
_MODE_OF_CHANNELS = {1: "L", 3: "RGB"}


@dataclass
class ImageFiles:
    """Image files in load order, their labels (or None) and class names (or None)."""

    files: list[Path]
    labels: np.ndarray | None
    names: list[str] | None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_image_folder(path: Path, labels_path: Path | str | None = None) -> ImageFiles:
    """``path/<class>/*.png``; classes sorted by name (ImageNet's synset folders give its class
    indices), or by number when every name is an integer (then the name is the label)."""
    if labels_path is not None:
        raise DataError(
            f"{path.name} has class sub-folders, which give the labels; --labels is for a flat folder of images",
            "drop --labels, or point --data at a flat folder",
        )
    classes = [p for p in path.iterdir() if p.is_dir()]
    numbered = all(c.name.isdigit() for c in classes)
    if numbered:
        classes.sort(key=lambda c: int(c.name))
        labels_of = {c: int(c.name) for c in classes}
    else:
        classes.sort(key=lambda c: c.name)
        labels_of = {c: i for i, c in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for c in classes:
        found = _image_files(c)
        files += found
        labels += [labels_of[c]] * len(found)
    if not files:
        raise DataError(f"no images found in {path}", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    names = None if numbered else [c.name for c in classes]
    return ImageFiles(files, np.asarray(labels, dtype=np.int64), names)


def list_images(path: Path, labels_path: Path | str | None = None) -> ImageFiles:
    """One image file or a flat folder of images: unlabelled, or labelled by ``labels_path`` (a
    ``FILE LABEL`` list, or :data:`LABELS_FROM_NAME`)."""
    files = _image_files(path) if path.is_dir() else [path]
    if not files:
        raise DataError(f"no images found in {path}", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    root = path if path.is_dir() else path.parent
    if labels_path is None:
        return ImageFiles(files, None, None)
    if str(labels_path) == LABELS_FROM_NAME:
        return ImageFiles(files, _labels_from_names(files), None)
    return ImageFiles(files, _labels_from_file(Path(labels_path), files, root), None)


_NAME_LABEL = re.compile(r"_(\d+)$")


def _labels_from_names(files: list[Path]) -> np.ndarray:
    labels = []
    for f in files:
        m = _NAME_LABEL.search(f.stem)
        if m is None:
            raise DataError(
                f"--labels {LABELS_FROM_NAME}: {f.name} does not end in _<label> (like imagenet_03_990.jpg)",
                "rename the files, or give a FILE LABEL list with --labels",
            )
        labels.append(int(m.group(1)))
    return np.asarray(labels, dtype=np.int64)


def _labels_from_file(labels_path: Path, files: list[Path], root: Path) -> np.ndarray:
    """Labels from a text file of ``FILE LABEL`` lines (comma, tab or spaces between; ``#`` comments;
    a header line allowed); FILE is the name or the path relative to the folder."""
    if not labels_path.is_file():
        raise DataError(f"labels file not found: {labels_path}",
                        f"give a FILE LABEL list, or --labels {LABELS_FROM_NAME}")
    try:
        lines = labels_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {labels_path.name}: {str(exc).splitlines()[0]}") from None
    table: dict[str, int] = {}
    seen_entry = False
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in re.split(r"[,\t ]+", text) if f]
        if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
            if not seen_entry and len(fields) == 2:  # a header such as "file,label"
                seen_entry = True
                continue
            raise DataError(f"{labels_path.name}:{number}: expected FILE LABEL, got {text[:80]!r}")
        seen_entry = True
        if int(fields[1]) < 0:
            raise DataError(f"{labels_path.name}:{number}: label {fields[1]} is negative")
        table[fields[0]] = int(fields[1])
    labels = []
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        label = table.get(rel, table.get(f.name))
        if label is None:
            missing = sum(1 for g in files if g.name not in table and g.relative_to(root).as_posix() not in table)
            raise DataError(
                f"{labels_path.name} has no label for {f.name} ({missing} of {len(files)} images unlabelled)"
            )
        labels.append(label)
    return np.asarray(labels, dtype=np.int64)


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0]}") from None


def _sizes_text(sizes: list[tuple[int, int]]) -> str:
    distinct = list(dict.fromkeys(sizes))
    shown = ", ".join(f"{w}x{h}" for w, h in distinct[:4])
    return shown + (f" and {len(distinct) - 4} more" if len(distinct) > 4 else "")


def read_image_files(
    files: list[Path],
    where: Path,
    transform: ImageTransform | None = None,
    channels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Decode ``files`` into one uint8 (N, C, H, W) array, each through ``transform`` (resize /
    centre-crop) as it is read.  ``channels`` (1 or 3, the model's) picks greyscale or RGB; without
    it the images stay greyscale only when every one is.  Without a transform every image must have
    the same size."""
    if not files:
        raise DataError(f"no images found in {where}", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    sizes, modes = [], []
    for f in files:  # headers only: sizes and modes before decoding anything
        with _open_image(f) as im:
            sizes.append(im.size)
            modes.append(im.mode)
    mode = _MODE_OF_CHANNELS.get(channels or 0) or ("L" if all(m in _GREY_MODES for m in modes) else "RGB")
    transform = transform or ImageTransform()
    if not transform and len(set(sizes)) > 1:
        raise DataError(
            f"images in {where} have different sizes (WxH: {_sizes_text(sizes)})",
            "pass --resize/--crop, e.g. --resize 256 --crop 224",
        )
    if transform and transform.crop is None and transform.resize is not None and len(transform.resize) == 1:
        out_sizes = {transform.output_size(h, w) for w, h in sizes}
        if len(out_sizes) > 1:
            raise DataError(
                f"images in {where} have different aspect ratios: --resize {transform.resize[0]} alone gives "
                f"sizes (HxW) {', '.join(f'{h}x{w}' for h, w in sorted(out_sizes)[:4])}",
                f"add --crop (e.g. --crop {transform.resize[0]}) or give --resize H,W",
            )
    height, width = transform.output_size(sizes[0][1], sizes[0][0])
    out = np.empty((len(files), 1 if mode == "L" else 3, height, width), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with _open_image(f) as im:
                arr = resize_crop_pil(im.convert(mode), transform.resize, transform.crop)
        except OSError as exc:  # truncated or corrupt data shows only when decoded
            raise DataError(f"cannot read image {f}: {str(exc).splitlines()[0]}") from None
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if progress is not None:
            progress(i + 1, len(files))
    return out
