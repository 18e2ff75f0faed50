"""Where the attack runner keeps adversarial images: in a temporary file, not in memory.

An attack run needs the per-sample figures (labels, norms, success) of every sample, but the images
themselves only for ``--save-adv`` and ``--examples``.  10,000 CIFAR-10 candidates are 123 MB of
float32 per attack and eps; they go to an :class:`ImageSpool` (an anonymous temporary file, appended
to and read back row by row, so the page cache holds them, not the process), and
:class:`AdversarialImages` maps each sample to its spooled row or, where there is none, to its clean
input.  Reading ``images[rows]`` gives plain float32 arrays, equal to what the in-memory arrays held.
"""

from __future__ import annotations

import io
import tempfile
from typing import Any, cast

import numpy as np

from ..data.views import LazyRows, Rows

__all__ = ["AdversarialImages", "ImageSpool"]


class ImageSpool:
    """Append-only rows of one sample shape and dtype in an anonymous temporary file (deleted when
    closed or garbage-collected).  Pickling carries the rows themselves."""

    def __init__(self, sample_shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.sample_shape)) * self.dtype.itemsize
        self.count = 0
        self._file: io.BufferedRandom | None = None

    def __len__(self) -> int:
        return self.count

    def append(self, rows: np.ndarray) -> np.ndarray:
        """Write ``rows`` (N, *sample_shape) at the end; return their slots (int64)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.sample_shape:
            raise ValueError(f"spool rows have shape {self.sample_shape}, got {rows.shape[1:]}")
        slots = np.arange(self.count, self.count + len(rows), dtype=np.int64)
        if len(rows):
            if self._file is None:
                self._file = cast(io.BufferedRandom, tempfile.TemporaryFile(prefix="advaudit-adv-"))
            self._file.seek(self.count * self.row_bytes)
            self._file.write(np.ascontiguousarray(rows).data.cast("B"))
            self.count += len(rows)
        return slots

    def read(self, slots: np.ndarray) -> np.ndarray:
        """The rows at ``slots``, in that order (runs of consecutive slots are read at once)."""
        slots = np.asarray(slots, dtype=np.int64)
        out = np.empty((len(slots), *self.sample_shape), dtype=self.dtype)
        if not len(slots):
            return out
        if self._file is None or slots.min() < 0 or slots.max() >= self.count:
            raise IndexError(f"spool slots out of range (it holds {self.count} rows)")
        breaks = np.flatnonzero(np.diff(slots) != 1) + 1
        flat = out.reshape(len(slots), -1).view(np.uint8)
        for run in np.split(np.arange(len(slots)), breaks):
            first, n = int(slots[run[0]]), len(run)
            self._file.seek(first * self.row_bytes)
            view = flat[run[0] : run[0] + n].data.cast("B")
            if self._file.readinto(view) != n * self.row_bytes:
                raise OSError("the adversarial-example spool file is shorter than expected")
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sample_shape": self.sample_shape, "dtype": self.dtype.str, "rows": self.read(np.arange(self.count))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sample_shape"], np.dtype(state["dtype"]))  # type: ignore[misc]
        self.append(state["rows"])


class AdversarialImages(LazyRows):
    """One eps's images, one per sample: the adversarial example kept for it (in ``spool``) or, where
    none was kept, its clean input from ``clean``.  ``kept=False``: images were not kept at this eps
    (``run_attacks(keep_adversarial=...)``); reading a row that has an adversarial example is then an
    error instead of a silent clean image."""

    def __init__(self, clean: Rows, spool: ImageSpool | None, kept: bool = True) -> None:
        self.clean, self.spool, self.kept = clean, spool, kept and spool is not None
        self.slots = np.full(len(clean), -1, dtype=np.int64)
        self.missing = np.zeros(len(clean), dtype=bool)  # adversarial, but its image was not kept
        self.dtype = np.dtype(np.float32)
        self.shape = tuple(clean.shape)

    def put(self, rows: np.ndarray, images: np.ndarray) -> None:
        """Keep ``images`` as the rows ``rows`` (int indices)."""
        if not self.kept:
            self.missing[rows] = True
            return
        assert self.spool is not None
        self.slots[rows] = self.spool.append(images)
        self.missing[rows] = False

    def take(self, mask: np.ndarray, source: Any, block: int = 256) -> None:
        """Rows ``mask`` from ``source``: another :class:`AdversarialImages` on the same spool (its slots
        are shared, nothing is copied) or any array / array-like (read ``block`` rows at a time)."""
        rows = np.flatnonzero(mask)
        if not self.kept:
            self.missing[rows] = True
            return
        if isinstance(source, AdversarialImages) and source.spool is self.spool:
            if source.missing[rows].any() or (source.slots[rows] < 0).any():
                raise RuntimeError("internal error: an adversarial example to keep was not spooled")
            self.slots[rows] = source.slots[rows]
            self.missing[rows] = False
            return
        for s in range(0, len(rows), block):
            part = rows[s : s + block]
            self.put(part, source[part])

    def has_image(self) -> np.ndarray:
        """Per sample: whether an adversarial image is kept for it."""
        return self.slots >= 0

    def _get(self, rows: slice | np.ndarray) -> np.ndarray:
        idx = np.arange(len(self))[rows] if isinstance(rows, slice) else rows
        if self.missing[idx].any():
            raise RuntimeError(
                "the adversarial images at this eps were not kept; run the attacks with keep_adversarial='all' "
                "(or 'largest' for the largest eps)"
            )
        out = np.array(self.clean[rows], dtype=self.dtype, copy=True)
        slots = self.slots[idx]
        have = slots >= 0
        if have.any():
            assert self.spool is not None
            out[have] = self.spool.read(slots[have])
        return out
