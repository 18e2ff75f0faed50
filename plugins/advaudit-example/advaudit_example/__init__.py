"""Example advaudit plugin: a uniform-noise baseline attack.

Registered in ``pyproject.toml`` as the ``advaudit.plugins`` entry point ``uniform-noise``.  Use it
like any built-in attack::

    from advaudit.attacks import get_attack

    out = get_attack("uniform-noise", trials=20)(model, x, y, eps=0.3, norm="linf")
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from advaudit.attacks.base import Attack, AttackContext, rand_normal, rand_uniform
from advaudit.errors import PluginError

__all__ = ["UniformNoise"]
__version__ = "0.1.0"


class UniformNoise(Attack):
    """Uniform random noise in the eps ball: a black-box baseline keeping the first draw that fools the model.

    Each of ``trials`` rounds draws one perturbation for every sample at once (Linf: uniform in
    [-eps, eps] per pixel; L2: a uniformly random direction of length eps) from the attack's seeded
    generator, queries the deployment runtime for the samples not yet fooled, and keeps per sample
    the first draw that succeeds.  Samples never fooled are returned unchanged.  A model that falls
    to this attack has essentially no robustness at that eps.
    """

    name: ClassVar[str] = "uniform-noise"
    uses_gradients: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"trials": 10}

    def check_params(self) -> None:
        trials = self.params["trials"]
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise PluginError(f"attack {self.name!r}: trials must be a positive integer, got {trials!r}")

    def _draw(self, ctx: AttackContext, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """One perturbation per sample, inside the eps ball of ``ctx.norm``."""
        assert ctx.eps is not None
        if ctx.norm == "linf":
            return (2.0 * rand_uniform(shape, ctx.generator, device) - 1.0) * ctx.eps
        direction = rand_normal(shape, ctx.generator, device)
        length = direction.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        return direction * (ctx.eps / length).view(-1, *([1] * (direction.dim() - 1)))

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(int(self.params["trials"])):
            todo = (~fooled).nonzero().flatten()
            if len(todo) == 0:
                break
            # Draw for every sample so each sample's noise does not depend on the others' successes.
            candidate = ctx.clip(x + self._draw(ctx, x.shape, x.device))
            scores = ctx.scores(candidate[todo], index=todo)
            targets = ctx.targets[todo] if ctx.targets is not None else None
            hit = ctx.is_adversarial(scores, y[todo], targets)
            won = todo[hit]
            x_adv[won] = candidate[won]
            fooled[won] = True
        return x_adv
