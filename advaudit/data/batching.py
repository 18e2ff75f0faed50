"""Default batch sizes that follow the input size.

A batch of 256 MNIST or CIFAR-10 images is 0.2 or 0.8 million input values; 256 ImageNet images
(3x224x224) are 38.5 million, and the activations an attack keeps for its backward pass grow with
them.  When the user gives no ``--batch-size``, :func:`default_batch_size` keeps a command's usual
default ``base`` for every input of up to :data:`VALUES_PER_BATCH` / ``base`` values (so MNIST,
CIFAR-10, GTSRB, ... run exactly as before) and otherwise takes the largest power of two that keeps a
batch within :data:`VALUES_PER_BATCH` input values: 32 for 3x224x224, 16 for 3x299x299.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["VALUES_PER_BATCH", "AutoBatchSize", "default_batch_size", "resolve_batch_size"]

VALUES_PER_BATCH = 2**23
"""Input values per default batch (32 MiB of float32): 256 samples of up to 32768 values (3x104x104)."""


class AutoBatchSize(int):
    """The ``--batch-size`` default (an int, ``base``), not chosen by the user: commands replace it with
    :func:`default_batch_size` once the input shape is known; code that does not still gets ``base``."""

    def __repr__(self) -> str:
        return f"AutoBatchSize({int(self)})"


def default_batch_size(input_shape: Sequence[int] | None, base: int = 256) -> int:
    """``base``, or fewer for large inputs: the largest power of two ``b <= base`` with
    ``b * prod(input_shape) <= VALUES_PER_BATCH`` (at least 1).  Unknown shapes keep ``base``.

    >>> default_batch_size((1, 28, 28)), default_batch_size((3, 32, 32)), default_batch_size((3, 224, 224))
    (256, 256, 32)
    >>> default_batch_size((3, 224, 224), base=16), default_batch_size((3, 1024, 1024))
    (16, 2)
    """
    base = int(base)
    if base < 1:
        raise ValueError(f"base batch size must be positive, got {base}")
    if not input_shape:
        return base
    values = math.prod(int(s) for s in input_shape)
    if values <= 0 or values * base <= VALUES_PER_BATCH:
        return base
    fit = max(1, VALUES_PER_BATCH // values)
    return min(base, 1 << (fit.bit_length() - 1))


def resolve_batch_size(batch_size: int | None, input_shape: Sequence[int] | None, base: int | None = None) -> int:
    """The batch size to use: a user's choice as given; the default (None or :class:`AutoBatchSize`)
    through :func:`default_batch_size` with ``base`` (default: the default's own value, else 256)."""
    if batch_size is not None and not isinstance(batch_size, AutoBatchSize):
        return int(batch_size)
    if base is None:
        base = int(batch_size) if batch_size is not None else 256
    return default_batch_size(input_shape, base)
