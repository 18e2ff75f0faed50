"""The backdoor scan's resumable units over a :class:`~advaudit.checkpoint.Checkpoint`: each finished
scanner's :class:`~advaudit.backdoor.base.ScanResult`, and a scanner's search state while it runs.

They live next to the scanners (not in :mod:`advaudit.checkpoint`) because rebuilding a result needs
the scanner's result types; the checkpoint store only keeps arrays and scalar meta.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from ..checkpoint import Checkpoint
from ..io.files import json_default
from .base import ClassEvidence, ScanResult

__all__ = ["ScanUnits", "SearchState"]


class SearchState:
    """One scanner's resumable search state (:class:`~advaudit.backdoor.base.SearchStore`)."""

    def __init__(self, checkpoint: Checkpoint, method: str) -> None:
        self.checkpoint, self.key = checkpoint, f"{method}/search"

    def load(self) -> dict[str, np.ndarray] | None:
        hit = self.checkpoint.get(self.key)
        return None if hit is None else hit[1]

    def save(self, arrays: dict[str, np.ndarray], finished: int, total: int) -> None:
        method = self.key.split("/", 1)[0]
        self.checkpoint.put(self.key, {"finished": finished, "total": total}, arrays,
                            label=f"{method}: {finished}/{total} labels finished", count=finished)


class ScanUnits:
    """The backdoor scan's unit store (``scan_model(..., units=)``): finished scanners' results, and
    each scanner's search state while it runs."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint

    def load(self, method: str) -> ScanResult | None:
        hit = self.checkpoint.get(f"{method}/result")
        if hit is None:
            return None
        meta, a = hit
        return ScanResult(
            method=meta["method"], verdict=meta["verdict"], suspected_targets=list(meta["suspected_targets"]),
            classes=[ClassEvidence(**c) for c in meta["classes"]], params=meta["params"], evidence=meta["evidence"],
            time_s=float(meta["time_s"]), masks=a.get("masks"), patterns=a.get("patterns"),
        )

    def save(self, result: ScanResult) -> None:
        meta = {
            "method": result.method, "verdict": result.verdict, "suspected_targets": result.suspected_targets,
            "classes": [asdict(c) for c in result.classes], "params": result.params, "evidence": result.evidence,
            "time_s": result.time_s,
        }
        meta = json.loads(json.dumps(meta, default=json_default))  # what the report will hold, exactly
        arrays = {k: v for k, v in (("masks", result.masks), ("patterns", result.patterns)) if v is not None}
        self.checkpoint.put(f"{result.method}/result", meta, arrays, label=f"{result.method}: done")
        self.checkpoint.drop(f"{result.method}/search")

    def search(self, method: str) -> SearchState:
        return SearchState(self.checkpoint, method)


