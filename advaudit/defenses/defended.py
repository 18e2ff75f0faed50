"""The defended model: a defence stack followed by the classifier, seen as one :class:`Model`.

* :meth:`DefendedModel.predict` runs the *real* defences and then the classifier's deployment
  runtime (ONNX Runtime for ``.onnx``).  Randomised defences use a fixed, seeded *verification
  draw* (:attr:`DefendedModel.draw`): the generator is re-seeded from ``(eval_seed, draw)`` at every
  call, so the same inputs in the same order always meet the same randomness (sample ``i`` of a
  clean batch and of its adversarial batch get the same dropout mask), and that randomness is
  independent of the draws the attacker sees.
* :meth:`DefendedModel.logits` is the attacker's differentiable view: BPDA through every defence
  (forward the real defence, backward the identity or the defence's differentiable approximation),
  and, with ``eot > 1`` and a randomised stack, Expectation over Transformation: the mean over
  ``eot`` fresh draws of the log-probabilities.  For cross-entropy its gradient is the EOT gradient
  ``E_t[grad log p_y(t(x))]`` up to the normalising log-sum-exp term (zero when the draws agree).
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
import torch

from ..lazy_rows import Rows
from ..models import Model, Prediction
from .base import Defense


def draw_seed(seed: int, draw: int) -> int:
    """Seed of verification draw ``draw`` (disjoint from the attacker's generator)."""
    return zlib.crc32(f"verify/{seed}/{draw}".encode()) & 0x7FFFFFFF


def apply_stack(
    stack: Sequence[Defense], x: torch.Tensor, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """The real defences in order (no gradients)."""
    for d in stack:
        x = d(x, bounds=bounds, generator=generator)
    return x


def stack_spec(stack: Sequence[Defense]) -> str:
    return " + ".join(d.spec() for d in stack) if stack else "none"


class DefendedModel(Model):
    """``stack`` then ``inner``: see the module docstring."""

    def __init__(
        self,
        inner: Model,
        stack: Sequence[Defense],
        *,
        eot: int = 1,
        seed: int = 0,
        eval_seed: int = 0,
        draw: int = 0,
    ) -> None:
        super().__init__(inner.path, inner.spec, str(inner.device))
        self.inner = inner
        self.stack = list(stack)
        self.format = inner.format
        self.input_shape = inner.input_shape
        self.num_classes = inner.num_classes
        self.output_kind = inner.output_kind
        self.fixed_batch = None
        self.torch_batch = None
        self.gradients = inner.gradients
        self._sha256 = inner._sha256
        self.randomized = any(d.randomized for d in self.stack)
        self.eot = max(1, int(eot)) if self.randomized else 1
        self.eval_seed = int(eval_seed)
        self.draw = int(draw)
        self._attack_gen = torch.Generator().manual_seed(int(seed))

    @property
    def sha256(self) -> str:
        return self.inner.sha256

    # ------------------------------------------------------------ deployment
    def purify(self, x: Rows | torch.Tensor, batch_size: int = 256, draw: int | None = None) -> np.ndarray:
        """The real defence stack on ``x`` under verification draw ``draw`` (default :attr:`draw`)."""
        xt = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
        gen = torch.Generator().manual_seed(draw_seed(self.eval_seed, self.draw if draw is None else draw))
        out = [
            apply_stack(self.stack, xt[i : i + batch_size].to(self.device), self.bounds, gen).cpu()
            for i in range(0, len(xt), batch_size)
        ]
        if not out:
            return xt.numpy().astype(np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def predict(self, x: Rows | torch.Tensor, batch_size: int = 256) -> Prediction:
        """Real defences, then the classifier's deployment runtime (seeded verification draw)."""
        return self.inner.predict(self.purify(x, batch_size), batch_size=batch_size)

    def _deploy_forward(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x).outputs

    # ------------------------------------------------------------- attacker
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA (and EOT over ``eot`` draws) through the stack, then the classifier's logits."""
        if not self.stack:
            return self.inner.logits(x)
        if self.eot == 1:
            return self.inner.logits(self._bpda(x))
        total = None
        for _ in range(self.eot):
            lp = torch.log_softmax(self.inner.logits(self._bpda(x)), dim=-1)
            total = lp if total is None else total + lp
        assert total is not None
        return total / self.eot

    def _bpda(self, x: torch.Tensor) -> torch.Tensor:
        for d in self.stack:
            x = d.bpda(x, bounds=self.bounds, generator=self._attack_gen)
        return x

    def torch_module(self) -> torch.nn.Module | None:
        return self.inner.torch_module()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "defenses": [d.spec() for d in self.stack], "eot": self.eot}
