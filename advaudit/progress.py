"""The one progress convention of advaudit: a callback ``progress(label, done, total)``.

Long work (attack batches, scanner labels, training epochs, detector chunks, audit steps) reports
through it; the CLI passes a rich progress bar (one bar per label), Python callers pass their own
function or None for silence.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``: ``done`` of ``total`` units of the work called ``label``."""


def tick(progress: Progress | None, label: str, done: int, total: int) -> None:
    """Report to ``progress`` if there is one (the callers' ``if progress is not None`` in one place)."""
    if progress is not None:
        progress(label, done, total)


def bound(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    """``progress`` as the two-argument ``(done, total)`` callback of the one bar called ``label`` (data
    loading, purifying), or None without a ``progress``."""
    if progress is None:
        return None
    return lambda done, total: progress(label, done, total)


__all__ = ["Progress", "bound", "tick"]
