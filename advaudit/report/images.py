"""Old path of :mod:`advaudit.io.images` (the picture of adversarial examples), kept for existing imports."""

from ..io.images import CAPTION, CELL, example_grid
from ..io.images import to_uint8 as _to_uint8

__all__ = ["CAPTION", "CELL", "_to_uint8", "example_grid"]
