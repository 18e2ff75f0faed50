"""The attack contract.

An attack is a plain object built from keyword hyperparameters and called on a model and a batch::

    attack = PGD(steps=40)
    out = attack(model, x, y, eps=0.3, norm="linf", seed=0)
    out.x_adv          # (N, ...) float32 tensor, inside the value range (and the eps ball)

Subclasses write one method, :meth:`Attack.run`, and declare their capabilities as class
attributes.  :meth:`Attack.__call__` (final) validates the request, builds the
:class:`AttackContext`, and clips the result into the value range and, for fixed-budget attacks,
into the eps ball.  Deciding what *counts* as adversarial is not the attack's business: the runner
re-checks every example in the model's deployment runtime (:mod:`advaudit.attacks.verify`).

Minimum-norm attacks (``minimum_norm = True``: C&W, DeepFool, JSMA) ignore ``eps`` while searching;
they return the smallest perturbation they found (or the clean input when they failed) and the
runner counts them at each eps only where the perturbation fits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, final

import torch

from ..errors import UsageError
from ..models import Model
from ..params import Parametrised
from .criterion import Criterion
from .geometry import project

NORMS = ("linf", "l2")


@dataclass
class AttackContext:
    """Everything an attack's :meth:`~Attack.run` may use besides the inputs."""

    model: Model
    norm: str
    eps: float | None
    targets: torch.Tensor | None
    generator: torch.Generator
    progress: Callable[[int], None] | None = None
    queries: torch.Tensor | None = field(default=None, repr=False)

    @property
    def lo(self) -> float:
        return self.model.spec.range[0]

    @property
    def hi(self) -> float:
        return self.model.spec.range[1]

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits (log-probabilities for probability-output models)."""
        return self.model.logits(x)

    def scores(
        self, x: torch.Tensor, index: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-probabilities from the *deployment runtime*, no gradients; counts one query per row.

        ``index`` gives the rows' positions in the batch so per-sample query counts stay right.
        With the rows' true ``labels``, the scores come from the model's search precision
        (:meth:`advaudit.models.Model.search_scores`; rows predicted other than their label are
        always scored by the runtime).
        """
        if labels is None:
            scores = torch.from_numpy(self.model.query(x.detach()).log_probs).to(x.device)
        else:
            scores = self.model.search_scores(x, labels)
        if self.queries is not None:
            if index is None:
                self.queries += 1
            else:
                self.queries[index] += 1
        return scores

    @property
    def criterion(self) -> Criterion:
        """The success criterion in force for the whole batch."""
        return Criterion(self.targets)

    def is_adversarial(
        self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Success mask for the criterion in force (``targets`` slices ``self.targets`` for subsets)."""
        criterion = self.criterion if targets is None or self.targets is None else Criterion(targets)
        return criterion.hit(logits.argmax(dim=-1), y)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.lo, self.hi)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Project into the eps ball of the context's norm around ``x``, then into the value range."""
        return project(x_adv, x, norm=self.norm, eps=self.eps if eps is None else eps, bounds=(self.lo, self.hi))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(flat.dtype)
    raise ValueError(f"unknown norm {norm!r}")


@dataclass
class AttackOutput:
    """What an attack returns: adversarial candidates and per-sample model queries."""

    x_adv: torch.Tensor
    queries: torch.Tensor


class Attack(Parametrised, ABC):
    """Base class of every attack: capabilities as class attributes, one :meth:`run` to write."""

    kind: ClassVar[str] = "attack"
    name: ClassVar[str] = "?"
    norms: ClassVar[tuple[str, ...]] = NORMS
    uses_gradients: ClassVar[bool] = True
    minimum_norm: ClassVar[bool] = False
    supports_targeted: ClassVar[bool] = True
    supports_untargeted: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    noun: ClassVar[str] = "attack"

    @final
    def __call__(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        norm: str = "linf",
        targets: torch.Tensor | None = None,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> AttackOutput:
        """Attack the batch ``x`` (labels ``y``); see the module docstring."""
        if norm not in self.norms:
            raise UsageError(f"attack {self.name!r} supports norms {', '.join(self.norms)}, not {norm!r}")
        if self.uses_gradients and not model.has_gradients:
            raise UsageError(
                f"attack {self.name!r} needs gradients, which {model.path.name} does not provide "
                f"({model.gradients.note})",
                "use square or substitute",
            )
        if targets is None and not self.supports_untargeted:
            raise UsageError(
                f"attack {self.name!r} is targeted only", "add --targeted --target least-likely|random|LABEL"
            )
        if targets is not None and not self.supports_targeted:
            raise UsageError(f"attack {self.name!r} has no targeted mode")
        if not self.minimum_norm and (eps is None or eps <= 0):
            raise UsageError(f"attack {self.name!r} needs a positive eps")
        x = x.detach().to(model.device, torch.float32)
        y = y.detach().to(model.device, torch.long)
        if targets is not None:
            targets = targets.detach().to(model.device, torch.long)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        ctx = AttackContext(
            model, norm, eps, targets, gen, progress, torch.zeros(len(x), dtype=torch.long, device=model.device)
        )
        x_adv = self.run(ctx, x, y).detach()
        x_adv = ctx.clip(x_adv) if self.minimum_norm else ctx.project(x_adv, x)
        assert ctx.queries is not None
        return AttackOutput(x_adv=x_adv, queries=ctx.queries)

    @abstractmethod
    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial candidates for ``x``; count model calls in ``ctx.queries``."""


def rand_uniform(shape: tuple[int, ...] | torch.Size, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) noise from the attack's seeded CPU generator (same draw on every device)."""
    return torch.rand(tuple(shape), generator=gen).to(device)


def rand_normal(shape: tuple[int, ...] | torch.Size, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen).to(device)
