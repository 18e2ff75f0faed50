"""Find the logits of a graph that ends in probabilities.

Many exported classifiers end in ``Softmax`` (or ``Sigmoid``, or ``Log(Softmax)``).  Taking the log of
saturated float32 probabilities gives zero gradients and a flat margin, so attacks that search on
them under-report how easily the model is fooled.  Softmax and sigmoid are monotone: the tensor that
feeds them has the same argmax and is the real score the model decides on.  :func:`find_logits`
names that tensor; the model takes it as its logits, in the differentiable twin and (as an extra
graph output) in ONNX Runtime, while verification keeps reading the real output's argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze")
"""Ops between the activation and the graph output that do not change the values."""


@dataclass(frozen=True)
class LogitsSource:
    """The tensor taken as logits and the activation it feeds (``Softmax``, ``Sigmoid``)."""

    tensor: str
    activation: str

    def describe(self) -> str:
        return f"the input of the final {self.activation} ({self.tensor!r})"


def _softmax_on_last_axis(node: Any, opset: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    # Before opset 13 Softmax flattens to 2-D at ``axis``: axis 1 is per-sample; from 13 on it is one axis.
    return axis in (-1, 1)


def find_logits(proto: Any) -> LogitsSource | None:
    """The tensor feeding a final ``Softmax``/``Sigmoid`` of ``proto``'s first output, or None.

    The activation may sit behind ``Identity``/``Reshape``/``Flatten``/``Squeeze``; ``Log(Softmax)``
    counts as a final softmax.  ``LogSoftmax`` does not: its output is already a stable log-probability.
    """
    graph = proto.graph
    if not graph.output:
        return None
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)
    producer = {out: node for node in graph.node for out in node.output}
    graph_inputs = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    name = graph.output[0].name
    node = producer.get(name)
    seen: set[str] = set()
    while node is not None and node.op_type in PASS_THROUGH:
        if name in seen or not node.input:  # a cycle (an invalid graph, but one that must not hang us)
            return None
        seen.add(name)
        name = node.input[0]
        node = producer.get(name)
    if node is not None and node.op_type == "Log":
        inner = producer.get(node.input[0]) if node.input else None
        node = inner if inner is not None and inner.op_type == "Softmax" else None
    if node is None or node.op_type not in ("Softmax", "Sigmoid") or node.domain not in ("", "ai.onnx"):
        return None
    if not node.input:
        return None
    if node.op_type == "Softmax" and not _softmax_on_last_axis(node, opset):
        return None
    source = node.input[0]
    if source in graph_inputs:  # a graph that is only an activation has no logits to take
        return None
    return LogitsSource(source, node.op_type)


def with_outputs(proto: Any, names: list[str]) -> Any:
    """A copy of ``proto`` whose graph outputs are ``names`` (float tensors of unknown shape), pruned
    to the nodes those outputs need."""
    import copy

    import onnx

    out = copy.deepcopy(proto)
    graph = out.graph
    known = {v.name: v for v in list(graph.value_info) + list(graph.output)}
    elem = graph.output[0].type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    outputs = [copy.deepcopy(known[n]) if n in known else onnx.helper.make_tensor_value_info(n, elem, None)
               for n in names]
    del graph.output[:]
    graph.output.extend(outputs)
    _prune(graph)
    return out


def with_extra_output(proto: Any, name: str) -> Any:
    """A copy of ``proto`` that also outputs tensor ``name`` (after its own outputs)."""
    return with_outputs(proto, [o.name for o in proto.graph.output] + [name])


def _prune(graph: Any) -> None:
    """Drop the nodes no graph output depends on (subgraph captures count as inputs)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    needed.update(_captured(g))
    keep.reverse()
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _captured(graph: Any) -> set[str]:
    """Names a subgraph reads from its enclosing scope (a superset: every input of every node)."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names.update(_captured(g))
    return names
