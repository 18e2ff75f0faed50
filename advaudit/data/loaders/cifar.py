"""CIFAR-10's "python version" batches, read through a restricted unpickler that only rebuilds dicts,
lists, strings, bytes and numpy arrays (asked for by name: ``--data-format cifar10-batch``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, first_line

from .common import Raw, check_values

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
        raise DataError(f"{path.name} is not a CIFAR-10 python batch ({first_line(exc, 200)})") from None
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
