"""Crash-safe single commands: the checkpoint beside a report, and ``--resume``.

``advaudit attack``, ``scan-backdoor`` and ``detect evaluate`` cut their work into *units* and save
every finished unit at once, atomically, in a folder beside the report (``--report out/r.json`` ->
``out/r.json.partial/``):

* ``checkpoint.json``, the manifest: ``schema`` (:data:`SCHEMA`), ``command``, ``fingerprint`` (the
  sha256 of ``inputs``), ``inputs`` (what determines the result: advaudit version, model sha256 and
  input spec, data path and the sha256 of the selected, model-ready arrays, every option that
  changes results, the seed) and ``units``: one entry per finished unit with its ``key``, a
  human-readable ``label``, ``count`` (how many units it stands for), scalar ``meta`` and the
  ``file`` that holds its arrays;
* ``u-NNNNNN.npz``, one file per unit (numpy arrays only, read with ``allow_pickle=False``).

A unit's file is written first, then the manifest (both through
:func:`~advaudit.report.writer.write_atomic`), so a kill at any moment leaves the last complete
manifest and files it names; anything else in the folder (a half-written temporary file, a unit file
whose manifest entry never got written) is ignored and removed on the next start.

Units: ``attack`` one attack at one eps (a minimum-norm attack: all eps at once), with every
per-sample result the runner needs to continue a cascade exactly as an uninterrupted run would
(:class:`~advaudit.checkpoint.units.AttackUnits`); ``scan-backdoor`` one finished scanner, and inside
Neural Cleanse its whole search state each time a label finishes
(:class:`~advaudit.backdoor.units.ScanUnits`); ``detect evaluate`` one chunk of
:data:`~advaudit.detect.lcr.CHUNK` inputs of one stage (calibration LCR, LCR per set, SPRT per set;
:class:`~advaudit.checkpoint.units.ChunkUnits`).  Work is seeded per unit, never from a running
generator shared between units (Neural Cleanse's generator state is part of its saved state), so a resumed run equals an
uninterrupted one apart from timing fields (:func:`comparable`).

Sharded runs: the checkpoint does not depend on the worker count (neither do the results), so a run
may be resumed with another ``--workers``; only rank 0 writes, and every rank reads the same snapshot
of the manifest taken when the checkpoint was opened (before any collective), so all ranks skip the
same units.

Test hook: with ``ADVAUDIT_CHECKPOINT_HOLD=N`` in the environment, a process that has just made its
``N``-th save waits there until a signal ends it (``ADVAUDIT_CHECKPOINT_HOLD=TEXT``: after saving a
unit whose key contains ``TEXT``), so tests can kill a command at a known point without racing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from ..lazy_rows import Rows

SCHEMA = "advaudit.checkpoint/1"
MANIFEST = "checkpoint.json"
SUFFIX = ".partial"
HOLD_ENV = "ADVAUDIT_CHECKPOINT_HOLD"
_UNIT_FILE = re.compile(r"u-\d{6}\.npz")

VOLATILE = frozenset({"meta", "time_s", "ms_per_input", "ms_per_input_adversarial", "ms_per_input_normal", "created"})
"""Report keys that differ between two runs with the same inputs: ``meta`` (creation time, versions,
``resumed_units``) and wall-clock figures.  Everything else of a resumed report equals an
uninterrupted run's byte for byte."""

NOT_RESULTS = frozenset({
    # outputs, gates and presentation: they do not change what is computed
    "report_path", "fmt", "save_adv", "examples", "fail_under", "triggers_dir", "fail_on_backdoor", "roc_path",
    # how the work is spread and resumed (results are identical for any worker count)
    "workers", "resume",
    # paths whose content is fingerprinted instead (model sha256, model spec, data arrays, files)
    "model", "spec_file", "labels_path", "data_path", "clean_path", "adv_path", "calibration_path", "inputs_path",
    "max_model_size", "max_input_pixels",
})
"""Options left out of the fingerprint; every other option of the command is in it."""


def comparable(report: Any) -> Any:
    """``report`` without :data:`VOLATILE` keys (also as the last part of a dotted metric name such as
    ``detect.ms_per_input``), at any depth: what must equal an uninterrupted run's.  The same rule as
    :func:`advaudit.audit.comparable`."""
    if isinstance(report, dict):
        return {k: comparable(v) for k, v in report.items() if str(k).rsplit(".", 1)[-1] not in VOLATILE}
    if isinstance(report, list):
        return [comparable(v) for v in report]
    return report


def checkpoint_dir(report_path: str | Path) -> Path:
    """Where the checkpoint of the run writing ``report_path`` lives: ``<report>.partial/``."""
    p = Path(report_path)
    return p.with_name(p.name + SUFFIX)


def array_digest(*arrays: Rows | None, block: int = 1024) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes, read ``block`` rows at a time (memory-mapped
    arrays are never loaded whole)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        h.update(f"{a.dtype.str}{tuple(a.shape)};".encode())
        if a.ndim == 0:
            h.update(np.ascontiguousarray(a).tobytes())
            continue
        for s in range(0, len(a), block):
            h.update(np.ascontiguousarray(a[s : s + block]).tobytes())
    return h.hexdigest()




def options_for_fingerprint(kw: dict[str, Any]) -> dict[str, Any]:
    """The command's options minus :data:`NOT_RESULTS`, JSON-ready; ``cuda:K`` counts as ``cuda``
    (a rank's own GPU does not change results)."""
    out: dict[str, Any] = {}
    for k, v in sorted(kw.items()):
        if k in NOT_RESULTS:
            continue
        if k == "device" and isinstance(v, str):
            v = v.split(":", 1)[0]
        out[k] = json.loads(json.dumps(v, default=str))
    return out


def model_inputs(model: Any) -> dict[str, Any]:
    """The model's part of a fingerprint: file sha256, input spec, search precision, device type."""
    return {
        "sha256": model.sha256,
        "spec": model.spec.to_dict(),
        "search_precision": getattr(model, "search_precision", None),
        "device": str(model.device).split(":", 1)[0],
    }


def data_inputs(path: str | Path | None, *arrays: Rows | None) -> dict[str, Any] | None:
    """A data set's part of a fingerprint: its resolved path and the sha256 of the selected arrays."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": array_digest(*arrays)}


def make_inputs(command: str, model: Any, kw: dict[str, Any], seed: int, **parts: Any) -> dict[str, Any]:
    """Everything a command's result depends on (the payload whose sha256 is the fingerprint)."""
    return {
        "command": command, "advaudit": __version__, "seed": seed, "model": model_inputs(model),
        **parts, "options": options_for_fingerprint(kw),
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two fingerprint payloads."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder`` (None when there is none); a damaged one is a one-line error."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"checkpoint {path} is damaged ({exc})", "remove it, or run without --resume") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("units"), list):
        raise DataError(f"{path} is not an advaudit checkpoint ({SCHEMA})", "remove it, or run without --resume")
    return doc


def kept_units(report_path: str | Path | None) -> int:
    """How many finished units the checkpoint beside ``report_path`` holds (0 when none)."""
    if not report_path:
        return 0
    try:
        doc = read_manifest(checkpoint_dir(report_path))
    except DataError:
        return 0
    return sum(int(u.get("count", 1)) for u in doc["units"]) if doc else 0


class Checkpoint:
    """The finished units of one run, kept in ``<report>.partial/`` (see the module docstring).

    :meth:`open` checks a previous checkpoint against this run's inputs; :meth:`get` answers from
    the snapshot taken then (units this run saves are not read back); :meth:`put` saves a unit
    (rank 0 only: ``writer``); :meth:`finish` removes the folder after a successful run."""

    def __init__(self, folder: Path, command: str, inputs: dict[str, Any], *, writer: bool = True) -> None:
        self.folder = folder
        self.command = command
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True, default=str))  # as the manifest keeps it
        self.fingerprint = fingerprint(self.inputs)
        self.writer = writer
        self.snapshot: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.reused: set[str] = set()
        self.saves = 0
        self._next = 0

    @classmethod
    def open(
        cls, report_path: str | Path, command: str, inputs: dict[str, Any], *, resume: bool,
        writer: bool = True, log: Callable[[str], None] = lambda message: None,
    ) -> Checkpoint:
        """This run's checkpoint.  ``resume``: continue the one beside the report (its fingerprint
        must match: else a one-line :class:`UsageError`), or start afresh when there is none;
        without ``resume`` an old checkpoint is discarded."""
        ckpt = cls(checkpoint_dir(report_path), command, inputs, writer=writer)
        doc = read_manifest(ckpt.folder) if resume else None
        if resume and doc is None:
            log(f"no checkpoint at {ckpt.folder}: running from scratch")
        elif doc is not None:
            if doc.get("fingerprint") != ckpt.fingerprint:
                changed = _changed_keys(doc.get("inputs") or {}, ckpt.inputs) or ["fingerprint"]
                shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
                raise UsageError(
                    f"the checkpoint in {ckpt.folder} was made by a run with other inputs (changed: {shown})",
                    "resume with the same model, data and options, or run without --resume to start afresh",
                )
            units = [
                u for u in doc["units"]
                if isinstance(u, dict) and "key" in u and _UNIT_FILE.fullmatch(str(u.get("file")))
                and (ckpt.folder / str(u["file"])).is_file()
            ]
            ckpt.snapshot = {str(u["key"]): u for u in units}
            ckpt.entries = dict(ckpt.snapshot)
            ckpt._next = 1 + max((int(str(u["file"])[2:8]) for u in units), default=-1)
            log(f"resuming from {ckpt.folder}: {sum(int(u.get('count', 1)) for u in units)} finished unit(s)")
            if writer:
                ckpt._sweep()
        elif writer and ckpt.folder.exists():
            if (ckpt.folder / MANIFEST).is_file():
                log(f"discarding the checkpoint of an earlier run in {ckpt.folder} (add --resume to continue it)")
            ckpt._remove()
        return ckpt

    def for_rank(self, is_main: bool) -> Checkpoint:
        """This checkpoint as seen by one rank of a sharded run (only rank 0 writes)."""
        if is_main or not self.writer:
            return self
        other = Checkpoint.__new__(Checkpoint)
        other.__dict__.update(self.__dict__)
        other.writer = False
        return other

    @property
    def count(self) -> int:
        """Units this checkpoint holds now (saved before and during this run)."""
        return sum(int(u.get("count", 1)) for u in self.entries.values())

    @property
    def available(self) -> int:
        """Units an earlier run left for this one (the snapshot taken by :meth:`open`)."""
        return sum(int(u.get("count", 1)) for u in self.snapshot.values())

    @property
    def resumed(self) -> int:
        """Units of the snapshot this run has used instead of computing them."""
        return sum(int(self.snapshot[k].get("count", 1)) for k in self.reused if k in self.snapshot)

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(meta, arrays)`` of a unit saved by an earlier run, or None."""
        entry = self.snapshot.get(key)
        if entry is None:
            return None
        try:
            with np.load(self.folder / entry["file"], allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"checkpoint unit {self.folder / entry['file']} is damaged ({exc})",
                            "run without --resume to start afresh") from None
        self.reused.add(key)
        return dict(entry.get("meta") or {}), arrays

    def put(self, key: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], *, label: str = "",
            count: int = 1) -> None:
        """Save a finished unit (replacing an earlier one of the same key): its file, then the manifest."""
        if not self.writer:
            return
        from ..io import write_atomic

        name = f"u-{self._next:06d}.npz"
        self._next += 1

        def save(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        write_atomic(self.folder / name, save)
        old = self.entries.get(key)
        self.entries[key] = {"key": key, "label": label or key, "count": int(count), "file": name, "meta": meta}
        self._write_manifest()
        if old is not None and old["file"] != name:
            self._unlink_unless_snapshot(old["file"])
        self.saves += 1
        self._hold(key)

    def drop(self, key: str) -> None:
        """Forget a unit (its file goes once no snapshot refers to it)."""
        if not self.writer or key not in self.entries:
            return
        old = self.entries.pop(key)
        self._write_manifest()
        self._unlink_unless_snapshot(old["file"])

    def _unlink_unless_snapshot(self, name: str) -> None:
        """Remove a unit file no longer in the manifest, unless the snapshot (other ranks) may read it."""
        if not any(u["file"] == name for u in self.snapshot.values()):
            (self.folder / name).unlink(missing_ok=True)

    def finish(self) -> None:
        """The run succeeded: remove the checkpoint."""
        if self.writer:
            self._remove()

    def _remove(self) -> None:
        """Remove the checkpoint's files, then the folder if nothing else is in it."""
        if not self.folder.is_dir():
            return
        for p in self.folder.iterdir():
            if _ours(p):
                p.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # something not ours is in it: leave it
            pass

    def _write_manifest(self) -> None:
        from ..io import write_json

        write_json(self.folder / MANIFEST, {
            "schema": SCHEMA, "command": self.command, "fingerprint": self.fingerprint, "inputs": self.inputs,
            "units": list(self.entries.values()),
        })

    def _sweep(self) -> None:
        """Remove what no manifest entry names (leftovers of a kill in the middle of a write)."""
        keep = {MANIFEST, *(u["file"] for u in self.entries.values())}
        for p in self.folder.iterdir():
            if p.name not in keep and _ours(p):
                p.unlink(missing_ok=True)

    def _hold(self, key: str) -> None:
        """The test hook of the module docstring (:data:`HOLD_ENV`)."""
        hold = os.environ.get(HOLD_ENV)
        if hold and (self.saves >= int(hold) if hold.isdigit() else hold in key):
            while True:  # until a signal ends the process
                time.sleep(0.05)


def _ours(p: Path) -> bool:
    """A file the checkpoint writes: the manifest, a unit, or a temporary file of an atomic write."""
    name = p.name
    return p.is_file() and (
        name == MANIFEST or bool(_UNIT_FILE.fullmatch(name)) or (name.startswith(".") and name.endswith(".tmp"))
    )


__all__ = [
    "HOLD_ENV", "MANIFEST", "SCHEMA", "SUFFIX", "Checkpoint", "array_digest", "checkpoint_dir", "comparable",
    "data_inputs", "fingerprint", "kept_units", "make_inputs", "options_for_fingerprint",
]
