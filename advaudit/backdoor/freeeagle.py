"""FreeEagle: data-free backdoor detection on the network's later layers.

Fu, Zhang, Ji, Chen, Wu, Guo, Zhou, Liu, Wang, "FreeEagle: Detecting Complex Neural Trojans in
Data-Free Cases", USENIX Security 2023, https://arxiv.org/abs/2302.14500 (reference code:
FuChong-cyber/Data-Free-Neural-Backdoor-Detector-FreeEagle, ``backdoor_inspection_new.py``).
Threat model: white-box access to the weights; no clean data needed.

Why this scanner.  Neural Cleanse looks for a label reachable with an abnormally *small* input mask,
and the concealed attacks of paper 003 defeat exactly that (their target's mask is no smaller than a
natural label's); MM-BD's largest input-space margin did not stand out on 43-class GTSRB models.
FreeEagle looks past the input: a backdoor is a shortcut the later layers learned, so when an
intermediate representation is optimised to be classified as *any* source class, the target class
keeps an abnormally high posterior.  The method (the reference code's defaults):

1. cut the network at layer ``L`` into a front part and a later part ``g``; the default cut is the
   last feature map before the classifier head (the reference code's choice for small CNNs);
2. for every class ``c`` optimise a dummy representation ``X_c`` (uniform [0, 1) start, Adam lr 0.01,
   weight decay 0.005, 1000 steps, clamped at 0 when the cut follows a ReLU) to minimise the
   cross-entropy of ``g(X_c)`` towards ``c``;
3. ``P[c, t] = softmax(g(X_c))_t`` with the diagonal zeroed; ``v_t`` = mean of ``P[c, t]`` over
   the sources ``c != t`` (how much each class is favoured by the others' representations);
4. the anomaly metric ``M = (max v - Q3) / (Q3 - Q1)`` (quartiles of ``v``); the suspected target
   is ``argmax v``.

The paper thresholds ``M`` at a value set on benign models.  Here the verdict is calibrated like the
other scanners, with a p-value the combined verdict can use: ``M`` is location- and scale-free, so
its null is the distribution of ``M`` over K i.i.d. normal tendencies, simulated once per K
(:func:`metric_p_value`; its 95% point is 2.13 for K = 10, 1.93 for K = 43, 2.41 for K = 1000).
Clean calibration models (GTSRB small CNNs, seeds 100+, never the benchmark's) sat inside it.

Departures from the reference code: all classes are optimised in one batch (Adam is per element, so
this equals K separate runs); the cut is found on the model's fx graph (ONNX and ``torch.export``
models), so TorchScript models are refused with advice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import fx

from ..errors import ModelError, UsageError
from ..models import Model
from ..models.base import flat_outputs
from .base import BackdoorScanner, ScanContext, ScanResult, one_target_result
from .reference import scanner_reference, scanner_test

NULL_SIMULATIONS = 20000
PROBE = 8
"""Random inputs used to find the cut's shape and whether its values are non-negative."""


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's output."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _inputs(n: fx.Node) -> list[fx.Node]:
    return list(n.all_input_nodes)


def later_part(gm: fx.GraphModule, cut: str) -> fx.GraphModule:
    """The graph from node ``cut`` (its output becomes the placeholder) to the output.

    Refused (ModelError) when a path from the input reaches the output without passing through the
    cut (a skip connection crosses it)."""
    nodes = list(gm.graph.nodes)
    by_name = {n.name: n for n in nodes}
    if cut not in by_name or by_name[cut].op in ("placeholder", "output", "get_attr"):
        names = ", ".join(n.name for n in nodes if n.op in ("call_module", "call_function", "call_method"))
        raise UsageError(f"freeeagle: no layer {cut!r} in the model's graph", f"choose one of: {names}")
    live: set[str] = set()  # nodes that depend on the network input
    for n in nodes:
        if n.op == "placeholder" or any(i.name in live for i in _inputs(n)):
            live.add(n.name)
    after: set[str] = {cut}  # nodes downstream of the cut
    for n in nodes:
        if any(i.name in after for i in _inputs(n)):
            after.add(n.name)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {cut: graph.placeholder("embedding")}
    for n in nodes:
        if n.name == cut or n.op == "placeholder":
            continue
        if n.op == "output":
            for i in _inputs(n):
                if i.name in live and i.name not in after:
                    raise ModelError(f"freeeagle: layer {cut!r} does not cut the network (a path to the output "
                                     "bypasses it)", "choose a layer every path passes through (layer=NAME)")
            graph.output(fx.map_arg(n.args[0], lambda a: env[a.name]))
            break
        if n.name in after or n.name not in live:  # downstream, or a constant the later part may use
            if any(i.name in live and i.name not in after for i in _inputs(n)):
                raise ModelError(f"freeeagle: layer {cut!r} does not cut the network (node {n.name!r} also reads "
                                 "an earlier layer)", "choose a layer every path passes through (layer=NAME)")
            env[n.name] = graph.node_copy(n, lambda a: env[a.name])
    part = fx.GraphModule(gm, graph)
    part.graph.eliminate_dead_code()
    part.recompile()
    return part


def auto_cut(gm: fx.GraphModule, values: dict[str, Any]) -> str:
    """The last node with a feature map (a tensor of 3 or more dims) that cuts the network."""
    for n in reversed(list(gm.graph.nodes)):
        v = values.get(n.name)
        if n.op in ("placeholder", "output", "get_attr") or not isinstance(v, torch.Tensor) or v.dim() < 3:
            continue
        try:
            later_part(gm, n.name)
        except ModelError:
            continue
        return n.name
    raise ModelError("freeeagle: found no feature map that cuts the network",
                     "name the layer to cut at with layer=NAME")


def _metric_rows(a: np.ndarray) -> np.ndarray:
    """``(max - Q3) / (Q3 - Q1)`` of each row of sorted ``a`` (the reference code's index quartiles)."""
    n = a.shape[1]
    q1, q3 = a[:, int(0.25 * n)], a[:, int(0.75 * n)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q3 > q1, (a[:, -1] - q3) / np.where(q3 > q1, q3 - q1, 1.0), np.inf)


def anomaly_metric(v: np.ndarray) -> float:
    """FreeEagle's anomaly metric over the non-zero tendencies ``v``."""
    a = np.sort(v[v != 0])
    return float(_metric_rows(a[None])[0]) if len(a) >= 4 else 0.0


@lru_cache(maxsize=16)
def _null_metric(k: int, simulations: int = NULL_SIMULATIONS) -> np.ndarray:
    """Sorted draws of the anomaly metric of ``k`` i.i.d. normal values (fixed seed: the same null
    for the same K; bounded memory for K = 1000)."""
    rng = np.random.default_rng(20230809)
    out = np.empty(simulations)
    for start in range(0, simulations, 2000):
        z = np.sort(rng.standard_normal((min(2000, simulations - start), k)), axis=1)
        out[start : start + len(z)] = _metric_rows(z)
    return np.sort(out)


def metric_p_value(metric: float, k: int) -> float:
    """P(null metric >= ``metric``) for ``k`` classes (see :func:`_null_metric`)."""
    null = _null_metric(int(k))
    return float((1 + len(null) - np.searchsorted(null, metric, side="left")) / (1 + len(null)))


class FreeEagle(BackdoorScanner):
    """FreeEagle (Fu et al. 2023): data-free; dummy representations per class on the later layers.

    With ``reference`` (one row of K tendencies per clean reference model) each class's tendency is
    tested against the same class's tendencies (:mod:`advaudit.backdoor.reference`) instead of the
    anomaly metric's null (whose p-value stays in the evidence as ``p_value_metric``)."""

    name = "freeeagle"
    min_per_class = 0
    reference_key = "tendency"
    reference_side = "high"
    reference_settings = ("layer", "steps", "lr", "weight_decay")

    def __init__(
        self, *, layer: str | None = None, steps: int = 1000, lr: float = 0.01, weight_decay: float = 0.005,
        alpha: float = 0.05, batch_limit: int = 256, reference: tuple[tuple[float, ...], ...] | None = None,
    ) -> None:
        if steps < 1 or batch_limit < 1:
            raise UsageError("freeeagle: steps and batch_limit must be at least 1")
        if lr <= 0 or weight_decay < 0:
            raise UsageError("freeeagle: lr must be positive and weight_decay non-negative")
        if not 0 < alpha < 1:
            raise UsageError(f"freeeagle: alpha (the p-value threshold) must be in (0, 1), got {alpha}")
        self.layer = layer
        self.steps = int(steps)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.alpha = float(alpha)
        self.batch_limit = int(batch_limit)
        self._reference = scanner_reference(self.name, reference, self.reference_side)
        self.reference_models = None if self._reference is None else self._reference.models

    @classmethod
    def unsupported(cls, model: Model) -> str | None:
        if model.num_classes is not None and model.num_classes < 4:
            return f"it needs at least 4 classes (quartiles of the tendencies); the model has {model.num_classes}"
        if not isinstance(model.torch_module(), fx.GraphModule):
            return "it cuts the network's graph, and a TorchScript model has none (export to ONNX or torch.export)"
        return None

    def run(self, ctx: ScanContext, x: np.ndarray | None, y: np.ndarray | None) -> ScanResult:
        k = ctx.num_classes
        if k < 4:
            raise UsageError("freeeagle needs at least 4 classes (quartiles of the per-class tendencies)")
        gm = ctx.model.torch_module()
        if not isinstance(gm, fx.GraphModule):
            raise ModelError(
                f"freeeagle needs the model as a graph to cut it; {ctx.model.path.name} is not one (TorchScript)",
                "export it to ONNX or with torch.export, or use --method neural-cleanse / mm-bd",
            )
        lo, hi = ctx.lo, ctx.hi
        probe = lo + (hi - lo) * torch.rand((PROBE, *ctx.input_shape), generator=ctx.generator)
        rec = _Recorder(gm)
        with torch.no_grad():
            rec.run(ctx.model.to_model_input(probe.to(ctx.device)))
        cut = self.layer or auto_cut(gm, rec.values)
        g = later_part(gm, cut)
        feats = rec.values.get(cut)
        if not isinstance(feats, torch.Tensor):
            raise ModelError(f"freeeagle: layer {cut!r} does not output a tensor", "choose another layer=NAME")
        nonneg = bool(feats.min() >= 0)
        shape = tuple(feats.shape[1:])

        def logits(e: torch.Tensor) -> torch.Tensor:
            return ctx.model._as_logits(flat_outputs(g(e), e.shape[0]).float())

        probs = np.zeros((k, k))
        for start in range(0, k, self.batch_limit):
            cls = torch.arange(start, min(k, start + self.batch_limit), device=ctx.device)
            e = torch.rand((len(cls), *shape), generator=ctx.generator).to(ctx.device).requires_grad_(True)
            opt = torch.optim.Adam([e], lr=self.lr, weight_decay=self.weight_decay)
            for step in range(self.steps):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(logits(e), cls, reduction="sum").backward()
                opt.step()
                if nonneg:
                    with torch.no_grad():
                        e.clamp_(min=0)
                if step % 50 == 0:
                    ctx.report("freeeagle", start * self.steps + (step + 1) * len(cls), k * self.steps)
            with torch.no_grad():
                probs[start : start + len(cls)] = torch.softmax(logits(e), dim=1).double().cpu().numpy()
        np.fill_diagonal(probs, 0.0)
        v = probs.sum(axis=0) / (k - 1)
        metric = anomaly_metric(v)
        top = int(np.argmax(v))
        p = p_metric = metric_p_value(metric, k)
        extra: dict[str, object] = {}
        if self._reference is not None:
            versus = scanner_test(self.name, v, self._reference, self.alpha)
            top, p = versus.top, versus.p_value
            extra = {"reference": self._reference.describe(), "reference_index": float(versus.index[top])}
        flagged = p < self.alpha
        return one_target_result(self.name, flagged, top, "tendency", v, {
            "top_class": top, "top_tendency": float(v[top]), "anomaly_metric": metric, "p_value": p,
            "p_value_metric": p_metric, "alpha": self.alpha, "cut": cut, "cut_shape": list(shape),
            "non_negative": nonneg, **extra,
        })
