"""Unit stores over a :class:`~advaudit.checkpoint.store.Checkpoint`: the attack runner's (attack, eps)
units and the per-chunk units of ``detect evaluate``.

The stores only hold numpy arrays and scalar meta.  A result type that is not a plain array (the
detector's ``Detections``) encodes itself (``to_unit()``) and registers its decoder here under a type
name (:func:`register_chunk_decoder`), so this package never imports the packages whose results it
keeps.  The backdoor scan's units live next to the scanners (:mod:`advaudit.backdoor.units`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

import numpy as np

from ..data.views import LazyRows
from .store import Checkpoint

if TYPE_CHECKING:
    from ..attacks.runner import AttackUnit
    from ..distributed import Shard

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "AttackUnits", "ChunkUnits", "SavedCandidates", "UnitValue", "cached_map", "chunk_key", "register_chunk_decoder",
]


# --- attack: one unit per attack and eps ---------------------------------------------------------




def _changed_rows(a: Any, b: Any, block: int = 256) -> np.ndarray:
    """Rows of ``a`` whose bytes differ from ``b``'s (bit-exact: -0.0 and NaN payloads count)."""
    out = np.zeros(len(a), dtype=bool)
    for s in range(0, len(a), block):
        x = np.ascontiguousarray(a[s : s + block]).view(np.uint8).reshape(min(block, len(a) - s), -1)
        y = np.ascontiguousarray(b[s : s + block]).view(np.uint8).reshape(min(block, len(a) - s), -1)
        out[s : s + block] = (x != y).any(axis=1)
    return out


class SavedCandidates(LazyRows):
    """A unit's candidates read back: the clean inputs ``x`` with the saved rows in place, indexed
    like an array (``[rows]``, ``[mask]``, ``[s:e]``) without converting or copying all of ``x``."""

    def __init__(self, x: Any, rows: np.ndarray, values: np.ndarray) -> None:
        self.x, self.values = x, values
        self.shape = tuple(x.shape)
        self.dtype = np.dtype(np.float32)
        self.slot = np.full(len(x), -1, dtype=np.int64)
        self.slot[rows] = np.arange(len(rows))

    def has_image(self) -> np.ndarray:
        """Per sample: whether a candidate other than the clean input is held."""
        return self.slot >= 0

    def _get(self, rows: slice | np.ndarray) -> np.ndarray:
        out = np.array(self.x[rows], dtype=self.dtype, copy=True)
        slots = self.slot[rows]
        have = slots >= 0
        out[have] = self.values[slots[have]]
        return out


class AttackUnits:
    """The attack runner's unit store (``run_attacks(..., units=)``): one (attack, eps) unit per
    entry, holding the candidates the runner kept (the runner's
    :class:`~advaudit.attacks.store.AdversarialImages`; for a plain array, the rows that differ from
    the clean inputs), the runtime's labels and log-probabilities, success, norms, queries and
    twin-only rejections: everything the runner reads of a unit, so a replay is exact."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint

    def load(self, key: str, x: Any) -> AttackUnit | None:
        from ..attacks.runner import AttackUnit
        from ..attacks.verify import Verified

        hit = self.checkpoint.get(key)
        if hit is None:
            return None
        meta, a = hit
        x_adv = SavedCandidates(x, a["rows"], a["x_rows"])
        ver = Verified(x_adv, a["adv_labels"], a["adv_log_probs"], a["success"], a["linf"], a["l2"])
        return AttackUnit(ver, a["queries"], a["rejected"], float(meta["time_s"]))

    def save(self, key: str, unit: AttackUnit, x: Any) -> None:
        v = unit.verified
        held = getattr(v.x_adv, "has_image", None)  # the runner's AdversarialImages, or SavedCandidates
        rows = np.flatnonzero(held() if held is not None else _changed_rows(v.x_adv, x))
        arrays: dict[str, np.ndarray] = {
            "rows": rows, "x_rows": np.asarray(v.x_adv[rows], dtype=np.float32), "adv_labels": v.adv_labels,
            "adv_log_probs": v.adv_log_probs, "success": v.success, "linf": v.linf, "l2": v.l2,
            "queries": unit.queries, "rejected": unit.rejected,
        }
        self.checkpoint.put(key, {"time_s": unit.time_s}, arrays, label=key)


# --- detect evaluate: one unit per chunk of inputs and stage --------------------------------------


class UnitValue(Protocol):
    """A chunk result other than a plain array: it encodes itself as scalar meta and arrays."""

    def to_unit(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``; ``meta["type"]`` names the decoder registered for it."""


_DECODERS: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray]], Any]] = {}


def register_chunk_decoder(type_name: str, decode: Callable[[dict[str, Any], dict[str, np.ndarray]], Any]) -> None:
    """Let :class:`ChunkUnits` rebuild units whose meta ``type`` is ``type_name`` with ``decode(meta, arrays)``
    (called by the module that defines the result type, when it is imported)."""
    _DECODERS[type_name] = decode


class ChunkUnits:
    """Per-chunk results of ``detect evaluate``: plain arrays (LCR) or :class:`UnitValue` results
    (SPRT ``Detections``)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint

    def has(self, key: str) -> bool:
        return key in self.checkpoint.entries

    def get(self, key: str) -> Any | None:
        hit = self.checkpoint.get(key)
        if hit is None:
            return None
        meta, a = hit
        if meta["type"] == "array":
            return a["value"]
        return _DECODERS[meta["type"]](meta, a)

    def put(self, key: str, value: Any) -> None:
        label = " ".join(str(part) for part in json.loads(key))
        if isinstance(value, np.ndarray):
            self.checkpoint.put(key, {"type": "array"}, {"value": value}, label=label)
            return
        meta, arrays = value.to_unit()
        self.checkpoint.put(key, meta, arrays, label=label)


def chunk_key(*parts: Any) -> str:
    """The key of one chunk unit (JSON, so that any set name stays unambiguous)."""
    return json.dumps(list(parts))


def cached_map(shard: Shard, fn: Callable[[T], R], items: Sequence[T], keys: Sequence[str],
               units: ChunkUnits | None) -> list[R]:
    """``shard.map(fn, items)``, reusing the units an earlier run saved and saving new ones: rank 0
    saves its own chunks as they finish, the other ranks' once they are gathered."""
    if units is None:
        return shard.map(fn, items)
    store = units

    def one(i: int) -> R:
        hit = store.get(keys[i])
        if hit is not None:
            return hit
        value = fn(items[i])
        if shard.is_main:
            store.put(keys[i], value)
        return value

    out = shard.map(one, list(range(len(items))))
    if shard.world > 1 and shard.is_main:
        for key, value in zip(keys, out):
            if not store.has(key):
                store.put(key, value)
    return out
