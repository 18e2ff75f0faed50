"""The IDX reader (MNIST's format, optionally gzipped), with labels from a second IDX file."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError

from .common import Raw, check_values, shape_text

IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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
            check_values(path.name, f"the array {shape_text(shape)}", count, max_values)
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
