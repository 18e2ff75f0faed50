"""Model mutation operators (Wang et al., "Adversarial Sample Detection for Deep Neural Network
through Model Mutation Testing", ICSE 2019, https://arxiv.org/abs/1812.05793, the follow-up of 002).

A mutant is the model with a few weights changed; the label change rate of an input is then the
fraction of mutants that label it differently from the original model.  Operators, each applied to
every weight tensor of rank >= 2 (conv and linear layers) at mutation ``rate``:

* ``gf`` Gaussian fuzzing: ``rate`` of the weights get N(0, std(layer)^2) noise added;
* ``nai`` neuron activation inverse: ``rate`` of the neurons (output units) have their weights and
  bias negated, which inverts their pre-activation;
* ``ws`` weight shuffling: ``rate`` of the neurons have their incoming weights permuted;
* ``ns`` neuron switch: pairs of neurons (``rate`` of them) swap their weights and biases.

Mutants are described by ``(operator, rate, seed)`` and rebuilt deterministically, so a calibration
file only stores their seeds.  Only mutants that keep >= 90% of the clean accuracy are used.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from ..errors import UsageError
from ..models import Model

OPERATORS = ("gf", "nai", "ws", "ns")


def _layers(module: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, bias) pairs of the conv/linear layers, found by parameter name."""
    params = dict(module.named_parameters())
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for name, w in params.items():
        if w.dim() >= 2 and name.endswith("weight"):
            out.append((w, params.get(name[: -len("weight")] + "bias")))
    return out


def _pick(n: int, rate: float, gen: torch.Generator) -> torch.Tensor:
    k = max(1, int(round(rate * n)))
    return torch.randperm(n, generator=gen)[:k]


@torch.no_grad()
def _mutate(module: torch.nn.Module, op: str, rate: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for w, b in _layers(module):
        n_out = w.shape[0]
        if op == "gf":
            mask = torch.rand(tuple(w.shape), generator=gen) < rate
            noise = torch.randn(tuple(w.shape), generator=gen) * float(w.std())
            w.add_((noise * mask).to(w.device, w.dtype))
        elif op == "nai":
            idx = _pick(n_out, rate, gen).to(w.device)
            w[idx] = -w[idx]
            if b is not None:
                b[idx] = -b[idx]
        elif op == "ws":
            for i in _pick(n_out, rate, gen).tolist():
                flat = w[i].reshape(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=gen).to(w.device)])
        elif op == "ns":
            idx = _pick(n_out, rate, gen)
            if len(idx) < 2:
                idx = torch.randperm(n_out, generator=gen)[:2]
            partner = idx[torch.randperm(len(idx), generator=gen)].to(w.device)
            idx = idx.to(w.device)
            w[idx] = w[partner].clone()
            if b is not None:
                b[idx] = b[partner].clone()
        else:
            raise UsageError(f"unknown model mutation operator {op!r}", f"choose one of {', '.join(OPERATORS)}")


def torch_module(model: Model) -> torch.nn.Module:
    module = model.torch_module()
    if module is None or not _layers(module):
        raise UsageError(
            f"model mutation needs a model with weights; {model.path.name} has none usable "
            f"({model.gradients.note or 'no layers'})",
            "use an input mutation (--mutation gaussian|uniform|pixel|patch|brightness)",
        )
    return module


@contextmanager
def mutant(model: Model, op: str, rate: float, seed: int) -> Iterator[None]:
    """Temporarily turn ``model``'s torch module into the mutant ``(op, rate, seed)``."""
    module = torch_module(model)
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        _mutate(module, op, rate, seed)
        yield
    finally:
        module.load_state_dict(saved)


def mutant_labels(model: Model, x: np.ndarray, op: str, rate: float, seed: int, batch_size: int = 512) -> np.ndarray:
    """Labels the mutant gives ``x`` (through the model's torch path)."""
    xt = torch.from_numpy(x).to(model.device)
    with mutant(model, op, rate, seed), torch.no_grad():
        out = [model.logits(xt[i : i + batch_size]).argmax(dim=1) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).cpu().numpy()


def select_mutants(
    model: Model, x: np.ndarray, y: np.ndarray, op: str, rate: float, count: int, seed: int, keep: float = 0.9
) -> list[int]:
    """Seeds of ``count`` mutants that keep >= ``keep`` of the model's accuracy on (x, y)."""
    torch_module(model)
    base = float((model.predict(x).labels == y).mean())
    seeds: list[int] = []
    for s in range(seed, seed + 20 * count):
        if float((mutant_labels(model, x, op, rate, s) == y).mean()) >= keep * base:
            seeds.append(s)
            if len(seeds) == count:
                return seeds
    raise UsageError(
        f"only {len(seeds)} of {20 * count} {op} mutants at rate {rate:g} keep 90% of the accuracy",
        "lower --rate",
    )
