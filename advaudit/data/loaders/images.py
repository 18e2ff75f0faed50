"""Image files: a folder of class folders or a flat folder of images, labels from folder names, file
names or a labels file; decoded with Pillow under the ``--max-input-pixels`` limit."""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ...errors import DataError, first_line
from ..transforms import ImageTransform, resize_crop_pil, resized_size

from .common import IMAGE_SUFFIXES, check_values

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
        raise DataError(f"cannot read labels file {labels_path.name}: {first_line(exc)}") from None
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
        raise DataError(f"cannot read image {path}: {first_line(exc)}") from None


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
            raise DataError(f"cannot read image {f}: {first_line(exc)}") from None
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if progress is not None:
            progress(i + 1, len(files))
    return out
