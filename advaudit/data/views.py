"""Lazily converted data: model-ready float32 batches cut from samples kept as stored.

A data set of 10,000 CIFAR-10 images is 30 MB as uint8 but 123 MB as float32, and ImageNet-size
inputs make the difference gigabytes.  :func:`advaudit.data.prepare` therefore keeps the samples as
they were read (uint8, float, or a memory-mapped ``.npz`` member) and hands out a :class:`FloatView`:
an ``(N, C, H, W)`` float32 array-like whose rows are converted when they are asked for,
``view[s:e]``, ``view[index_array]``, ``view[bool_mask]``.  Consumers that work batch by batch (the
attack runner, detection, clean accuracy) never hold more than a batch of float32 values;
``np.asarray(view)`` still gives the whole array (counted in :attr:`ViewStats.materialised`).

The conversion of a batch is the same elementwise arithmetic as converting the whole set at once, so
every row is bit-identical to the eager conversion.

:func:`take_rows` and :func:`concat_rows` select and join rows without converting them, for plain
arrays and views alike; :func:`iter_batches` walks any of them batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from ..lazy_rows import LazyMarker, is_lazy

__all__ = [
    "ConcatRows", "FloatView", "LazyRows", "Rows", "ViewStats", "concat_rows", "is_lazy", "iter_batches", "row_index",
    "take_rows",
]


@dataclass
class ViewStats:
    """What a view (and every view taken from it) has converted: for tests and diagnostics."""

    calls: int = 0
    rows: int = 0
    largest: int = 0  # the most rows converted by one call
    materialised: int = 0  # whole-array conversions (np.asarray(view))

    def record(self, n: int) -> None:
        self.calls += 1
        self.rows += n
        self.largest = max(self.largest, n)


def row_index(key: Any, n: int) -> np.ndarray:
    """An index array (int64) for a first-axis key that is not an int or a slice."""
    idx = np.asarray(key)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean index of shape {idx.shape} does not match {n} rows")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
        raise IndexError(f"rows can be selected by an int, a slice, an int array or a boolean mask, not {key!r}")
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"row index out of range for {n} rows")
    return np.where(idx < 0, idx + n, idx).astype(np.int64, copy=False)


class LazyRows(LazyMarker):
    """Shared first-axis indexing of the lazy row containers (``int``, slice, index array, mask, tuple)."""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array once converted (nothing is allocated to tell)."""
        return self.size * self.dtype.itemsize

    def _get(self, rows: slice | np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return self[slice(None)]
            first, rest = key[0], key[1:]
            out = self[first]
            return out[rest] if isinstance(first, (int, np.integer)) else out[(slice(None),) + tuple(rest)]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if int(key) < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {int(key)} out of range for {n} rows")
            return self._get(slice(i, i + 1))[0]
        if isinstance(key, slice):
            return self._get(slice(*key.indices(n)))
        if key is Ellipsis:
            return self._get(slice(0, n))
        return self._get(row_index(key, n))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.materialise()
        return out if dtype is None else out.astype(dtype, copy=False)

    def materialise(self) -> np.ndarray:
        """The whole array (converted batch by batch into one allocation)."""
        out = np.empty(self.shape, dtype=self.dtype)
        step = _rows_per_batch(self.shape)
        for s in range(0, len(self), step):
            out[s : s + step] = self._get(slice(s, min(s + step, len(self))))
        return out

    def min(self) -> Any:
        """Smallest value, read batch by batch."""
        return min(b.min() for _, b in iter_batches(self, _rows_per_batch(self.shape)))

    def max(self) -> Any:
        """Largest value, read batch by batch."""
        return max(b.max() for _, b in iter_batches(self, _rows_per_batch(self.shape)))

    def copy(self) -> np.ndarray:
        """The whole array, as a new ndarray."""
        return self.materialise()

    def astype(self, dtype: Any) -> np.ndarray:
        """The whole array as ``dtype`` (a new ndarray)."""
        return self.materialise().astype(dtype)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def _rows_per_batch(shape: Sequence[int], values: int = 2**22) -> int:
    per = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return max(1, values // max(per, 1))


class FloatView(LazyRows):
    """Rows of ``source`` (stored values, e.g. uint8 NCHW or a memory map), converted on access.

    ``convert`` maps a batch of stored rows to model-ready rows (it must work row by row, so that a
    batch converts exactly as the whole set would); ``rows`` selects and orders rows of ``source``
    (None: all).  The dtype and sample shape are those ``convert`` gives."""

    def __init__(
        self,
        source: Any,
        convert: Callable[[np.ndarray], np.ndarray],
        rows: np.ndarray | None = None,
        stats: ViewStats | None = None,
    ) -> None:
        self.source, self.convert, self.rows = source, convert, rows
        self.stats = stats if stats is not None else ViewStats()
        probe = convert(source[:0])
        self.dtype = probe.dtype
        n = len(source) if rows is None else len(rows)
        self.shape = (n, *probe.shape[1:])

    def _get(self, rows: slice | np.ndarray) -> np.ndarray:
        if self.rows is not None:
            rows = self.rows[rows]
        raw = self.source[rows]
        self.stats.record(len(raw))
        return self.convert(np.asarray(raw))

    def subset(self, key: Any) -> FloatView:
        """The rows ``key`` selects (slice, index array or mask), still unconverted."""
        base = np.arange(len(self.source)) if self.rows is None else self.rows
        n = len(self)
        pick = base[slice(*key.indices(n))] if isinstance(key, slice) else base[row_index(key, n)]
        return FloatView(self.source, self.convert, pick, self.stats)

    def materialise(self) -> np.ndarray:
        self.stats.materialised += 1
        return super().materialise()


class ConcatRows(LazyRows):
    """Row-wise concatenation of arrays and lazy views (same sample shape), read part by part."""

    def __init__(self, parts: Sequence[Any]) -> None:
        if not parts:
            raise ValueError("ConcatRows needs at least one part")
        self.parts = list(parts)
        shapes = {tuple(p.shape[1:]) for p in self.parts}
        if len(shapes) != 1:
            raise ValueError(f"cannot concatenate rows of shapes {sorted(shapes)}")
        self.dtype = np.result_type(*[p.dtype for p in self.parts])
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), *shapes.pop())

    def _get(self, rows: slice | np.ndarray) -> np.ndarray:
        idx = np.arange(len(self))[rows] if isinstance(rows, slice) else rows
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            local = idx[sel] - self.starts[k]
            if isinstance(rows, slice):  # a contiguous run of one part: slice it (no fancy copy of a memmap)
                out[sel] = self.parts[k][int(local[0]) : int(local[-1]) + 1]
            else:
                out[sel] = self.parts[k][local]
        return out

    def subset(self, key: Any) -> Rows:
        n = len(self)
        idx = np.arange(n)[slice(*key.indices(n))] if isinstance(key, slice) else row_index(key, n)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        if len(idx) and np.all(np.diff(which) >= 0):  # ascending parts: keep it lazy part by part
            parts = [take_rows(self.parts[k], idx[which == k] - self.starts[k]) for k in np.unique(which)]
            return parts[0] if len(parts) == 1 else ConcatRows(parts)
        return self[idx]


Rows = Union[np.ndarray, FloatView, ConcatRows]
"""Anything the batch-wise consumers take: a plain array or one of these lazy views (a narrower
:data:`advaudit.lazy_rows.Rows`, which the models take)."""


def take_rows(x: Any, key: Any) -> Any:
    """``x[key]`` (rows), without converting anything when ``x`` is lazy."""
    if isinstance(x, (FloatView, ConcatRows)):
        return x.subset(key)
    return x[key]


def concat_rows(parts: Sequence[Any]) -> Any:
    """``np.concatenate(parts)`` for arrays; a lazy :class:`ConcatRows` when any part is lazy."""
    parts = list(parts)
    if not any(is_lazy(p) for p in parts):
        return np.concatenate(parts)
    parts = [p for p in parts if len(p)] or parts[:1]
    return parts[0] if len(parts) == 1 else ConcatRows(parts)


def iter_batches(x: Any, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, x[start:start + size])`` over all rows of an array or a lazy view."""
    for s in range(0, len(x), max(1, int(size))):
        yield s, x[s : s + size]
