"""The attack batch loop: one attack over the chosen samples of a data set, a batch at a time.

Written once for its two users: the attack runner (:func:`advaudit.attacks.runner.run_attacks`, which
verifies the candidates as they come and may shard the batches) and the defence evaluation
(:func:`advaudit.defenses.evaluate.evaluate_defense`, which attacks a defended model).  Each batch
gets its own seed (:func:`batch_seed`), so a batch's candidates do not depend on which process ran
it or on the batches before it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..progress import Progress, tick
from ..data.views import Rows
from ..distributed import Shard
from ..models import Model
from .base import Attack
from .criterion import Criterion

Sink = Callable[[np.ndarray, np.ndarray, int], None]
"""``sink(rows, candidates, bound)``: a batch's candidates, as soon as they exist; every attacked row
below ``bound`` has been delivered by then."""


def batch_seed(seed: int, tag: str, eps: float | None, start: int) -> int:
    """The seed of the batch whose first sample is ``start``, for the attack (or mode/attack) ``tag``."""
    return zlib.crc32(f"{seed}/{tag}/{eps}/{start}".encode()) & 0x7FFFFFFF


@dataclass
class Batches:
    """What :func:`attack_batches` produced for all samples.

    ``x_adv``: the candidates (the other rows: ``x``), None when a sink received them; ``queries`` and
    ``twin_fooled`` per sample (zero / False where this process did not attack); ``chunks`` the row
    indices of every batch (all processes'); ``attacked`` how many rows this process attacked."""

    x_adv: np.ndarray | None
    queries: np.ndarray
    twin_fooled: np.ndarray
    chunks: list[np.ndarray]
    attacked: int


def attack_batches(
    model: Model,
    attack: Attack,
    x: Rows,
    y: np.ndarray,
    *,
    aim: np.ndarray | None,
    todo: np.ndarray,
    norm: str,
    eps: float | None,
    batch_size: int,
    seed: int,
    seed_tag: str,
    label: str,
    progress: Progress | None = None,
    shard: Shard | None = None,
    twin: Criterion | None = None,
    sink: Sink | None = None,
) -> Batches:
    """Attack the ``todo`` samples of ``x`` (labels ``y``) in batches of ``batch_size``.

    ``aim`` are the targets handed to the attack (None: untargeted); ``norm`` falls back to the
    attack's first norm when the attack lacks it.  ``shard``: this process attacks its own batches only.
    ``twin``: for gradient attacks on an ONNX model, the success criterion to check each candidate
    against on the differentiable twin (``Batches.twin_fooled``; a TorchScript or torch.export model
    is its own twin).  ``sink`` receives each batch's candidates instead of ``Batches.x_adv``.
    ``progress(label, done, total)`` after each batch, counting this process's rows."""
    shard = shard or Shard.single()
    idx = np.flatnonzero(todo)
    queries = np.zeros(len(x), dtype=np.int64)
    twin_fooled = np.zeros(len(x), dtype=bool)
    attack_norm = norm if norm in attack.norms else attack.norms[0]
    chunks = [idx[start : start + batch_size] for start in range(0, len(idx), batch_size)]
    own = shard.mine(len(chunks))
    own_total = sum(len(chunks[j]) for j in own)
    check_twin = twin is not None and attack.uses_gradients and model.format == "onnx"
    x_adv = None if sink is not None else np.array(x, dtype=np.float32, copy=True)
    done = 0
    for j in own:
        b = chunks[j]
        xb = torch.from_numpy(x[b]).to(model.device)
        yb = torch.from_numpy(y[b]).to(model.device)
        tb = None if aim is None else torch.from_numpy(aim[b]).to(model.device)
        out = attack(
            model, xb, yb, eps=eps, norm=attack_norm, targets=tb, seed=batch_seed(seed, seed_tag, eps, int(b[0]))
        )
        candidates = out.x_adv.cpu().numpy()
        queries[b] = out.queries.cpu().numpy()
        if check_twin and twin is not None:
            with torch.no_grad():
                pred = model.logits(out.x_adv).argmax(dim=1).cpu().numpy()
            twin_fooled[b] = twin.at(b).hit(pred, y[b])
        if sink is not None:
            sink(b, candidates, int(chunks[j + 1][0]) if j + 1 < len(chunks) else len(x))
        else:
            assert x_adv is not None
            x_adv[b] = candidates
        done += len(b)
        tick(progress, label, done, own_total)
    return Batches(x_adv, queries, twin_fooled, chunks, own_total)
