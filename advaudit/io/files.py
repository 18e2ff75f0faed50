"""Atomic file writing: any file, JSON documents and ``.npz`` archives (torch-free)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np
from numpy.lib import format as npy_format

from ..errors import UsageError
from ..safeio import os_reason


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file.

    ``write(tmp_path)`` writes the content (what it returns is ignored).  A file that cannot be written
    (a folder in the way, a read-only or full disk) is a one-line :class:`~advaudit.errors.UsageError`
    naming it; an existing file at ``path`` is then left as it was.
    An existing FIFO or device (``--out /dev/stdout``) is written to directly: renaming a file over it
    would replace the device node itself.
    """
    target = Path(path)
    try:
        info = os.stat(target)  # follows symlinks: /dev/stdout -> the process's stdout
    except (OSError, ValueError):
        info = None
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        try:
            write(target)
        except OSError as exc:
            raise _unwritable(target, exc) from None
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(21, "is a folder")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, target)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def _unwritable(target: Path, exc: OSError) -> UsageError:
    """The one-line error for a file that cannot be written, with what to do about it."""
    return UsageError(f"cannot write {target}: {os_reason(exc)}", "give a file path in a folder you can write to")


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented JSON plus a newline, atomically; numpy scalars/arrays and paths are converted."""
    text = json.dumps(payload, indent=2, default=json_default) + "\n"
    return write_atomic(path, lambda p: p.write_text(text))


def json_default(obj: Any) -> Any:
    """JSON for the non-JSON values reports hold: numpy scalars and arrays, and paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@runtime_checkable
class ArrayBlocks(Protocol):
    """An array too large to hold at once: its ``shape``, ``dtype`` and its rows in C order, block by block."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def blocks(self) -> Iterator[np.ndarray]:
        """The array's rows in order, as contiguous arrays of ``dtype``."""
        ...


def write_npz_members(f: IO[bytes] | str | Path, arrays: Mapping[str, Any], *, compressed: bool = True) -> None:
    """What ``np.savez_compressed(f, **arrays)`` (``np.savez`` when not ``compressed``) writes: the same members,
    headers and values, with :class:`ArrayBlocks` entries streamed block by block instead of held in memory."""
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, mode="w", compression=mode, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                if isinstance(value, ArrayBlocks):
                    header = {"descr": npy_format.dtype_to_descr(value.dtype), "fortran_order": False,
                              "shape": value.shape}
                    npy_format.write_array_header_1_0(member, header)
                    for block in value.blocks():
                        member.write(block.tobytes())
                else:
                    npy_format.write_array(member, np.asanyarray(value), allow_pickle=False)


def write_npz(path: str | Path, arrays: Mapping[str, Any], *, compressed: bool = True) -> Path:
    """``arrays`` as an ``.npz`` archive at ``path``, atomically (see :func:`write_npz_members`)."""

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            write_npz_members(f, arrays, compressed=compressed)

    return write_atomic(path, write)
