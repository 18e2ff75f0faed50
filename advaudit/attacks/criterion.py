"""The success criterion of an attack: what makes a prediction adversarial.

One :class:`Criterion` serves the three places that decide success: the attack's own early-stopping
test (:meth:`advaudit.attacks.base.AttackContext.is_adversarial`), the runner's check on the
differentiable twin (:mod:`advaudit.attacks.engine`) and the deployment-runtime verification
(:func:`advaudit.attacks.verify.verify`).  It works on torch tensors and numpy arrays alike (only
``==``, ``!=``, ``&`` and indexing are used), so the search and the verification share the same rule.

Two rules, kept apart on purpose:

* :meth:`Criterion.hit` (search and twin): the prediction equals the target (targeted) or differs
  from the label (untargeted).
* :meth:`Criterion.counts` (verification): :meth:`~Criterion.hit`, and in targeted mode also
  ``target != label``.  A sample whose target *is* its label cannot count as fooled.  The twin check
  uses :meth:`~Criterion.hit`, so such a sample (``--target LABEL`` equal to its label) is counted as
  "rejected" by the runtime; this long-standing quirk is kept so that reports stay unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch

Labels = TypeVar("Labels", torch.Tensor, np.ndarray)


@dataclass(frozen=True, eq=False)
class Criterion:
    """Untargeted (``targets`` None: any label change) or targeted (reach ``targets``) success."""

    targets: torch.Tensor | np.ndarray | None = None  # one target per sample

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    def at(self, rows: torch.Tensor | np.ndarray) -> Criterion:
        """The criterion for the samples ``rows`` (an index array or tensor) of this one's samples."""
        return self if self.targets is None else Criterion(self.targets[rows])

    def hit(self, pred: Labels, y: Labels) -> Labels:
        """Success mask of predicted labels ``pred`` for true labels ``y``: the search-time rule."""
        if self.targets is None:
            return pred != y
        return cast(Labels, pred == self.targets)  # an element-wise mask for tensors and arrays alike

    def counts(self, pred: Labels, y: Labels) -> Labels:
        """Success mask as verification counts it: :meth:`hit`, and never where the target is ``y``."""
        if self.targets is None:
            return self.hit(pred, y)
        return self.hit(pred, y) & (self.targets != y)
