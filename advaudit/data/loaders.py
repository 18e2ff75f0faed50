"""Readers for the data formats advaudit accepts.

Each reader returns raw arrays ``(x, y, class_names)``: ``x`` as stored (uint8 or float), ``y`` int64
labels or ``None``.  None of them unpickles user files, with one exception the user must ask for by
name: CIFAR-10's own "python version" batches (``--data-format cifar10-batch``), read through a
restricted unpickler that only rebuilds dicts, lists, strings, bytes and numpy arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DataError
from .transforms import ImageTransform, resize_crop_pil, resized_size

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FORMATS = ("npz", "idx", "cifar10-batch", "image-folder", "images")

Raw = tuple[np.ndarray, np.ndarray | None, list[str] | None]

DEFAULT_MAX_INPUT_PIXELS = 2**28
"""``--max-input-pixels``: the most decoded values (pixels x channels) advaudit accepts for one image or
sample, and for one array it must decode into memory as a whole (268,435,456: a 9459x9459 RGB image,
or 87,000 CIFAR-10 images).  Uncompressed ``.npz`` members are memory-mapped, not decoded: only their
per-sample size counts."""


def check_values(name: str, what: str, values: int, limit: int | None) -> None:
    """Refuse ``values`` decoded values (pixels x channels) above ``limit`` (None: no limit), before
    anything is decoded: one line saying what is too large and how to raise the limit."""
    if limit is not None and values > limit:
        raise DataError(
            f"{name}: {what} would decode to {values:,} values (pixels x channels), over the limit of {limit:,}",
            f"if the input is genuine, raise the limit with --max-input-pixels {1 << max(values - 1, 1).bit_length()}",
        )


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
def read_npz(path: Path, max_values: int | None = None) -> Raw:
    """Arrays ``x``, ``y`` and ``class_names`` of an ``.npz``; never unpickled.

    An uncompressed (stored) ``x`` member is memory-mapped read-only at its offset inside the zip file
    (its ``.npy`` header parsed with :mod:`numpy.lib.format`), so nothing is read until rows are used;
    a compressed one is decoded into memory in its stored dtype.  ``max_values`` (see
    :func:`check_values`) is checked against each sample of ``x`` and against every member that is
    decoded, from the headers, before decoding."""
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle or a bare .npy array
        raise DataError(f"{path.name} is not a readable .npz file (not a zip archive)", "save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if "x" not in keys:
                raise DataError(f"{path.name} has no array 'x' (found: {', '.join(sorted(keys)) or 'none'})",
                                "store images as x and labels as y")
            x = _npz_member(path, f, "x", max_values)
            y = _npz_member(path, f, "y", max_values) if "y" in keys else None
            names = None
            if "class_names" in keys:
                names = [str(n) for n in _npz_member(path, f, "class_names", max_values)]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path.name} stores Python objects; advaudit reads only plain numeric arrays") from None
        raise DataError(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from None
    except MemoryError:  # a damaged .npy header can declare any shape
        raise DataError(f"{path.name} declares arrays too large to load") from None
    except Exception as exc:  # damage surfaces as many types (BadZipFile, zlib.error, EOFError, TokenError, ...)
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise DataError(f"{path.name} is not a readable .npz file ({text})") from None
    return x, y, names


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at ``fp``'s position."""
    version = npy_format.read_magic(fp)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fp)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (30 bytes)


def _npz_member(path: Path, f: Any, key: str, max_values: int | None) -> np.ndarray:
    """Member ``key`` of the open npz ``f``: checked against ``max_values`` from its header, then
    memory-mapped (``x`` stored uncompressed) or decoded (anything else)."""
    zf: zipfile.ZipFile = f.zip
    name = key + ".npy" if key + ".npy" in zf.namelist() else key
    info = zf.getinfo(name)
    with zf.open(info) as member:
        try:
            shape, fortran, dtype = _npy_header(member)
        except ValueError:
            return f[key]  # not an .npy member: np.load says what it is (or returns its bytes)
    if dtype.hasobject:
        raise DataError(f"{path.name} stores Python objects; advaudit reads only plain numeric arrays")
    count = math.prod(shape)
    stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
    if key == "x" and len(shape) >= 2:
        check_values(path.name, "one sample of x", math.prod(shape[1:]), max_values)
    if key != "x" or not stored:
        check_values(path.name, f"array {key!r} {_shape_text(shape)}", count, max_values)
    if key == "x" and stored and count > 0 and dtype.itemsize > 0:
        mapped = _map_stored(path, info, shape, fortran, dtype)
        if mapped is not None:
            return mapped
    return f[key]


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _map_stored(
    path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], fortran: bool, dtype: np.dtype
) -> np.ndarray | None:
    """A read-only memory map of a stored (uncompressed) ``.npy`` member; None if the member's
    header does not describe what the file holds (np.load then reports it)."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = _LOCAL_HEADER.unpack(local)[-2:]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        raw.seek(start)
        if _npy_header(raw) != (shape, fortran, dtype):
            return None
        offset = raw.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if offset - start + nbytes > info.file_size or offset + nbytes > path.stat().st_size:
        raise DataError(f"{path.name} is truncated: x has shape {_shape_text(shape)}, the file holds fewer values")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# --------------------------------------------------------------------------- IDX
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def _read_idx_array(path: Path, max_values: int | None = None) -> np.ndarray:
    """An IDX file (gzipped or not); ``max_values`` is checked from the header before the values are read."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
                raise DataError(f"{path.name} is not an IDX file (bad magic number)")
            dtype, ndim = np.dtype(IDX_DTYPES[head[2]]), head[3]
            if ndim == 0:
                raise DataError(f"{path.name} is not an IDX array (its header declares no dimensions)")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path.name} is truncated: its header is cut short")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            count = math.prod(shape) if shape else 0
            if ndim >= 2:
                check_values(path.name, "one sample", math.prod(shape[1:]), max_values)
            check_values(path.name, f"the array {_shape_text(shape)}", count, max_values)
            raw = f.read(count * dtype.itemsize)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path.name}: {exc}") from None
    if len(raw) < count * dtype.itemsize:
        raise DataError(f"{path.name} is truncated: header says {shape}, file holds fewer values")
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path, labels_path: Path | None = None, max_values: int | None = None) -> Raw:
    """MNIST-style IDX images; labels from ``labels_path`` or the sibling ``*labels-idx1*`` file."""
    x = _read_idx_array(path, max_values)
    if x.ndim == 1:
        raise DataError(f"{path.name} holds labels, not images", "pass the images file (idx3)")
    if labels_path is None:
        guess = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        labels_path = guess if guess != path and guess.exists() else None
    y = None
    if labels_path is not None:
        y = _read_idx_array(labels_path, max_values)  # whole numbers checked (and cast) by the caller
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


def read_cifar10_batch(path: Path, max_values: int | None = None) -> Raw:
    if path.is_dir():
        raise DataError(f"{path} is a folder", "name one batch file, for example cifar-10-batches-py/test_batch")
    check_values(path.name, "the batch", path.stat().st_size, max_values)  # a pickle is no smaller than its bytes
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
    if not path.is_dir():
        raise DataError(f"{path} is not a folder", "--data-format image-folder takes a folder of class sub-folders")
    classes = [p for p in path.iterdir() if p.is_dir()]
    numbered = all(c.name.isdecimal() for c in classes)  # not isdigit: int("²") fails
    if numbered and any(int(c.name) >= 2**31 for c in classes):
        largest = max(classes, key=lambda c: int(c.name)).name
        raise DataError(f"{path.name}: class folder {largest[:40]} is not a usable label")
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
        if len(m.group(1)) > 9:  # labels are class indices: beyond int64 they cannot even be stored
            raise DataError(
                f"--labels {LABELS_FROM_NAME}: {f.name[:80]} names label {m.group(1)[:20]}..., not a class index")
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
        if len(fields[1].lstrip("-")) > 9:
            raise DataError(f"{labels_path.name}:{number}: label {fields[1][:20]} is not a class index")
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
        with warnings.catch_warnings():  # Pillow's warnings (bombs, odd palettes) would break the one-line contract
            warnings.simplefilter("ignore")
            return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:  # ValueError: text bombs
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
    max_values: int | None = None,
) -> np.ndarray:
    """Decode ``files`` into one uint8 (N, C, H, W) array, each through ``transform`` (resize /
    centre-crop) as it is read.  ``channels`` (1 or 3, the model's) picks greyscale or RGB; without
    it the images stay greyscale only when every one is.  Without a transform every image must have
    the same size.  ``max_values`` (see :func:`check_values`) is checked against every image's size in
    its header and against the whole array, before anything is decoded; it then replaces Pillow's own
    decompression-bomb limit."""
    if not files:
        raise DataError(f"no images found in {where}", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    with _pillow_limit(max_values is not None):
        return _read_image_files(files, where, transform, channels, progress, max_values)


@contextlib.contextmanager
def _pillow_limit(ours: bool) -> Iterator[None]:
    """With ``ours``, switch off Pillow's decompression-bomb check (``Image.MAX_IMAGE_PIXELS``): the
    caller checks every image against ``--max-input-pixels`` itself."""
    from PIL import Image

    if not ours:
        yield
        return
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_image_files(
    files: list[Path],
    where: Path,
    transform: ImageTransform | None,
    channels: int | None,
    progress: Callable[[int, int], None] | None,
    max_values: int | None,
) -> np.ndarray:
    sizes, modes = [], []
    for f in files:  # headers only: sizes and modes before decoding anything
        with _open_image(f) as im:
            sizes.append(im.size)
            modes.append(im.mode)
            check_values(f.name, f"the {im.size[0]}x{im.size[1]} image", im.size[0] * im.size[1] * len(im.getbands()),
                         max_values)
            if transform is not None and transform.resize is not None:  # resized before --crop cuts it
                rh, rw = resized_size(im.size[1], im.size[0], transform.resize)
                check_values(f.name, f"the image resized to {rw}x{rh}", rh * rw * len(im.getbands()), max_values)
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
    depth = 1 if mode == "L" else 3
    check_values(where.name, f"{len(files)} images of {depth}x{height}x{width}", len(files) * depth * height * width,
                 max_values)
    out = np.empty((len(files), depth, height, width), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with _open_image(f) as im, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency expressed in bytes ..."
                arr = resize_crop_pil(im.convert(mode), transform.resize, transform.crop)
        except (OSError, ValueError) as exc:  # truncated or corrupt data shows only when decoded
            raise DataError(f"cannot read image {f}: {str(exc).splitlines()[0]}") from None
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if progress is not None:
            progress(i + 1, len(files))
    return out
