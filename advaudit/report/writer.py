"""The common report envelope and atomic file writing."""

from __future__ import annotations

import json
import os
import platform
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import UsageError
from ..safeio import os_reason

SCHEMA = "advaudit.report/1"


def versions() -> dict[str, str]:
    """advaudit, Python, torch and numpy versions and the platform, as every report records them."""
    import numpy
    import torch

    return {
        "advaudit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def base_report(command: list[str] | str, seed: int | None) -> dict[str, Any]:
    """Keys every report starts with (``schema``, ``command``, ``seed``, ``meta``)."""
    return {
        "schema": SCHEMA,
        "command": command if isinstance(command, str) else " ".join(command),
        "seed": seed,
        "meta": {**versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }


def model_section(model: Any, search: bool = False) -> dict[str, Any]:
    """The ``model`` part of every report: what was audited, fingerprinted by sha256.

    ``search``: the report is of attacks, so it also says which precision they searched in."""
    section = {
        "path": str(model.path),
        "sha256": model.sha256,
        "format": model.format,
        "gradient_source": model.gradients.source if model.has_gradients else None,
        "gradients_note": model.gradients.note or None,
        "output_kind": model.output_kind,
        "num_classes": model.num_classes,
        "spec": model.spec.to_dict(),
    }
    details = getattr(model, "details", {})
    if details.get("logits_from"):
        section["logits_from"] = details["logits_from"]
    if (details.get("twin") or {}).get("straight_through"):
        section["straight_through"] = list(details["twin"]["straight_through"])
    if search:
        section["search_precision"] = model.search_precision
        section["search_precision_note"] = model.search_precision_note
    return section


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file.

    A file that cannot be written (a folder in the way, a read-only or full disk) is a one-line
    :class:`~advaudit.errors.UsageError` naming it; an existing file at ``path`` is then left as it was.
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
    return UsageError(f"cannot write {target}: {os_reason(exc)}", "give a file path in a folder you can write to")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, payload: Any) -> Path:
    text = json.dumps(payload, indent=2, default=_default) + "\n"
    return write_atomic(path, lambda p: p.write_text(text))


def _default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
