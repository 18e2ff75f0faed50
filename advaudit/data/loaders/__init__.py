"""Readers for the data formats advaudit accepts.

Each reader returns raw arrays ``(x, y, class_names)``: ``x`` as stored (uint8 or float), ``y`` int64
labels or ``None``.  None of them unpickles user files, with one exception the user must ask for by
name: CIFAR-10's own "python version" batches (``--data-format cifar10-batch``), read through a
restricted unpickler that only rebuilds dicts, lists, strings, bytes and numpy arrays.

One module per format (:mod:`.npz`, :mod:`.idx`, :mod:`.cifar`, :mod:`.images`) over :mod:`.common`;
this package re-exports their public names.
"""

from __future__ import annotations

from .cifar import read_cifar10_batch
from .common import DEFAULT_MAX_INPUT_PIXELS, FORMATS, IMAGE_SUFFIXES, Raw, check_values, detect_format
from .idx import IDX_DTYPES, read_idx
from .images import LABELS_FROM_NAME, ImageFiles, list_image_folder, list_images, read_image_files
from .npz import read_npz

__all__ = [
    "DEFAULT_MAX_INPUT_PIXELS", "FORMATS", "IDX_DTYPES", "IMAGE_SUFFIXES", "LABELS_FROM_NAME", "ImageFiles", "Raw",
    "check_values", "detect_format", "list_image_folder", "list_images", "read_cifar10_batch", "read_idx",
    "read_image_files", "read_npz",
]
