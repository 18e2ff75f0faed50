"""Data loading and validation.

:func:`load_data` reads a file or folder into a :class:`Dataset` (raw values, NCHW, labels), picks the
requested subset, and :func:`prepare` converts it for a model: float32 in the model's value range,
shape checked, labels checked against the class count, NaN/inf and out-of-range values refused.
uint8 data is scaled from [0, 255] onto the model's range; float data is taken as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import DataError
from . import loaders
from .batching import AutoBatchSize, default_batch_size, resolve_batch_size
from .transforms import ImageTransform, resize_crop_batch

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "AutoBatchSize", "Dataset", "ImageTransform", "PreparedData", "default_batch_size", "load_data", "prepare",
    "resolve_batch_size", "select",
]


@dataclass
class Dataset:
    """Raw images (NCHW, or (N, D) for flat inputs), optional labels, and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    format: str
    indices: np.ndarray
    class_names: list[str] | None = None
    transform: dict[str, Any] | None = None  # {"resize": [256], "crop": [224]} when asked for

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> dict[str, Any]:
        extra = {} if self.transform is None else {"transform": self.transform}
        return {
            "path": self.source,
            "format": self.format,
            "n": len(self),
            "shape": list(self.x.shape[1:]),
            "dtype": str(self.x.dtype),
            "labelled": self.y is not None,
            "first_index": int(self.indices[0]) if len(self.indices) else None,
            **extra,
        }


@dataclass
class PreparedData:
    """Model-ready data: float32 canonical inputs and int64 labels (or None)."""

    x: np.ndarray
    y: np.ndarray | None
    dataset: Dataset = field(repr=False)

    def __len__(self) -> int:
        return len(self.x)


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W) greyscale
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def select(n_total: int, y: np.ndarray | None, n: int | None, offset: int, seed: int | None) -> np.ndarray:
    """Indices of the subset: skip ``offset``, then the first ``n`` or, with a seed, a stratified
    random sample of ``n`` (each class keeps its share, largest remainders rounded up)."""
    if offset < 0:
        raise DataError(f"--offset must be >= 0, got {offset}")
    if n is not None and n <= 0:
        raise DataError(f"--n must be positive, got {n}")
    idx = np.arange(offset, n_total)
    if len(idx) == 0:
        raise DataError(f"the data has {n_total} samples; --offset {offset} leaves none")
    if n is None or n >= len(idx):
        return idx
    if seed is None:
        return idx[:n]
    rng = np.random.default_rng(seed)
    if y is None:
        return np.sort(rng.choice(idx, size=n, replace=False))
    labels = y[idx]
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(idx)
    take = np.floor(quota).astype(int)
    short = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    picked = [rng.choice(idx[labels == c], size=k, replace=False) for c, k in zip(classes, take) if k > 0]
    return np.sort(np.concatenate(picked))


def load_data(
    path: str | Path,
    *,
    fmt: str | None = None,
    n: int | None = None,
    offset: int = 0,
    seed: int | None = None,
    labels_path: str | Path | None = None,
    resize: Any = None,
    crop: Any = None,
    channels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Read ``path`` (npz, IDX, image folder, images, or a named CIFAR-10 batch) and take a subset.

    ``resize`` / ``crop`` (N or (H, W); see :mod:`.transforms`) resize and centre-crop each selected
    image like torchvision's ``Resize`` + ``CenterCrop``.  Image files are listed first and only the
    selected ones are decoded, one at a time, each through the transform; ``channels`` (the model's:
    1 or 3) makes them greyscale or RGB.  ``labels_path`` is an IDX labels file, or for a flat folder
    of images a ``FILE LABEL`` list or ``"from-name"``.  ``progress(done, total)`` follows the decoding.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    transform = ImageTransform.parse(resize, crop)
    fmt = fmt or loaders.detect_format(p)
    if str(labels_path) == loaders.LABELS_FROM_NAME and fmt not in ("images", "image-folder"):
        raise DataError(f"--labels {loaders.LABELS_FROM_NAME} labels image files; {p.name} is {fmt} data", "drop --labels")
    if fmt in ("image-folder", "images"):
        listing = (loaders.list_image_folder if fmt == "image-folder" else loaders.list_images)(p, labels_path)
        y = _check_labels(p, listing.labels, len(listing.files))
        idx = select(len(listing.files), y, n, offset, seed)
        x = loaders.read_image_files([listing.files[i] for i in idx], p, transform, channels, progress)
        return Dataset(x=x, y=None if y is None else y[idx], source=str(p), format=fmt, indices=idx,
                       class_names=listing.names, transform=transform.describe() if transform else None)
    if fmt == "npz":
        x, y, names = loaders.read_npz(p)
    elif fmt == "idx":
        x, y, names = loaders.read_idx(p, Path(labels_path) if labels_path else None)
    elif fmt == "cifar10-batch":
        x, y, names = loaders.read_cifar10_batch(p)
    else:
        raise DataError(f"unknown data format {fmt!r}", f"choose one of {', '.join(loaders.FORMATS)}")
    if x.ndim < 2:
        raise DataError(f"{p.name}: x has shape {x.shape}; expected (N, ...) images")
    if len(x) == 0:
        raise DataError(f"{p.name} holds no samples")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{p.name}: x has dtype {x.dtype}; expected numbers")
    y = _check_labels(p, y, len(x))
    idx = select(len(x), y, n, offset, seed)
    xs = _to_nchw(x[idx])
    if transform:
        xs = resize_crop_batch(xs, transform.resize, transform.crop, progress)
    return Dataset(
        x=xs,
        y=None if y is None else y[idx],
        source=str(p),
        format=fmt,
        indices=idx,
        class_names=names,
        transform=transform.describe() if transform else None,
    )


def _check_labels(p: Path, y: Any, n: int) -> np.ndarray | None:
    """Labels as int64 (N,): one-hot rows become indices; whole numbers only; one per sample."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != n:
        raise DataError(f"{p.name}: {n} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{p.name}: labels must be whole numbers")
    return y.astype(np.int64)


def prepare(ds: Dataset, model: Model, *, need_labels: bool = True) -> PreparedData:
    """Check ``ds`` against ``model`` and convert it to float32 in the model's value range."""
    if len(ds) == 0:
        raise DataError("the data set is empty")
    if need_labels and ds.y is None:
        raise DataError(
            f"{Path(ds.source).name} has no labels",
            "store them as y (npz), use class sub-folders, or give --labels (a FILE LABEL list, or from-name)",
        )
    x = ds.x
    if model.input_shape is None:
        model.set_input_shape(tuple(x.shape[1:]))
    want = tuple(model.input_shape or ())
    if tuple(x.shape[1:]) != want:
        if x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[1], want[2], want[0]):
            x = x.transpose(0, 3, 1, 2)
        elif int(np.prod(x.shape[1:])) == int(np.prod(want)):
            x = x.reshape(len(x), *want)
        else:
            hint = "check --data, or the model's --input-shape/--layout"
            if x.ndim == 4 and len(want) == 3 and ds.transform is None:
                hint = (f"fit the images to {want[1]}x{want[2]} with --resize/--crop (e.g. --resize "
                        f"{want[1]},{want[2]}; ImageNet-style models: --resize 256 --crop 224), or {hint}")
            raise DataError(f"data samples have shape {tuple(ds.x.shape[1:])} but the model takes {want}", hint)
    lo, hi = model.spec.range
    if x.dtype == np.uint8:
        xf = (x.astype(np.float32) / 255.0) * (hi - lo) + lo
    else:
        xf = x.astype(np.float32)
        if not np.all(np.isfinite(xf)):
            bad = int((~np.isfinite(xf)).reshape(len(xf), -1).any(axis=1).sum())
            raise DataError(f"{bad} samples contain NaN or inf values")
        tol = 1e-4 * (hi - lo)
        if xf.min() < lo - tol or xf.max() > hi + tol:
            raise DataError(
                f"data values span [{xf.min():.4g}, {xf.max():.4g}], outside the model's range [{lo:g}, {hi:g}]",
                "rescale the data or set the model's range with --range",
            )
        xf = np.clip(xf, lo, hi)
    y = ds.y
    if y is not None and model.num_classes is not None:
        bad = (y < 0) | (y >= model.num_classes)
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} labels are outside 0..{model.num_classes - 1} (e.g. {int(y[bad][0])})",
                "the data does not match the model's classes",
            )
    return PreparedData(np.ascontiguousarray(xf), y, ds)
