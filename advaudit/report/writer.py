"""The common report envelope (``schema``, ``command``, ``seed``, ``meta``, ``model``).

File writing lives in :mod:`advaudit.io`; ``write_atomic`` and ``write_json`` are re-exported here for old imports.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..io.files import write_atomic, write_json

SCHEMA = "advaudit.report/1"

__all__ = ["SCHEMA", "base_report", "model_section", "versions", "write_atomic", "write_json"]


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
