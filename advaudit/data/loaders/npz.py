"""The ``.npz`` reader: ``x`` / ``y`` (and optional class names) members, uncompressed members memory-mapped
after their headers are checked, never unpickled."""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from ...errors import DataError, first_line

from .common import Raw, check_values, shape_text

def read_npz(path: Path, max_values: int | None = None) -> Raw:
    """Arrays ``x``, ``y`` and ``class_names`` of an ``.npz``; never unpickled.

    An uncompressed (stored) ``x`` member is memory-mapped read-only at its offset inside the zip file
    (its ``.npy`` header parsed with :mod:`numpy.lib.format`), so nothing is read until rows are used;
    a compressed one is decoded into memory in its stored dtype.  ``max_values`` (see
    :func:`check_values`) is checked against each sample of ``x`` and against every member that is
    decoded, from the headers, before decoding."""
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle or a bare .npy array
        raise DataError(f"{path.name} is not a readable .npz file (not a zip archive)", "save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if "x" not in keys:
                raise DataError(f"{path.name} has no array 'x' (found: {', '.join(sorted(keys)) or 'none'})",
                                "store images as x and labels as y")
            x = _npz_member(path, f, "x", max_values)
            y = _npz_member(path, f, "y", max_values) if "y" in keys else None
            names = None
            if "class_names" in keys:
                names = [str(n) for n in _npz_member(path, f, "class_names", max_values)]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path.name} stores Python objects; advaudit reads only plain numeric arrays") from None
        raise DataError(f"cannot read {path.name}: {first_line(exc)}") from None
    except MemoryError:  # a damaged .npy header can declare any shape
        raise DataError(f"{path.name} declares arrays too large to load") from None
    except Exception as exc:  # damage surfaces as many types (BadZipFile, zlib.error, EOFError, TokenError, ...)
        text = first_line(exc, 200)
        raise DataError(f"{path.name} is not a readable .npz file ({text})") from None
    return x, y, names


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at ``fp``'s position."""
    version = npy_format.read_magic(fp)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fp)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (30 bytes)


def _npz_member(path: Path, f: Any, key: str, max_values: int | None) -> np.ndarray:
    """Member ``key`` of the open npz ``f``: checked against ``max_values`` from its header, then
    memory-mapped (``x`` stored uncompressed) or decoded (anything else)."""
    zf: zipfile.ZipFile = f.zip
    name = key + ".npy" if key + ".npy" in zf.namelist() else key
    info = zf.getinfo(name)
    with zf.open(info) as member:
        try:
            shape, fortran, dtype = _npy_header(member)
        except ValueError:
            return f[key]  # not an .npy member: np.load says what it is (or returns its bytes)
    if dtype.hasobject:
        raise DataError(f"{path.name} stores Python objects; advaudit reads only plain numeric arrays")
    count = math.prod(shape)
    stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
    if key == "x" and len(shape) >= 2:
        check_values(path.name, "one sample of x", math.prod(shape[1:]), max_values)
    if key != "x" or not stored:
        check_values(path.name, f"array {key!r} {shape_text(shape)}", count, max_values)
    if key == "x" and stored and count > 0 and dtype.itemsize > 0:
        mapped = _map_stored(path, info, shape, fortran, dtype)
        if mapped is not None:
            return mapped
    return f[key]


def _map_stored(
    path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], fortran: bool, dtype: np.dtype
) -> np.ndarray | None:
    """A read-only memory map of a stored (uncompressed) ``.npy`` member; None if the member's
    header does not describe what the file holds (np.load then reports it)."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = _LOCAL_HEADER.unpack(local)[-2:]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        raw.seek(start)
        if _npy_header(raw) != (shape, fortran, dtype):
            return None
        offset = raw.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if offset - start + nbytes > info.file_size or offset + nbytes > path.stat().st_size:
        raise DataError(f"{path.name} is truncated: x has shape {shape_text(shape)}, the file holds fewer values")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
