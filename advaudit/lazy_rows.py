"""The marker of lazily converted row containers, below both ``models`` and ``data``.

``advaudit.data.views`` builds the lazy containers (rows converted to float32 when asked for);
``advaudit.models`` only needs to recognise them so that it walks them batch by batch instead of
converting the whole set.  The marker lives here so that models never import the data package.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

__all__ = ["LazyMarker", "Rows", "is_lazy"]


class LazyMarker:
    """Base of every lazy row container (``advaudit.data.views.LazyRows`` derives from it): an array's
    ``shape`` and ``dtype``, its length, and rows by index or slice, converted when asked for."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError


def is_lazy(x: Any) -> bool:
    """True for the lazy row containers (not for arrays or tensors)."""
    return isinstance(x, LazyMarker)


Rows = Union[np.ndarray, LazyMarker]
"""Anything the batch-wise consumers take: a plain array or a lazy container of rows."""
