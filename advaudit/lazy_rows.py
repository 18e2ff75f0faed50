"""The marker of lazily converted row containers, below both ``models`` and ``data``.

``advaudit.data.views`` builds the lazy containers (rows converted to float32 when asked for);
``advaudit.models`` only needs to recognise them so that it walks them batch by batch instead of
converting the whole set.  The marker lives here so that models never import the data package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LazyMarker", "is_lazy"]


class LazyMarker:
    """Base of every lazy row container (``advaudit.data.views.LazyRows`` derives from it)."""


def is_lazy(x: Any) -> bool:
    """True for the lazy row containers (not for arrays or tensors)."""
    return isinstance(x, LazyMarker)
