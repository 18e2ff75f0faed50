"""Drawing mutations and counting label changes: the Label Change Rate of inputs, chunk by chunk.

Randomness is drawn per *chunk* of :data:`CHUNK` consecutive inputs, from a generator seeded by the
seed and the chunk's first index (:func:`chunk_seed`; the first chunk uses the seed itself), so a
sharded run (:class:`~advaudit.distributed.Shard`, each process a share of the chunks) gives exactly
the figures of a single process.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from ..checkpoint import ChunkUnits, cached_map, chunk_key
from ..data.batching import default_batch_size
from ..data.views import Rows
from ..distributed import Shard
from ..models import Model
from .model_mutation import mutant_labels
from .mutation import N_MUTATIONS, Mutation
from .mutations import chain

MAX_BATCH_IMAGES = 8192
QUERY_BATCH = 1024
"""Mutations per model call: 1024 runs the sample MNIST model about 15% faster per image than 8192
(0.042 against 0.050 ms on 2 cores, ONNX Runtime), the larger batch falling out of cache."""
LARGE_INPUT_VALUES = 32768
"""Inputs above this many values (3x104x104) get fewer mutated images per chunk (ImageNet scale)."""
MUTATION_VALUES = 2**25
"""Input values per chunk of mutated images for large inputs (128 MiB of float32)."""
CHUNK = 128
"""Inputs per independently seeded chunk (the unit of sharding)."""


def mutation_budget(input_shape: tuple[int, ...]) -> int:
    """Mutated images built per chunk: :data:`MAX_BATCH_IMAGES` up to CIFAR/GTSRB-sized inputs (so
    their random draws are unchanged), fewer for large inputs so memory stays bounded (222 at 224x224)."""
    values = int(np.prod(input_shape))
    return MAX_BATCH_IMAGES if values <= LARGE_INPUT_VALUES else max(1, MUTATION_VALUES // values)


def chunk_seed(seed: int, start: int) -> int:
    """Seed of the chunk starting at input ``start``: ``seed`` for the first chunk (inputs sets of
    up to :data:`CHUNK` draw exactly as a single generator would), a hash of both for the others."""
    return seed if start == 0 else zlib.crc32(f"{seed}/lcr/{start}".encode()) & 0x7FFFFFFF


def chunk_starts(n: int, chunk: int = CHUNK) -> list[int]:
    """First index of each chunk of ``n`` inputs."""
    return list(range(0, n, chunk))


class Sampler:
    """Draws mutations for a set of inputs and tells which ones change the label."""

    def __init__(self, model: Model, mutation: Mutation, seed: int) -> None:
        self.model, self.mutation = model, mutation
        self.gen = torch.Generator().manual_seed(seed)
        self.lo, self.hi = model.spec.range

    def changes(self, x: np.ndarray, labels: np.ndarray, k: int, offset: int) -> np.ndarray:
        """(len(x), k) bools: mutation j of input i changes its label.  ``offset`` = mutations so far."""
        if self.mutation.kind == "model":
            seeds = self.mutation.mutants
            op, rate = self.mutation.operator, self.mutation.radii[0]
            cols = [mutant_labels(self.model, x, op, rate, seeds[(offset + j) % len(seeds)]) for j in range(k)]
            return np.stack(cols, axis=1) != labels[:, None]
        out = np.empty((len(x), k), dtype=bool)
        per = max(1, mutation_budget(x.shape[1:]) // k)
        steps = self.mutation.steps
        for i in range(0, len(x), per):
            xt = torch.from_numpy(x[i : i + per])
            xm = chain(steps, xt, k, self.lo, self.hi, self.gen)
            pred = self.model.query(xm.numpy(), batch_size=default_batch_size(x.shape[1:], QUERY_BATCH)).labels
            out[i : i + per] = pred.reshape(-1, k) != labels[i : i + per, None]
        return out


def label_change_rates(
    model: Model, x: Rows, mutation: Mutation, n_mutations: int = N_MUTATIONS, seed: int = 0,
    *, shard: Shard | None = None, units: ChunkUnits | None = None, stage: str = "lcr",
) -> np.ndarray:
    """LCR of each input estimated from ``n_mutations`` mutations (no early stopping).

    Computed per chunk of :data:`CHUNK` inputs; ``shard`` spreads the chunks over processes;
    ``units`` keeps finished chunks (keyed by ``stage`` and the chunk's start) and reuses saved ones."""
    starts = chunk_starts(len(x))
    parts = cached_map(
        shard or Shard.single(),
        lambda s: lcr_chunk(model, x[s : s + CHUNK], mutation, n_mutations, chunk_seed(seed, s)),
        starts, [chunk_key(stage, s) for s in starts], units,
    )
    return np.concatenate(parts) if parts else np.zeros(0)


def lcr_chunk(model: Model, x: np.ndarray, mutation: Mutation, n_mutations: int, seed: int) -> np.ndarray:
    """LCR of one chunk of inputs, its mutations drawn from a generator seeded with ``seed``."""
    mutation = mutation.resolve(x)
    labels = model.query(x).labels
    return Sampler(model, mutation, seed).changes(x, labels, n_mutations, 0).mean(axis=1)
