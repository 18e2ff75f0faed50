"""Data loading and validation.

:func:`load_data` reads a file or folder into a :class:`Dataset` (raw values, NCHW, labels), picks the
requested subset, and :func:`prepare` converts it for a model: float32 in the model's value range,
shape checked, labels checked against the class count, NaN/inf and out-of-range values refused.
uint8 data is scaled from [0, 255] onto the model's range; float data is taken as is.

Memory follows the batch size, not the data size: a :class:`Dataset` keeps the samples as stored
(uint8 stays uint8; an uncompressed ``.npz`` member stays a read-only memory map), and
:class:`PreparedData` converts them batch by batch through its lazy :attr:`PreparedData.view`
(:mod:`.views`).  ``max_values`` (``--max-input-pixels``) refuses inputs that would decode to more values
than that, before decoding them (:func:`.loaders.check_values`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import DataError, ModelError
from . import loaders
from .batching import AutoBatchSize, default_batch_size, resolve_batch_size
from .loaders import DEFAULT_MAX_INPUT_PIXELS, check_values
from .transforms import ImageTransform, resize_crop_batch, resized_size
from .views import FloatView, Rows, concat_rows, is_lazy, iter_batches, take_rows

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "DEFAULT_MAX_INPUT_PIXELS", "AutoBatchSize", "Dataset", "FloatView", "ImageTransform", "PreparedData", "Rows",
    "concat_rows", "default_batch_size", "is_lazy", "iter_batches", "load_data", "prepare", "resolve_batch_size",
    "select", "take_rows",
]


@dataclass
class Dataset:
    """Raw images (NCHW, or (N, D) for flat inputs), optional labels, and where they came from.

    ``x`` keeps the stored dtype; for an uncompressed ``.npz`` it is a read-only ``np.memmap`` (a view
    of it, channels-last data transposed without a copy) unless ``--seed`` picked scattered rows."""

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


class PreparedData:
    """Model-ready data: float32 canonical inputs and int64 labels (or None).

    :attr:`view` gives the inputs batch by batch (``data.view[s:e]``, index arrays, masks): a lazy
    :class:`~advaudit.data.views.FloatView` that converts the stored samples of :attr:`dataset` as
    rows are asked for.  :attr:`x` is the whole float32 array, converted on first use and kept: for
    the consumers that need all of it at once (training, defences, backdoor scans)."""

    def __init__(self, x: np.ndarray | FloatView, y: np.ndarray | None, dataset: Dataset) -> None:
        self._view: Any = x
        self._x: np.ndarray | None = x if isinstance(x, np.ndarray) else None
        self.y = y
        self.dataset = dataset

    @property
    def view(self) -> Rows:
        """The inputs as a lazily converted (N, C, H, W) float32 array-like (a plain array if built from one)."""
        return self._view

    @property
    def x(self) -> np.ndarray:
        """All inputs as one float32 array (converted now if they were not yet)."""
        if self._x is None:
            self._x = np.asarray(self._view)
        return self._x

    @x.setter
    def x(self, value: np.ndarray) -> None:
        self._view = self._x = value

    def __len__(self) -> int:
        return len(self._view)

    def __repr__(self) -> str:
        return f"PreparedData(n={len(self)}, shape={tuple(self._view.shape)}, source={self.dataset.source!r})"


def _to_nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W) and channels-last data as NCHW; a memory map is transposed as a view (no copy)."""
    if x.ndim == 3:  # (N, H, W) greyscale
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        nchw = x.transpose(0, 3, 1, 2)
        return nchw if isinstance(x, np.memmap) else np.ascontiguousarray(nchw)
    return x


def select(n_total: int, y: np.ndarray | None, n: int | None, offset: int, seed: int | None) -> np.ndarray:
    """Indices of the subset: skip ``offset``, then the first ``n`` or, with a seed, a stratified
    random sample of ``n`` (each class keeps its share, largest remainders rounded up)."""
    if offset < 0:
        raise DataError(f"--offset must be >= 0, got {offset}")
    if n is not None and n <= 0:
        raise DataError(f"--n must be positive, got {n}")
    idx = np.arange(min(offset, n_total), n_total)  # an --offset past the end (any size) leaves none
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
    max_values: int | None = DEFAULT_MAX_INPUT_PIXELS,
) -> Dataset:
    """Read ``path`` (npz, IDX, image folder, images, or a named CIFAR-10 batch) and take a subset.

    ``resize`` / ``crop`` (N or (H, W); see :mod:`.transforms`) resize and centre-crop each selected
    image like torchvision's ``Resize`` + ``CenterCrop``.  Image files are listed first and only the
    selected ones are decoded, one at a time, each through the transform; ``channels`` (the model's:
    1 or 3) makes them greyscale or RGB.  ``labels_path`` is an IDX labels file, or for a flat folder
    of images a ``FILE LABEL`` list or ``"from-name"``.  ``progress(done, total)`` follows the decoding.

    ``max_values`` (``--max-input-pixels``; None: no limit) is the most decoded values (pixels x
    channels) accepted for one image or sample and for any array decoded into memory as a whole; it is
    checked from headers before decoding (:func:`.loaders.check_values`).  An uncompressed ``.npz`` is
    memory-mapped: the selected rows are a view of the file, not a copy (with ``seed``, scattered rows
    are copied in their stored dtype)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    if not (p.is_file() or p.is_dir()):  # a FIFO or a device would block or never end
        raise DataError(f"data {p} is not a regular file or folder")
    transform = ImageTransform.parse(resize, crop)
    fmt = fmt or loaders.detect_format(p)
    if str(labels_path) == loaders.LABELS_FROM_NAME and fmt not in ("images", "image-folder"):
        raise DataError(f"--labels {loaders.LABELS_FROM_NAME} labels image files; {p.name} is {fmt} data",
                        "drop --labels")
    if fmt in ("image-folder", "images"):
        listing = (loaders.list_image_folder if fmt == "image-folder" else loaders.list_images)(p, labels_path)
        y = _check_labels(p, listing.labels, len(listing.files))
        idx = select(len(listing.files), y, n, offset, seed)
        x = loaders.read_image_files([listing.files[i] for i in idx], p, transform, channels, progress, max_values)
        return Dataset(x=x, y=None if y is None else y[idx], source=str(p), format=fmt, indices=idx,
                       class_names=listing.names, transform=transform.describe() if transform else None)
    if fmt == "npz":
        x, y, names = loaders.read_npz(p, max_values)
    elif fmt == "idx":
        x, y, names = loaders.read_idx(p, Path(labels_path) if labels_path else None, max_values)
    elif fmt == "cifar10-batch":
        x, y, names = loaders.read_cifar10_batch(p, max_values)
    else:
        raise DataError(f"unknown data format {fmt!r}", f"choose one of {', '.join(loaders.FORMATS)}")
    if x.ndim < 2:
        raise DataError(f"{p.name}: x has shape {x.shape}; expected (N, ...) images")
    if len(x) == 0:
        raise DataError(f"{p.name} holds no samples")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise DataError(f"{p.name}: x has dtype {x.dtype}; expected numbers")
    y = _check_labels(p, y, len(x))
    idx = select(len(x), y, n, offset, seed)
    xs = _to_nchw(_rows_of(p, x, idx, max_values))
    if transform:
        if xs.ndim == 4:
            h, w = transform.output_size(xs.shape[2], xs.shape[3])
            check_values(p.name, f"{len(xs)} resized images of {xs.shape[1]}x{h}x{w}", len(xs) * xs.shape[1] * h * w,
                         max_values)
            if transform.resize is not None:  # the image resized, before --crop cuts it: one at a time
                rh, rw = resized_size(xs.shape[2], xs.shape[3], transform.resize)
                check_values(p.name, f"one image resized to {rw}x{rh}", xs.shape[1] * rh * rw, max_values)
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


def _rows_of(p: Path, x: np.ndarray, idx: np.ndarray, max_values: int | None) -> np.ndarray:
    """``x[idx]``; of a memory map, a view when the rows are consecutive (no copy), else a copy
    (checked against ``max_values`` first)."""
    if not isinstance(x, np.memmap):
        return x[idx]
    if len(idx) and int(idx[-1]) - int(idx[0]) + 1 == len(idx):
        return x[int(idx[0]) : int(idx[-1]) + 1]
    check_values(p.name, f"{len(idx)} selected samples", len(idx) * int(np.prod(x.shape[1:])), max_values)
    return np.asarray(x[idx])


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
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise DataError(f"{p.name}: labels have dtype {y.dtype}; expected whole numbers")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or np.any(np.abs(y) >= 2**62):
            raise DataError(f"{p.name}: labels must be whole numbers")
    return y.astype(np.int64)


def prepare(ds: Dataset, model: Model, *, need_labels: bool = True) -> PreparedData:
    """Check ``ds`` against ``model``; its inputs become float32 in the model's value range, converted
    batch by batch (:attr:`PreparedData.view`), each batch exactly as converting all at once would.

    The model is only read: one whose file leaves the input shape open must be completed first
    (``load_model(path, input_shape=...)`` or :func:`advaudit.models.complete_input_shape`)."""
    if len(ds) == 0:
        raise DataError("the data set is empty")
    if need_labels and ds.y is None:
        raise DataError(
            f"{Path(ds.source).name} has no labels",
            "store them as y (npz), use class sub-folders, or give --labels (a FILE LABEL list, or from-name)",
        )
    x = ds.x
    if model.input_shape is None:
        raise ModelError(
            f"{Path(model.path).name} leaves its input shape open, so data cannot be prepared for it yet",
            "open it with load_model(path, input_shape=...) or call "
            "advaudit.models.complete_input_shape(model, data.x.shape[1:]) first",
        )
    want = tuple(model.input_shape)
    layout: str | None = None
    if tuple(x.shape[1:]) != want:
        if x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[1], want[2], want[0]):
            layout = "nhwc"
        elif int(np.prod(x.shape[1:])) == int(np.prod(want)):
            layout = "reshape"
        else:
            hint = "check --data, or the model's --input-shape/--layout"
            if x.ndim == 4 and len(want) == 3 and ds.transform is None:
                hint = (f"fit the images to {want[1]}x{want[2]} with --resize/--crop (e.g. --resize "
                        f"{want[1]},{want[2]}; ImageNet-style models: --resize 256 --crop 224), or {hint}")
            raise DataError(f"data samples have shape {tuple(ds.x.shape[1:])} but the model takes {want}", hint)
    lo, hi = model.spec.range
    if x.dtype != np.uint8:
        _check_float_values(x, lo, hi)
    y = ds.y
    if y is not None and model.num_classes is not None:
        bad = (y < 0) | (y >= model.num_classes)
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} labels are outside 0..{model.num_classes - 1} (e.g. {int(y[bad][0])})",
                "the data does not match the model's classes",
            )
    return PreparedData(FloatView(x, ToModelInput(x.dtype == np.uint8, lo, hi, layout, want)), y, ds)


@dataclass(frozen=True)
class ToModelInput:
    """Stored rows -> model-ready float32 rows: channels-last transposed or flat rows reshaped
    (``layout`` "nhwc" / "reshape"), then uint8 scaled from [0, 255] onto [lo, hi] (``scale``) or other
    values cast to float32 and clipped into [lo, hi] (they were checked to lie within it, up to a
    tolerance).  Elementwise, so converting a batch gives exactly the rows of converting all at once."""

    scale: bool
    lo: float
    hi: float
    layout: str | None = None
    shape: tuple[int, ...] = ()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        elif self.layout == "reshape":
            x = x.reshape(len(x), *self.shape)
        lo, hi = self.lo, self.hi
        if self.scale:
            xf = (x.astype(np.float32) / 255.0) * (hi - lo) + lo
        else:
            xf = np.clip(x.astype(np.float32), lo, hi)
        return np.ascontiguousarray(xf)


def _check_float_values(x: np.ndarray, lo: float, hi: float, values_per_chunk: int = 2**22) -> None:
    """Refuse NaN/inf and values outside [lo, hi] (beyond a 1e-4 tolerance), reading ``x`` in chunks."""
    per = max(1, int(np.prod(x.shape[1:])))
    step = max(1, values_per_chunk // per)
    bad, low, high = 0, np.inf, -np.inf
    for s in range(0, len(x), step):
        xf = np.asarray(x[s : s + step]).astype(np.float32)
        finite = np.isfinite(xf)
        if not finite.all():
            bad += int((~finite).reshape(len(xf), -1).any(axis=1).sum())
        elif not bad and xf.size:
            low, high = min(low, xf.min()), max(high, xf.max())
    if bad:
        raise DataError(f"{bad} samples contain NaN or inf values")
    tol = 1e-4 * (hi - lo)
    if low < lo - tol or high > hi + tol:
        raise DataError(
            f"data values span [{low:.4g}, {high:.4g}], outside the model's range [{lo:g}, {hi:g}]",
            "rescale the data or set the model's range with --range",
        )
