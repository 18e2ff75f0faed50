"""Crash-safe single commands: the checkpoint beside a report, and ``--resume``.

:mod:`.store` holds the checkpoint folder (manifest, unit files, fingerprint of the inputs);
:mod:`.units` the attack runner's and ``detect evaluate``'s unit stores over it.  The backdoor scan's
units live with the scanners (:mod:`advaudit.backdoor.units`), so this package imports neither
``backdoor`` nor ``detect``.
"""

from __future__ import annotations

from .store import (
    HOLD_ENV, MANIFEST, SCHEMA, SUFFIX, NOT_RESULTS, VOLATILE, Checkpoint, array_digest, checkpoint_dir, comparable,
    data_inputs, fingerprint, kept_units, make_inputs, model_inputs, options_for_fingerprint,
)
from .units import AttackUnits, ChunkUnits, SavedCandidates, cached_map, chunk_key, register_chunk_decoder

__all__ = [
    "HOLD_ENV", "MANIFEST", "NOT_RESULTS", "SCHEMA", "SUFFIX", "VOLATILE", "AttackUnits", "Checkpoint", "ChunkUnits",
    "SavedCandidates", "array_digest", "cached_map", "checkpoint_dir", "chunk_key", "comparable", "data_inputs",
    "fingerprint", "kept_units", "make_inputs", "model_inputs", "options_for_fingerprint", "register_chunk_decoder",
]
