"""Generators of hostile input files: models, data, configurations, calibrations, reports.

Each generator is ``gen(rng, seeds, dst) -> Made``: it writes one input under the folder ``dst`` (a
case's ``in/``) and says what a correct advaudit must do with it (:attr:`Made.expect`):

* ``"ok"``: the input is valid (the command must succeed on it);
* ``"error"``: the input is invalid (exit 2 with one line);
* ``"any"``: either (a random mutation may or may not break the file); the rest of the contract holds.

The families follow issue 18: ONNX (truncated, bit-flipped, wrong opset, huge declared dimensions,
external data outside the folder or on a device file, cyclic graphs, zero-size, non-float, several inputs
or outputs), TorchScript (zip bombs, wrong members, pickles whose payload would create a marker file),
``.pt2`` (the hostile archives of tests/test_export_model.py, JSON mutations), npz (object arrays,
mismatched lengths, NaN/inf, wrong dtypes, no samples, 5-D), IDX, image folders (corrupt files,
decompression bombs, mixed modes, non-images, symlink loops), YAML (alias bombs, wrong types, unknown
keys, tags), calibration and report JSON (wrong schema, 1e400, deep nesting), spec files, labels files.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import random
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import mutate as mu
from .seeds import (
    CLASSES,
    SAMPLE_FILES,
    SAMPLE_MODELS,
    SIDE,
    Seeds,
    audit_config,
    idx_bytes,
    tiny_data,
    tiny_onnx_proto,
)

DEVICE_FILES = ("/dev/zero", "/dev/urandom")


@dataclass
class Made:
    """One generated input: where it is, what advaudit must do with it, and what it needs."""

    path: Path
    expect: str  # "ok", "error" or "any"
    kind: str
    args: list[str] = field(default_factory=list)  # options this input needs (e.g. --max-model-size 50)
    markers: list[str] = field(default_factory=list)  # files a payload in it would create
    hang_prone: bool = False
    pairs_with: Path | None = None  # a model: the data it takes; data: the model it fits (None: the tiny ones)
    selected_only: bool = False  # the expectation holds when the first samples are selected (no --seed/--offset)


def worst(*expects: str) -> str:
    """The combined expectation of several inputs: any invalid one makes an error, any unknown one 'any'."""
    if "error" in expects:
        return "error"
    return "any" if "any" in expects else "ok"


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


class Payload:
    """Unpickling this creates the file ``path``: the evidence that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


class SystemPayload:
    """Unpickling this runs ``touch path`` through os.system."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def payload_pickle(marker: Path, rng: random.Random) -> bytes:
    """A pickle whose loading would create ``marker`` (via ``open`` or ``os.system``)."""
    obj = Payload(str(marker)) if rng.random() < 0.5 else SystemPayload(str(marker))
    return pickle.dumps({"model": obj}, protocol=rng.choice([2, 4]))


def _marker(dst: Path) -> Path:
    return dst.parent / "PAYLOAD-RAN"  # beside in/, never inside out/


# ================================================================================================== ONNX
def _save_onnx(proto: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def gap_onnx_proto(dims: list[Any]) -> Any:
    """Conv -> GlobalAveragePool -> Flatten -> Gemm: a graph that runs on any image size, declaring ``dims``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (2, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, 2)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "gap",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def onnx_bytes(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    src = SAMPLE_FILES["onnx"] if rng.random() < 0.4 else seeds.onnx
    data, ops = mu.mutate_bytes(src.read_bytes(), rng)
    p = dst / "mutated.onnx"
    p.write_bytes(data)
    pairs = SAMPLE_FILES["npz"] if src != seeds.onnx else None
    return Made(p, "any", f"onnx bytes {src.name} {'+'.join(ops)}", pairs_with=pairs)


def onnx_truncated(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    data = seeds.onnx.read_bytes()
    cut = rng.choice([0, 1, 4, 16, rng.randrange(len(data) // 2)])
    p = dst / "truncated.onnx"
    p.write_bytes(data[:cut])
    return Made(p, "error", f"onnx truncated to {cut} of {len(data)} bytes")


def onnx_opset(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    bad = rng.random() < 0.6
    version = rng.choice([99, 1, 0, -3, 10**6, 2**62]) if bad else rng.choice([11, 13, 18, 21])
    proto = tiny_onnx_proto()
    for o in proto.opset_import:
        o.version = version
    if rng.random() < 0.3:
        proto.ir_version = rng.choice([0, 1, 99, -1])
        bad = bad or proto.ir_version in (0, 99)
    return Made(
        _save_onnx(proto, dst / "opset.onnx"), "error" if bad else "any", f"onnx opset {version} ir {proto.ir_version}"
    )


def onnx_huge_dims(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    dims: list[Any] = rng.choice(
        [
            ["batch", 1, 100000, 100000],
            ["batch", 1, 2**31 - 1, 2**31 - 1],
            [1, 1, 65536, 65536],
            ["batch", 1, 10**9, 10**9],
            ["batch", 1, 2**40, 1],
            [2**31, 1, 8, 8],
            ["batch", 1, 46341, 46341],
        ]
    )
    proto = gap_onnx_proto(dims)
    return Made(_save_onnx(proto, dst / "huge.onnx"), "error", f"onnx declared dims {dims}")


def onnx_odd_dims(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    dims = rng.choice(
        [
            ["batch", 0, SIDE, SIDE],
            ["batch", 1, 0, 0],
            [0, 1, SIDE, SIDE],
            ["batch", -5, SIDE, SIDE],
            ["batch", 1, SIDE],
            ["batch"],
            [],
            ["batch", 1, SIDE, SIDE, 1],
            ["a", "b", "c", "d"],
        ]
    )
    proto = tiny_onnx_proto()
    shape = proto.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d
    return Made(_save_onnx(proto, dst / "dims.onnx"), "any", f"onnx input dims {dims}")


EXTERNAL_LOCATIONS = {
    "inside": ("w2.bin", "ok"),
    "parent": ("../outside.bin", "error"),
    "dev-zero": ("/dev/zero", "error"),
    "dev-urandom": ("/dev/urandom", "error"),
    "etc-passwd": ("/etc/passwd", "error"),
    "empty": ("", "error"),
    "nul": ("a\x00b.bin", "error"),
    "long": ("x" * 5000, "error"),
    "dot": (".", "error"),
    "folder": ("sub", "error"),
    "link-dev-zero": ("link.bin", "error"),
    "link-outside": ("link.bin", "error"),
    "fifo": ("fifo.bin", "error"),
    "absolute-inside": ("<abs>", "error"),
    "traversal": ("sub/../../outside.bin", "error"),
    "missing": ("nope.bin", "error"),
}


def onnx_external(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """w2 stored as external data at a hostile (or, once in a while, valid) location."""
    from onnx import TensorProto

    variant = rng.choice(sorted(EXTERNAL_LOCATIONS))
    location, expect = EXTERNAL_LOCATIONS[variant]
    folder = dst / "model"
    folder.mkdir(parents=True, exist_ok=True)
    proto = tiny_onnx_proto()
    w2 = next(t for t in proto.graph.initializer if t.name == "w2")
    raw = (
        np.frombuffer(w2.raw_data, np.float32).tobytes()
        if w2.raw_data
        else np.asarray(w2.float_data, np.float32).tobytes()
    )
    (dst / "outside.bin").write_bytes(raw)
    (folder / "w2.bin").write_bytes(raw)
    (folder / "sub").mkdir(exist_ok=True)
    if variant == "link-dev-zero":
        os.symlink(rng.choice(DEVICE_FILES), folder / "link.bin")
    elif variant == "link-outside":
        os.symlink(dst / "outside.bin", folder / "link.bin")
    elif variant == "fifo":
        _fifo(folder / "fifo.bin")
    elif variant == "absolute-inside":
        location = str(folder / "w2.bin")
    w2.ClearField("raw_data")
    del w2.float_data[:]
    w2.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if rng.random() < 0.2:
        entries.update(offset=str(rng.choice([0, 4, 2**62, -1])), length=str(rng.choice([len(raw), 2**62, 0, -1])))
        expect = "any" if expect == "ok" else expect
    for k, v in entries.items():
        e = w2.external_data.add()
        e.key, e.value = k, v
    p = _save_onnx(proto, folder / "external.onnx")
    hang = variant in ("dev-zero", "dev-urandom", "link-dev-zero", "fifo")
    return Made(p, expect, f"onnx external data {variant} ({location[:40]!r})", hang_prone=hang)


def onnx_graph(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Structural damage: cycles, several inputs or outputs, none, unknown ops, non-float inputs, NaN weights."""
    from onnx import TensorProto, helper, numpy_helper

    proto = tiny_onnx_proto(softmax=rng.random() < 0.3)
    g = proto.graph
    out = g.output[0].name
    variant = rng.choice(
        [
            "self-loop",
            "cycle",
            "cycle-behind-softmax",
            "two-inputs",
            "extra-output-last",
            "extra-output-first",
            "no-output",
            "no-nodes",
            "unknown-op",
            "custom-domain",
            "int-input",
            "string-input",
            "double-input",
            "nan-weights",
            "declared-huge-initializer",
            "dangling-input",
            "identity-chain",
            "output-is-input",
            "duplicate-node-outputs",
        ]
    )
    expect, hang = "error", False
    if variant == "self-loop":
        g.node.append(helper.make_node("Identity", [out], [out]))
        hang = True
    elif variant in ("cycle", "cycle-behind-softmax"):
        # out <- Relu(b) <- Relu(out): the output's producer chain never reaches the input
        last = g.node[-1]
        last.output[0] = "a"
        g.node.extend([helper.make_node("Identity", ["b"], [out]), helper.make_node("Identity", [out], ["b"])])
        if variant == "cycle-behind-softmax":
            g.node.append(helper.make_node("Softmax", [out], ["final"], axis=-1))
            g.output[0].name = "final"
        hang = True
    elif variant == "two-inputs":
        g.input.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, ["batch", CLASSES]))
        g.node.append(helper.make_node("Add", [out, "second"], ["sum"]))
        g.output[0].name = "sum"
    elif variant in ("extra-output-last", "extra-output-first"):
        extra = helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)
        if variant.endswith("last"):
            g.output.append(extra)
            expect = "ok"
        else:
            g.output.insert(0, extra)
            expect = "any"
    elif variant == "no-output":
        del g.output[:]
    elif variant == "no-nodes":
        del g.node[:]
    elif variant == "unknown-op":
        g.node.append(helper.make_node("Frobnicate", [out], ["frob"]))
        g.output[0].name = "frob"
    elif variant == "custom-domain":
        proto.opset_import.append(helper.make_opsetid("com.evil", 1))
        g.node.append(helper.make_node("Exec", [out], ["frob"], domain="com.evil", cmd="touch /tmp/x"))
        g.output[0].name = "frob"
    elif variant in ("int-input", "string-input", "double-input"):
        elem = {"int-input": TensorProto.INT64, "string-input": TensorProto.STRING, "double-input": TensorProto.DOUBLE}
        g.input[0].type.tensor_type.elem_type = elem[variant]
    elif variant == "nan-weights":
        w = next(t for t in g.initializer if t.name == "w2")
        arr = numpy_helper.to_array(w).copy()
        arr.flat[rng.randrange(arr.size)] = rng.choice([np.nan, np.inf])
        w.CopyFrom(numpy_helper.from_array(arr, "w2"))
    elif variant == "declared-huge-initializer":
        w = next(t for t in g.initializer if t.name == "w2")
        del w.dims[:]
        w.dims.extend([2**31 - 1, 2**31 - 1])
    elif variant == "dangling-input":
        g.node[0].input[0] = "nowhere"
    elif variant == "identity-chain":
        for i in range(rng.choice([1, 50, 2000])):
            g.node.append(helper.make_node("Identity", [out], [f"{out}_{i}"]))
            out = f"{out}_{i}"
        g.output[0].name = out
        expect = "ok"
    elif variant == "output-is-input":
        del g.node[:]
        g.node.append(helper.make_node("Flatten", ["input"], ["flatin"]))
        g.output[0].name = "flatin"
        expect = "any"
    elif variant == "duplicate-node-outputs":
        g.node.append(helper.make_node("Relu", ["conv"], ["relu"]))
    return Made(_save_onnx(proto, dst / f"{variant}.onnx"), expect, f"onnx graph {variant}", hang_prone=hang)


METADATA_VALUES: dict[str, list[tuple[str, str]]] = {
    "advaudit.range": [
        ("0,1", "ok"),
        ("1,0", "error"),
        ("abc", "error"),
        ("0,inf", "error"),
        ("nan,1", "error"),
        ("-inf,inf", "error"),
        ("0", "error"),
        ("0,1,2", "error"),
        ("", "error"),
        ("0,1e400", "error"),
        ("0,255", "any"),
    ],
    "advaudit.mean": [("0.5", "ok"), ("nan", "any"), ("inf", "any"), ("1,2", "error"), ("x", "error"), ("", "error")],
    "advaudit.std": [
        ("0.5", "ok"),
        ("0", "error"),
        ("-1", "error"),
        ("nan", "error"),
        ("1e-320", "any"),
        ("x", "error"),
    ],
    "advaudit.layout": [("nchw", "ok"), ("nhwc", "any"), ("NCHW", "ok"), ("sideways", "error"), ("", "error")],
    "advaudit.class_names": [
        ('["a","b","c"]', "ok"),
        ("a,b,c", "ok"),
        ("[" * 100000 + "]" * 100000, "error"),
        ('{"a": 1}', "error"),
        ("42", "error"),
        ('["a"]', "any"),
        ("", "any"),
        ("[1e400]", "ok"),
    ],
    "advaudit.input_shape": [
        ("1,8,8", "ok"),
        ("inf", "error"),
        ("nan", "error"),
        ("1e400", "error"),
        ("-1,8,8", "error"),
        ("0,8,8", "error"),
        ("1.5,8,8", "error"),
        ("1,8,8,8", "error"),
        ("x", "error"),
        ("9" * 400, "error"),
        ("3,8,8", "any"),
    ],
}


def onnx_metadata(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    from onnx import helper

    proto = tiny_onnx_proto()
    props = {p.key: p.value for p in proto.metadata_props}
    expects = []
    for key in rng.sample(sorted(METADATA_VALUES), rng.randint(1, 3)):
        value, expect = rng.choice(METADATA_VALUES[key])
        props[key] = value
        expects.append(expect)
    del proto.metadata_props[:]
    helper.set_model_props(proto, props)
    shown = {k: v[:30] for k, v in props.items()}
    return Made(_save_onnx(proto, dst / "metadata.onnx"), worst(*expects), f"onnx metadata {shown}")


def onnx_valid(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    proto = tiny_onnx_proto(softmax=rng.random() < 0.5, opset=rng.choice([13, 17, 18]))
    return Made(_save_onnx(proto, dst / "valid.onnx"), "ok", "onnx valid variant")


ONNX: dict[str, Callable[[random.Random, Seeds, Path], Made]] = {
    "onnx-bytes": onnx_bytes,
    "onnx-truncated": onnx_truncated,
    "onnx-opset": onnx_opset,
    "onnx-huge-dims": onnx_huge_dims,
    "onnx-odd-dims": onnx_odd_dims,
    "onnx-external": onnx_external,
    "onnx-graph": onnx_graph,
    "onnx-metadata": onnx_metadata,
    "onnx-valid": onnx_valid,
}


# ============================================================================================ TorchScript
def _members(path: Path) -> tuple[str, dict[str, bytes]]:
    members = mu.zip_members(path.read_bytes())
    root = next(iter(members)).split("/", 1)[0]
    return root, members


def ts_bytes(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    src = SAMPLE_FILES["torchscript"] if rng.random() < 0.4 else seeds.torchscript
    data, ops = mu.mutate_bytes(src.read_bytes(), rng)
    p = dst / "mutated.pt"
    p.write_bytes(data)
    pairs = SAMPLE_FILES["npz"] if src != seeds.torchscript else None
    return Made(
        p, "error" if ops == ["truncate"] else "any", f"torchscript bytes {src.name} {'+'.join(ops)}", pairs_with=pairs
    )


def ts_members(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Mutate, delete, duplicate or add members, rebuilding the zip with valid checksums."""
    root, members = _members(seeds.torchscript)
    name = rng.choice(sorted(members))
    op = rng.choice(["mutate", "mutate", "delete", "garbage-code", "add", "rename-root", "empty"])
    if op == "mutate":
        members[name], _ = mu.mutate_bytes(members[name], rng)
    elif op == "delete":
        del members[name]
    elif op == "garbage-code":
        code = [n for n in members if n.endswith(".py")] or [name]
        members[rng.choice(code)] = rng.choice(
            [
                b"import os\nos.system('touch /tmp/advaudit-fuzz-never')\n",
                b"def forward(self, x):\n    return x +\n",
                bytes(rng.randrange(256) for _ in range(200)),
                b"\xff\xfe" * 100,
            ]
        )
    elif op == "add":
        members[f"{root}/{rng.choice(['extra/x', 'data/99', '../escape', 'code/__torch__/evil.py'])}"] = b"x" * 10
    elif op == "rename-root":
        members = {("other/" + n.split("/", 1)[1]) if "/" in n else n: v for n, v in members.items()}
    else:
        members[name] = b""
    p = dst / "members.pt"
    p.write_bytes(mu.make_zip(members, compress=rng.random() < 0.3))
    return Made(p, "any", f"torchscript member {op} {name}")


def ts_pickle(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A payload pickle in place of data.pkl / constants.pkl, a torch.save checkpoint, or a bare pickle."""
    import torch

    marker = _marker(dst)
    variant = rng.choice(["data.pkl", "constants.pkl", "checkpoint", "bare-pickle", "extra-json"])
    p = dst / "payload.pt"
    if variant in ("data.pkl", "constants.pkl"):
        root, members = _members(seeds.torchscript)
        members[f"{root}/{variant}"] = payload_pickle(marker, rng)
        p.write_bytes(mu.make_zip(members))
    elif variant == "checkpoint":
        torch.save({"model": Payload(str(marker))}, str(p))
    elif variant == "bare-pickle":
        p.write_bytes(payload_pickle(marker, rng))
    else:
        root, members = _members(seeds.torchscript)
        members[f"{root}/extra/advaudit.json"] = payload_pickle(marker, rng)
        p.write_bytes(mu.make_zip(members))
    return Made(p, "error", f"torchscript pickle payload in {variant}", markers=[str(marker)])


def ts_zip_bomb(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A member that inflates far beyond --max-model-size (torch reads tensor records whole)."""
    root, members = _members(seeds.torchscript)
    storage = sorted(n for n in members if "/data/" in n and not n.endswith("/"))
    name = rng.choice(storage) if storage and rng.random() < 0.7 else f"{root}/data.pkl"
    members[name] = mu.zip_bomb_member(rng.choice([60, 120]) * 2**20)
    p = dst / "bomb.pt"
    p.write_bytes(mu.make_zip(members, compress=True))
    return Made(p, "error", f"torchscript zip bomb in {name.split('/', 1)[-1]}", args=["--max-model-size", "20"])


EXTRA_JSON: list[tuple[bytes, str]] = [
    (b'{"range": [0, 1], "input_shape": [1, 8, 8]}', "ok"),
    (b"not json", "error"),
    (b"[1, 2]", "error"),
    (b"[" * 100000 + b"]" * 100000, "error"),
    (b'{"input_shape": [1e400, 8, 8]}', "error"),
    (b'{"input_shape": "nan"}', "error"),
    (b'{"range": [1, 0]}', "error"),
    (b'{"class_names": 5}', "error"),
    (b'{"unknown": 1}', "error"),
    (b"\xff\xfe\x00", "error"),
    (b"", "any"),
    (b'{"input_shape": [3, 8, 8]}', "error"),
    (b'{"input_shape": [1, 8, 8], "std": [0]}', "error"),
    (b'{"layout": "nhwc", "input_shape": [1, 8, 8]}', "any"),
]


def ts_extra_json(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    root, members = _members(seeds.torchscript)
    content, expect = rng.choice(EXTRA_JSON)
    members[f"{root}/extra/advaudit.json"] = content
    p = dst / "extra.pt"
    p.write_bytes(mu.make_zip(members))
    return Made(p, expect, f"torchscript advaudit.json {content[:40]!r}")


def ts_valid(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    p = dst / "valid.pt"
    shutil.copy(seeds.torchscript, p)
    return Made(p, "ok", "torchscript valid")


TORCHSCRIPT: dict[str, Callable[[random.Random, Seeds, Path], Made]] = {
    "ts-bytes": ts_bytes,
    "ts-members": ts_members,
    "ts-pickle": ts_pickle,
    "ts-zip-bomb": ts_zip_bomb,
    "ts-extra-json": ts_extra_json,
    "ts-valid": ts_valid,
}


# ================================================================================================ .pt2
def _pt2_edit(seeds: Seeds, dst: Path, edit: Callable[[dict[str, bytes], str], None], compress: bool = False) -> Path:
    root, members = _members(seeds.pt2)
    rel = {n.split("/", 1)[1]: v for n, v in members.items()}
    edit(rel, root)
    p = dst / "program.pt2"
    p.write_bytes(mu.make_zip({f"{root}/{k}": v for k, v in rel.items()}, compress=compress))
    return p


def _program_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes], str], None]:
    def apply(items: dict[str, bytes], root: str) -> None:
        program = json.loads(items["models/model.json"])
        edit(program)
        items["models/model.json"] = json.dumps(program).encode()

    return apply


def pt2_hostile(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """The hostile archives of tests/test_export_model.py: everything torch.export.load would unpickle,
    import or evaluate, each carrying a payload that would create the marker."""
    marker = str(_marker(dst))

    def first_node(p: dict[str, Any]) -> dict[str, Any]:
        return p["graph_module"]["graph"]["nodes"][0]

    def input_dim0(p: dict[str, Any]) -> dict[str, Any]:
        return p["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]

    def pickled_weight(items: dict[str, bytes], root: str) -> None:
        config = json.loads(items["data/weights/model_weights_config.json"])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        items[f"data/weights/{first['path_name']}"] = pickle.dumps(Payload(marker))
        items["data/weights/model_weights_config.json"] = json.dumps(config).encode()

    variants: dict[str, tuple[Callable[[dict[str, bytes], str], None], str]] = {
        "pickled-example-inputs": (
            lambda i, r: i.update({"data/sample_inputs/model.pt": pickle.dumps(Payload(marker))}),
            "error",
        ),
        "pickled-weight": (pickled_weight, "error"),
        "aotinductor": (lambda i, r: i.update({"data/aotinductor/model/model.so": b"\x7fELF"}), "error"),
        "legacy-pickle": (lambda i, r: i.update({"data/weights/model.pt": pickle.dumps(Payload(marker))}), "error"),
        "expression": (
            _program_edit(lambda p: input_dim0(p).update(expr_str=f"open('{marker}', 'w') and Symbol('s0')")),
            "error",
        ),
        "target": (_program_edit(lambda p: first_node(p).update(target="torch.os.system")), "error"),
        "from-file": (
            _program_edit(lambda p: first_node(p).update(target="torch.ops.aten.from_file.default")),
            "error",
        ),
        "arg-name": (
            _program_edit(
                lambda p: p["graph_module"]["module_call_graph"][0]["signature"].update(
                    forward_arg_names=[f"x=open('{marker}', 'w')"]
                )
            ),
            "error",
        ),
        "guards-code": (_program_edit(lambda p: p.update(guards_code=[f"open({marker!r}, 'w') is None"])), "ok"),
        "duplicate-member": (lambda i, r: i.update({"MODELS/model.json": b"{}"}), "error"),
    }
    variant = rng.choice(sorted(variants))
    edit, expect = variants[variant]
    try:
        p = _pt2_edit(seeds, dst, edit)
    except (KeyError, IndexError, TypeError):  # the graph's layout differs: a damaged archive all the same
        p = _pt2_edit(seeds, dst, lambda i, r: i.update({"models/model.json": b"{}"}))
        variant, expect = f"{variant} (layout differs: emptied)", "error"
    return Made(p, expect, f"pt2 hostile {variant}", markers=[marker])


def pt2_json(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Random tree mutations of the graph JSON or a weights/constants table."""
    target = rng.choice(
        [
            "models/model.json",
            "models/model.json",
            "data/weights/model_weights_config.json",
            "data/constants/model_constants_config.json",
        ]
    )
    edits: list[str] = []

    def edit(items: dict[str, bytes], root: str) -> None:
        if target not in items:
            return
        tree = json.loads(items[target])
        new, done = mu.mutate_tree(tree, rng)
        edits.extend(done)
        items[target] = mu.dumps(new).encode()

    p = _pt2_edit(seeds, dst, edit)
    return Made(p, "any", f"pt2 json {target.rsplit('/', 1)[-1]}: {'; '.join(edits)[:160]}")


def pt2_bytes(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    data, ops = mu.mutate_bytes(seeds.pt2.read_bytes(), rng)
    p = dst / "mutated.pt2"
    p.write_bytes(data)
    return Made(p, "error" if ops == ["truncate"] else "any", f"pt2 bytes {'+'.join(ops)}")


def pt2_bomb(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    def edit(items: dict[str, bytes], root: str) -> None:
        name = next((n for n in sorted(items) if n.startswith("data/weights/weight")), "data/weights/weight_0")
        items[name] = mu.zip_bomb_member(60 * 2**20)

    p = _pt2_edit(seeds, dst, edit, compress=True)
    return Made(p, "error", "pt2 zip bomb", args=["--max-model-size", "20"])


def pt2_extra(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    content, expect = rng.choice(EXTRA_JSON)
    p = _pt2_edit(seeds, dst, lambda items, root: items.update({"extra/advaudit.json": content}))
    return Made(p, expect, f"pt2 advaudit.json {content[:40]!r}")


def pt2_valid(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    p = dst / "valid.pt2"
    shutil.copy(seeds.pt2, p)
    return Made(p, "ok", "pt2 valid")


PT2: dict[str, Callable[[random.Random, Seeds, Path], Made]] = {
    "pt2-hostile": pt2_hostile,
    "pt2-json": pt2_json,
    "pt2-bytes": pt2_bytes,
    "pt2-bomb": pt2_bomb,
    "pt2-extra": pt2_extra,
    "pt2-valid": pt2_valid,
}

MODELS = {**ONNX, **TORCHSCRIPT, **PT2}


def valid_model(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """The tiny model in one of its three formats (ONNX most often: it is the cheapest to load)."""
    pick = rng.random()
    src = seeds.onnx if pick < 0.7 else seeds.torchscript if pick < 0.9 else seeds.pt2
    return Made(src, "ok", f"valid {src.suffix}")


# ================================================================================================== npz
def _save_npz(path: Path, compress: bool = False, **arrays: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return path


def npz_bytes(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    real = rng.random() < 0.4
    src = SAMPLE_FILES["npz"] if real else seeds.npz
    data, ops = mu.mutate_bytes(src.read_bytes(), rng)
    p = dst / "mutated.npz"
    p.write_bytes(data)
    return Made(
        p, "any", f"npz bytes {src.name} {'+'.join(ops)}", pairs_with=SAMPLE_MODELS / "mnist_cnn.pt" if real else None
    )


def npz_member(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Mutate the .npy bytes inside the archive (header or data) and rebuild the zip with valid checksums."""
    members = mu.zip_members(seeds.npz.read_bytes())
    name = rng.choice(sorted(members))
    data = members[name]
    if rng.random() < 0.5 and data.startswith(b"\x93NUMPY"):
        hlen = struct.unpack("<H", data[8:10])[0]
        header = data[10 : 10 + hlen].decode("latin1")
        header = rng.choice(
            [
                header.replace("(30,", "(1000000000000,"),
                header.replace("'|u1'", "'<c16'"),
                header.replace("False", "True"),
                header.replace("'|u1'", "'|O'"),
                header.replace("(30,", "(-1,"),
                header.replace("(30,", "(30, 99999999,"),
                header.replace("'<i8'", "'<f2'"),
                header.replace("'|u1'", "'<M8[s]'"),
                header.replace("'|u1'", "'V64'"),
                "{'descr': 'x'" + " " * (len(header) - 13),
                header.replace("(30,", "(2**64,"),
                header.replace("(30,", "(0,"),
            ]
        )
        data = data[:8] + struct.pack("<H", len(header)) + header.encode("latin1") + data[10 + hlen :]
        edit = f"header {header.strip()[:70]}"
    else:
        data, ops = mu.mutate_bytes(data, rng)
        edit = "+".join(ops)
    members[name] = data
    p = dst / "member.npz"
    p.write_bytes(mu.make_zip(members, compress=rng.random() < 0.3))
    return Made(p, "any", f"npz member {name} {edit}")


def npz_arrays(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Well-formed archives with the wrong content."""
    x, y = tiny_data()
    n = len(x)
    marker = _marker(dst)
    variant = rng.choice(
        [
            "object-x",
            "object-y",
            "pickled-payload",
            "mismatched",
            "nan",
            "inf",
            "complex",
            "strings",
            "bool",
            "float16",
            "int-range",
            "zero-samples",
            "5d",
            "1d",
            "nhwc",
            "hw",
            "no-x",
            "no-y",
            "extra",
            "y-strings",
            "y-float-frac",
            "y-nan",
            "y-huge",
            "y-negative",
            "y-onehot",
            "y-3d",
            "y-bool",
            "y-empty",
            "float-in-range",
            "float-out",
            "datetime",
            "structured",
            "class-names-object",
            "class-names-2d",
            "uint16",
            "int64-small",
            "x-scalar",
            "y-float-whole",
            "y-uint64-max",
            "compressed",
            "one-sample",
        ]
    )
    arrays: dict[str, Any] = {"x": x, "y": y}
    expect = "error"
    markers: list[str] = []
    if variant == "object-x":
        arrays["x"] = np.array([x[0], "a"], dtype=object)
    elif variant == "object-y":
        arrays["y"] = np.array(list(y), dtype=object)
    elif variant == "pickled-payload":
        arrays["x"] = np.array([Payload(str(marker))], dtype=object)
        markers = [str(marker)]
    elif variant == "mismatched":
        arrays["y"] = y[: rng.randint(0, n - 1)]
    elif variant in ("nan", "inf"):
        xf = x.astype(np.float32) / 255
        xf[0].flat[rng.randrange(xf[0].size)] = np.nan if variant == "nan" else -np.inf  # in the first sample
        arrays["x"] = xf
    elif variant == "complex":
        arrays["x"] = (x / 255).astype(np.complex64)
    elif variant == "strings":
        arrays["x"] = x.astype(str)
    elif variant == "bool":
        arrays["x"] = x > 127
        expect = "ok"
    elif variant == "float16":
        arrays["x"] = (x / 255).astype(np.float16)
        expect = "ok"
    elif variant == "int-range":
        arrays["x"] = x.astype(np.int64) * 1000
    elif variant == "zero-samples":
        arrays["x"], arrays["y"] = x[:0], y[:0]
    elif variant == "5d":
        arrays["x"] = x[:, None]
        expect = "any"
    elif variant == "1d":
        arrays["x"] = x.reshape(-1)[:n]
    elif variant == "nhwc":
        arrays["x"] = x.transpose(0, 2, 3, 1)
        expect = "ok"
    elif variant == "hw":
        arrays["x"] = x[:, 0]
        expect = "ok"
    elif variant == "no-x":
        arrays = {"images": x, "y": y}
    elif variant == "no-y":
        del arrays["y"]
        expect = "any"  # fine for unlabelled uses (detect --inputs), an error where labels are needed
    elif variant == "extra":
        arrays["junk"] = np.arange(5)
        expect = "ok"
    elif variant == "y-strings":
        arrays["y"] = y.astype(str)
    elif variant == "y-float-frac":
        arrays["y"] = y + 0.5
    elif variant == "y-nan":
        yf = y.astype(np.float64)
        yf[rng.randrange(n)] = np.nan
        arrays["y"] = yf
    elif variant == "y-huge":
        yf = y.astype(np.float64)
        yf[rng.randrange(n)] = rng.choice([1e300, 1e19, -1e19, 2.0**63])
        arrays["y"] = yf
    elif variant == "y-negative":
        arrays["y"] = y - 1
    elif variant == "y-onehot":
        arrays["y"] = np.eye(CLASSES, dtype=np.float32)[y]
        expect = "ok"
    elif variant == "y-3d":
        arrays["y"] = y.reshape(n, 1, 1)
        expect = "any"
    elif variant == "y-bool":
        arrays["y"] = y > 0
        expect = "any"
    elif variant == "y-empty":
        arrays["y"] = np.zeros((n, 0))
    elif variant == "float-in-range":
        arrays["x"] = (x / 255).astype(np.float64)
        expect = "ok"
    elif variant == "float-out":
        arrays["x"] = x.astype(np.float32)  # 0..255 for a model in 0..1
    elif variant == "datetime":
        arrays["x"] = x.astype("datetime64[s]")
    elif variant == "structured":
        arrays["x"] = np.zeros(n, dtype=[("a", "u1", (1, SIDE, SIDE))])
    elif variant == "class-names-object":
        arrays["class_names"] = np.array([None, 1, "c"], dtype=object)
    elif variant == "class-names-2d":
        arrays["class_names"] = np.arange(6).reshape(3, 2)
        expect = "ok"
    elif variant == "uint16":
        arrays["x"] = x.astype(np.uint16) * 200
    elif variant == "int64-small":
        arrays["x"] = (x > 127).astype(np.int64)
        expect = "ok"
    elif variant == "x-scalar":
        arrays["x"] = np.float32(0.5)
    elif variant == "y-float-whole":
        arrays["y"] = y.astype(np.float32)
        expect = "ok"
    elif variant == "y-uint64-max":
        yu = y.astype(np.uint64)
        yu[0] = np.iinfo(np.uint64).max
        arrays["y"] = yu
    elif variant == "compressed":
        p = _save_npz(dst / "compressed.npz", compress=True, **arrays)
        return Made(p, "ok", "npz compressed")
    elif variant == "one-sample":
        arrays["x"], arrays["y"] = x[:1], y[:1]
        expect = "any"
    p = dst / f"{variant}.npz"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, **arrays)  # object arrays are pickled here: allow_pickle is numpy's default for saving
    return Made(
        p,
        expect,
        f"npz {variant}",
        markers=markers,
        selected_only=variant in ("nan", "inf", "float-out", "y-negative", "y-uint64-max"),
    )


def npz_not_zip(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    marker = _marker(dst)
    variant = rng.choice(["random", "empty", "npy", "pickle", "text", "folder", "gzip", "zip-empty", "zip-bomb"])
    p = dst / "data.npz"
    args: list[str] = []
    if variant == "random":
        p.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 5000]))))
    elif variant == "empty":
        p.write_bytes(b"")
    elif variant == "npy":
        buf = io.BytesIO()
        np.save(buf, tiny_data()[0])
        p.write_bytes(buf.getvalue())
    elif variant == "pickle":
        p.write_bytes(payload_pickle(marker, rng))
    elif variant == "text":
        p.write_text("x,y\n1,2\n")
    elif variant == "folder":
        p.mkdir()
    elif variant == "gzip":
        p.write_bytes(gzip.compress(seeds.npz.read_bytes()))
    elif variant == "zip-empty":
        p.write_bytes(mu.make_zip({}))
    else:  # x inflates to 64 MB of 64x64 images: decompressed, then refused for its shape (quickly)
        x = np.zeros((2**14, 1, 64, 64), np.uint8)
        _save_npz(p, compress=True, x=x, y=np.zeros(len(x), np.int64))
        return Made(p, "error", "npz zip bomb (64 MB of zeros, 64x64 images)")
    return Made(p, "error", f"npz not a zip: {variant}", markers=[str(marker)], args=args)


NPZ: dict[str, Callable[[random.Random, Seeds, Path], Made]] = {
    "npz-bytes": npz_bytes,
    "npz-member": npz_member,
    "npz-arrays": npz_arrays,
    "npz-not-zip": npz_not_zip,
}


# ================================================================================================== IDX
def idx_files(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    x, y = tiny_data()
    images, labels = idx_bytes(x[:, 0]), idx_bytes(y.astype(np.uint8))
    variant = rng.choice(
        [
            "magic",
            "dtype-code",
            "short-header",
            "short-data",
            "ndim0",
            "ndim1",
            "ndim5",
            "huge-dims",
            "overflow-dims",
            "float",
            "labels-count",
            "labels-magic",
            "labels-missing",
            "gz",
            "gz-garbage",
            "gz-truncated",
            "bytes",
            "labels-bytes",
            "valid",
            "labels-3d",
            "labels-float",
        ]
    )
    expect = "error"
    name = "tiny-images-idx3-ubyte"
    if variant == "magic":
        images = bytes([rng.choice([1, 0xFF]), 0]) + images[2:]
    elif variant == "dtype-code":
        images = images[:2] + bytes([rng.choice([0x00, 0x07, 0x0A, 0xFF])]) + images[3:]
    elif variant == "short-header":
        images = images[: rng.randint(0, 15)]
    elif variant == "short-data":
        images = images[: rng.randint(16, len(images) - 1)]
    elif variant == "ndim0":
        images = images[:3] + b"\x00" + images[4:]
    elif variant == "ndim1":
        images = images[:3] + b"\x01" + images[4:]
    elif variant == "ndim5":
        images = (
            bytes([0, 0, 8, 5]) + b"".join(int(d).to_bytes(4, "big") for d in (len(x), 1, 1, SIDE, SIDE)) + x.tobytes()
        )
        expect = "any"
    elif variant == "huge-dims":
        images = (
            bytes([0, 0, 8, 3])
            + b"".join(int(d).to_bytes(4, "big") for d in (2**32 - 1, 2**32 - 1, 2**32 - 1))
            + images[16:]
        )
    elif variant == "overflow-dims":
        images = bytes([0, 0, 8, 8]) + (2**32 - 1).to_bytes(4, "big") * 8 + images[16:]
    elif variant == "float":
        xf = (x[:, 0] / 255).astype(">f4")
        images = bytes([0, 0, 0x0D, 3]) + b"".join(int(d).to_bytes(4, "big") for d in xf.shape) + xf.tobytes()
        expect = "ok"
    elif variant == "labels-count":
        labels = idx_bytes(y[:-3].astype(np.uint8))
    elif variant == "labels-magic":
        labels = b"\x01\x02" + labels[2:]
    elif variant == "labels-missing":
        labels = b""
        expect = "any"
    elif variant == "gz":
        images, labels, name = gzip.compress(images), gzip.compress(labels), name + ".gz"
        expect = "ok"
    elif variant == "gz-garbage":
        images, name = bytes(rng.randrange(256) for _ in range(300)), name + ".gz"
    elif variant == "gz-truncated":
        comp = gzip.compress(images)
        images, name = comp[: rng.randrange(len(comp))], name + ".gz"
    elif variant == "bytes":
        images, _ = mu.mutate_bytes(images, rng)
        expect = "any"
    elif variant == "labels-bytes":
        labels, _ = mu.mutate_bytes(labels, rng)
        expect = "any"
    elif variant == "labels-3d":
        labels = idx_bytes(np.zeros((len(x), 2, 2), np.uint8))
    elif variant == "labels-float":
        yf = y.astype(">f8") + 0.5
        labels = bytes([0, 0, 0x0E, 1]) + len(yf).to_bytes(4, "big") + yf.tobytes()
    else:
        expect = "ok"
    folder = dst / "idx"
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(images)
    if labels:
        (folder / name.replace("images-idx3", "labels-idx1")).write_bytes(labels)
    return Made(p, expect, f"idx {variant}")


# ============================================================================================== images
def _png_header(width: int, height: int, mode_byte: int = 0) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height`` (valid CRC), then a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _png_with_text_bomb() -> bytes:
    """A valid 8x8 PNG with a zTXt chunk that inflates to 64 MB (Pillow's text-chunk limit)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (SIDE, SIDE)).save(buf, format="PNG")
    data = buf.getvalue()
    body = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]


def _image_bytes(mode: str, fmt: str, size: tuple[int, int] = (SIDE, SIDE)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(5).integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


IMAGE_EDITS = [
    "truncate",
    "bit-flip",
    "bytes",
    "huge-header",
    "bomb-warning-header",
    "zero-bytes",
    "text-as-png",
    "mode-rgb",
    "mode-rgba",
    "mode-p",
    "mode-i16",
    "mode-f-tiff",
    "mode-cmyk-jpeg",
    "mode-1",
    "mode-la",
    "other-size",
    "other-size-resized",
    "gif",
    "webp",
    "bmp",
    "jpeg-corrupt",
    "symlink-loop",
    "symlink-dev",
    "broken-symlink",
    "fifo",
    "text-file",
    "dir-loop",
    "subfolder",
    "ztxt-bomb",
    "empty-class",
    "class-superscript",
    "class-huge-number",
    "class-negative",
    "class-mixed",
    "class-only",
    "class-arabic-digit",
    "huge-real-image",
]


def image_folder(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """The tiny images in class folders, with one or two hostile edits."""
    root = dst / "images"
    shutil.copytree(seeds.image_folder, root, symlinks=True)
    files = sorted(root.glob("*/*.png"))
    expects, args, hang, names = [], [], False, []
    for k, edit in enumerate(rng.sample(IMAGE_EDITS, rng.randint(1, 2))):
        target = files[k]  # the first images (selected by any --n without --seed/--offset), one per edit
        if not target.exists():
            continue
        names.append(edit)
        expect = "ok"
        data = target.read_bytes()
        if edit == "truncate":  # inside the header or the image data (a PNG cut in its IEND chunk still decodes)
            target.write_bytes(data[: rng.randrange(max(1, len(data) - 16))])  # before the IDAT CRC and IEND
            expect = "error"
        elif edit == "bit-flip":
            target.write_bytes(mu.bit_flip(data, rng))
            expect = "any"
        elif edit == "bytes":
            target.write_bytes(mu.mutate_bytes(data, rng)[0])
            expect = "any"
        elif edit == "huge-header":
            target.write_bytes(
                _png_header(*rng.choice([(100000, 100000), (2**31 - 1, 1), (1, 2**31 - 1), (65535, 65535)]))
            )
            expect = "error"
        elif edit == "bomb-warning-header":
            target.write_bytes(_png_header(12000, 12000))
            expect = "error"
        elif edit == "zero-bytes":
            target.write_bytes(b"")
            expect = "error"
        elif edit == "text-as-png":
            target.write_text("this is not an image\n")
            expect = "error"
        elif edit.startswith("mode-"):
            mode, fmt = {
                "mode-rgb": ("RGB", "PNG"),
                "mode-rgba": ("RGBA", "PNG"),
                "mode-p": ("P", "PNG"),
                "mode-i16": ("I;16", "PNG"),
                "mode-f-tiff": ("F", "TIFF"),
                "mode-cmyk-jpeg": ("CMYK", "JPEG"),
                "mode-1": ("1", "PNG"),
                "mode-la": ("LA", "PNG"),
            }[edit]
            suffix = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg"}[fmt]
            target.unlink()
            target.with_suffix(suffix).write_bytes(_image_bytes(mode, fmt))
        elif edit in ("other-size", "other-size-resized"):
            target.write_bytes(_image_bytes("L", "PNG", (SIDE * 2, SIDE + 3)))
            if edit == "other-size":
                expect = "error"
            else:
                args = ["--resize", str(SIDE), "--crop", str(SIDE)]
        elif edit in ("gif", "webp", "bmp"):
            target.unlink()
            target.with_suffix("." + edit).write_bytes(_image_bytes("L", edit.upper()))
        elif edit == "jpeg-corrupt":
            target.unlink()
            target.with_suffix(".jpg").write_bytes(mu.mutate_bytes(_image_bytes("L", "JPEG"), rng)[0])
            expect = "any"
        elif edit == "symlink-loop":
            os.symlink("loop.png", target.parent / "loop.png")
        elif edit == "symlink-dev":
            os.symlink(rng.choice(DEVICE_FILES), target.parent / "device.png")
            hang = True
        elif edit == "broken-symlink":
            os.symlink("/nonexistent/advaudit.png", target.parent / "broken.png")
        elif edit == "fifo":
            _fifo(target.parent / "fifo.png")
            hang = True
        elif edit == "text-file":
            (target.parent / "notes.txt").write_text("ignored\n")
        elif edit == "dir-loop":
            os.symlink("..", target.parent / "up")
        elif edit == "subfolder":
            (target.parent / "nested").mkdir(exist_ok=True)
            shutil.copy(target, target.parent / "nested" / "deeper.png")
        elif edit == "ztxt-bomb":
            target.write_bytes(_png_with_text_bomb())
            expect = "any"
        elif edit == "empty-class":
            (root / "3").mkdir(exist_ok=True)
        elif edit.startswith("class-"):
            name = {
                "class-superscript": "²",
                "class-huge-number": "99999999999999999999999",
                "class-negative": "-1",
                "class-mixed": "cats",
                "class-only": "0",
                "class-arabic-digit": "٣",
            }[edit]
            folder = root / name
            folder.mkdir(exist_ok=True)
            shutil.copy(target, folder / "extra.png")
            expect = {
                "class-superscript": "any",
                "class-huge-number": "error",
                "class-negative": "any",
                "class-mixed": "any",
                "class-only": "ok",
                "class-arabic-digit": "ok",
            }[edit]
        elif edit == "huge-real-image":
            target.write_bytes(_image_bytes("L", "PNG", (4000, 3000)))
            expect = "error"
        expects.append(expect)
    return Made(
        root,
        worst(*expects) if expects else "ok",
        f"image folder {'+'.join(names)}",
        args=args,
        hang_prone=hang,
        selected_only=True,
    )


LABEL_LISTS: list[tuple[str, str]] = [
    ("valid", "ok"),
    ("header", "ok"),
    ("huge-label", "error"),
    ("negative", "error"),
    ("missing-file", "error"),
    ("garbage", "error"),
    ("binary", "error"),
    ("three-fields", "error"),
    ("from-name", "ok"),
    ("from-name-bad", "error"),
    ("from-name-huge", "error"),
    ("labels-folder", "error"),
    ("dev-zero", "error"),
    ("out-of-classes", "error"),
    ("duplicate-lines", "ok"),
    ("paths", "ok"),
    ("empty", "error"),
    ("bom", "any"),
]


def flat_images(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A flat folder of images labelled by a ``FILE LABEL`` list or ``from-name``."""
    folder = dst / "flat"
    folder.mkdir(parents=True, exist_ok=True)
    files = [f for c in sorted(seeds.image_folder.iterdir()) for f in sorted(c.glob("*.png"))[:5]]  # 5 per class
    for f in files:
        shutil.copy(f, folder / f.name)
    names = [f.name for f in files]
    labels = [int(f.stem.rsplit("_", 1)[1]) for f in files]
    variant, expect = rng.choice(LABEL_LISTS)
    lp = dst / "labels.csv"
    rows = [f"{n},{lab}" for n, lab in zip(names, labels)]
    hang = False
    if variant == "valid":
        lp.write_text("\n".join(rows) + "\n")
    elif variant == "header":
        lp.write_text("file,label\n" + "\n".join(rows) + "\n# comment\n")
    elif variant == "huge-label":
        rows[0] = f"{names[0]},{rng.choice(['99999999999999999999999', '9' * 400, '18446744073709551616'])}"
        lp.write_text("\n".join(rows))
    elif variant == "negative":
        rows[0] = f"{names[0]},-4"
        lp.write_text("\n".join(rows))
    elif variant == "missing-file":
        lp.write_text("\n".join(rows[1:]))
    elif variant == "garbage":
        lp.write_text("\n".join(rows[:3] + ["this is , not , a row"]))
    elif variant == "binary":
        lp.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    elif variant == "three-fields":
        lp.write_text("\n".join(r + ",1" for r in rows))
    elif variant == "labels-folder":
        lp.mkdir()
    elif variant == "dev-zero":
        lp = Path(rng.choice(DEVICE_FILES))
        hang = True
    elif variant == "out-of-classes":
        rows[0] = f"{names[0]},7"
        lp.write_text("\n".join(rows))
    elif variant == "duplicate-lines":
        lp.write_text("\n".join(rows + rows))
    elif variant == "paths":
        lp.write_text("\n".join(f"./{r}" if False else r for r in rows))
    elif variant == "empty":
        lp.write_text("")
    elif variant == "bom":
        lp.write_bytes(("\ufeff" + "\n".join(rows)).encode("utf-8"))
    elif variant.startswith("from-name"):
        lp = Path("from-name")
        if variant == "from-name-bad":
            shutil.copy(files[0], folder / "nolabel.png")
        elif variant == "from-name-huge":
            shutil.copy(files[0], folder / f"img_{rng.choice(['99999999999999999999999', '9' * 200])}.png")
    return Made(folder, expect, f"flat images, labels {variant}", args=["--labels", str(lp)], hang_prone=hang)


def data_valid(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    pick = rng.random()
    if pick < 0.75:
        return Made(seeds.npz, "ok", "valid npz")
    if pick < 0.9:
        return Made(seeds.image_folder, "ok", "valid image folder")
    return Made(seeds.idx, "ok", "valid idx")


def data_device(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """Device files and FIFOs where data is expected, under names that pick each format."""
    name = rng.choice(["x.npz", "images-idx3-ubyte", "img.png", "x.npz"])
    if rng.random() < 0.5:
        p = _fifo(dst / name)
    else:
        p = dst / name
        os.symlink(rng.choice(DEVICE_FILES), p)
    return Made(p, "error", f"data {name} is a device file or FIFO", hang_prone=True)


DATA: dict[str, Callable[[random.Random, Seeds, Path], Made]] = {
    **NPZ,
    "idx": idx_files,
    "image-folder": image_folder,
    "flat-images": flat_images,
    "data-device": data_device,
}


# ============================================================================================ YAML configs
def _yaml_of(tree: Any) -> str:
    """JSON text is YAML too (flow style): this writes :class:`mutate.Deep` nesting and raw tokens."""
    return mu.dumps(tree) + "\n"


def config_yaml(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """An audit.yaml for the tiny model with one hostile edit."""
    import yaml

    base_text = audit_config(seeds.npz)
    base = yaml.safe_load(base_text)
    marker = _marker(dst)
    variant = rng.choice(
        [
            "tree",
            "tree",
            "tree",
            "billion-laughs",
            "deep",
            "tag-apply",
            "tag-name",
            "tag-binary",
            "tag-set",
            "tag-timestamp",
            "tag-custom",
            "syntax",
            "bytes",
            "empty",
            "scalar",
            "list",
            "unknown-key",
            "unknown-step-key",
            "wrong-type",
            "non-string-key",
            "duplicate-key",
            "data-path",
            "gates",
            "tolerance",
            "model-spec",
            "detect-step",
            "valid",
            "anchors-ok",
            "nul-in-path",
            "huge-n",
            "steps-empty",
        ]
    )
    expect, hang, text = "error", False, ""
    if variant == "tree":
        tree, edits = mu.mutate_tree(base, rng)
        text = _yaml_of(tree)
        expect = "any"
        variant = f"tree {'; '.join(edits)[:120]}"
    elif variant == "billion-laughs":
        levels = rng.choice([8, 12, 20])
        parts = ["&a0 [" + ", ".join(["0.1"] * 9) + "]"]
        parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
        bomb = "[" + ", ".join(parts) + "]"
        where = rng.choice(["eps", "gates", "top", "tolerance", "model", "attacks"])
        text = {
            "eps": base_text.replace("    eps: [0.1, 0.3]", f"    eps: {bomb}"),
            "gates": base_text.replace("  - robust_accuracy@0.1 >= 0.0", f"  - {bomb}"),
            "top": base_text + f"lol: {bomb}\n",
            "tolerance": base_text.replace("tolerance: 0.01", f"tolerance: {bomb}"),
            "model": base_text + f"model: {{range: {bomb}}}\n",
            "attacks": base_text.replace('    attacks: ["fgsm"]', f"    attacks: {bomb}"),
        }[where]
        variant = f"billion-laughs {levels} levels in {where}"
    elif variant == "deep":
        depth = rng.choice([1000, 10000, 100000])
        text = base_text.replace("    eps: [0.1, 0.3]", "    eps: " + "[" * depth + "0.1" + "]" * depth)
    elif variant == "tag-apply":
        text = base_text.replace("seed: 0", f'seed: !!python/object/apply:os.system ["touch {marker}"]')
    elif variant == "tag-name":
        text = base_text.replace("seed: 0", "seed: !!python/name:os.system")
    elif variant == "tag-binary":
        text = base_text.replace("seed: 0", "seed: !!binary aGVsbG8=")
    elif variant == "tag-set":
        text = base_text.replace("    eps: [0.1, 0.3]", "    eps: !!set {0.1: null}")
    elif variant == "tag-timestamp":
        text = base_text.replace("seed: 0", "seed: 2001-12-14t21:59:43.10-05:00")
    elif variant == "tag-custom":
        text = base_text.replace("seed: 0", "seed: !evil 0")
    elif variant == "syntax":
        text = base_text.replace("steps:", rng.choice(["steps: [", "steps: {", "\tsteps:", "steps: : :", "steps: '"]))
    elif variant == "bytes":
        text = mu.mutate_bytes(base_text.encode(), rng)[0].decode("latin1")
        expect = "any"
    elif variant == "empty":
        text = rng.choice(["", "\n", "# only a comment\n", "---\n", "...\n"])
    elif variant == "scalar":
        text = rng.choice(["42\n", "hello\n", "null\n", "~\n", ".inf\n"])
    elif variant == "list":
        text = "- kind: attack\n"
    elif variant == "unknown-key":
        text = base_text + rng.choice(["epss: 1\n", "steps2: []\n", "x: {a: 1}\n"])
    elif variant == "unknown-step-key":
        text = base_text.replace("    eps: [0.1, 0.3]", "    eps: [0.1, 0.3]\n    epss: [1]")
    elif variant == "wrong-type":
        key, value = rng.choice(
            [
                ("n: 6", "n: six"),
                ("n: 6", "n: [6]"),
                ("seed: 0", "seed: 0.5"),
                ("n: 6", "n: -6"),
                ("n: 6", "n: 0"),
                ("    eps: [0.1, 0.3]", "    eps: abc"),
                ("    eps: [0.1, 0.3]", "    eps: [.nan]"),
                ("    eps: [0.1, 0.3]", "    eps: [-.inf]"),
                ("    eps: [0.1, 0.3]", "    eps: [1.0e+400]"),
                ("    steps: 2", "    steps: -1"),
                ("    steps: 2", "    steps: .inf"),
                ("  - kind: attack", "  - kind: 5"),
                ("version: 1", "version: 2"),
                ("    method: mm-bd", "    method: [a]"),
                ("n: 6", "n: 6.5"),
            ]
        )
        text = base_text.replace(key, value)
    elif variant == "non-string-key":
        text = base_text + rng.choice(["1: 2\n", "null: x\n", "? [a, b]\n: c\n", "2.5: x\n", "true: 1\n"])
    elif variant == "duplicate-key":
        text = base_text + "n: 7\n"
        expect = "any"
    elif variant == "data-path":
        choice = rng.choice(["/dev/zero", "/dev/urandom", "fifo", "missing", "folder", "relative", "self"])
        if choice == "fifo":
            path = str(_fifo(dst / "fifo.npz"))
            hang = True
        elif choice in ("/dev/zero", "/dev/urandom"):
            path = choice
            hang = True
        elif choice == "missing":
            path = str(dst / "missing.npz")
        elif choice == "folder":
            (dst / "emptydir").mkdir(exist_ok=True)
            path = str(dst / "emptydir")
        elif choice == "relative":
            path = "../../../../../../../../etc/passwd"
        else:
            path = str(dst / "audit.yaml")
        text = base_text.replace(json.dumps(str(seeds.npz)), json.dumps(path))
        variant = f"data-path {choice}"
    elif variant == "gates":
        gate = rng.choice(
            [
                "clean_accuracy >= nan",
                "clean_accuracy >= 1e400",
                "x >= 1",
                "robust_accuracy@abc >= 0.1",
                "clean_accuracy",
                ">= 1",
                "clean_accuracy >= 0.5 >= 1",
                "attack.nosuch >= 1",
                "backdoor == maybe",
                "clean_accuracy >= -inf",
                "robust_accuracy@0.7 >= 0.1",
                "clean_accuracy ≥ 0.5",
                "robust_accuracy@1e400 >= 0.1",
                "robust_accuracy@nan >= 0.1",
            ]
        )
        text = base_text.replace("  - robust_accuracy@0.1 >= 0.0", f"  - {json.dumps(gate)}")
        expect = "any"
        variant = f"gate {gate!r}"
    elif variant == "tolerance":
        text = base_text.replace("tolerance: 0.01", f"tolerance: {rng.choice(['-1', '.nan', '2', 'x', '.inf', '[]'])}")
    elif variant == "model-spec":
        spec = rng.choice(
            [
                "{range: [1, 0]}",
                "{input_shape: [.inf]}",
                "{std: [0]}",
                "{range: x}",
                "{nosuch: 1}",
                "{range: [0, 1]}",
                "{mean: [.nan]}",
                "{input_shape: [1, 8, 8]}",
                "[1]",
            ]
        )
        text = base_text + f"model: {spec}\n"
        expect = (
            "ok" if spec in ("{range: [0, 1]}", "{input_shape: [1, 8, 8]}") else "any" if ".nan" in spec else "error"
        )
    elif variant == "detect-step":
        cal = calibration_json(rng, seeds, dst)
        text = base_text.replace(
            "gates:\n",
            f"  - kind: detect\n    calibration: {json.dumps(str(cal.path))}\n"
            "    lcr_mutations: 10\n    max_mutations: 20\n    n: 12\ngates:\n",
        )
        expect = "any" if cal.expect != "error" else "error"
        hang = cal.hang_prone
        variant = f"detect step, calibration {cal.kind}"
    elif variant == "valid":
        text = base_text
        expect = "ok"
    elif variant == "anchors-ok":
        text = base_text.replace("    eps: [0.1, 0.3]", "    eps: &e [0.1, 0.3]").replace(
            "gates:\n", "x_eps: *e\ngates:\n"
        )
        expect = "error"  # x_eps is an unknown key; the alias itself is harmless
    elif variant == "nul-in-path":
        text = base_text.replace(json.dumps(str(seeds.npz)), '"/tmp/a\\0b.npz"')
    elif variant == "huge-n":
        text = base_text.replace("n: 6", f"n: {rng.choice(['99999999999999999999999999', '1e400', '2147483648'])}")
        expect = "any"
    elif variant == "steps-empty":
        text = base_text.replace("steps:\n", "steps: []\nx:\n")
    p = dst / "audit.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogateescape")
    return Made(p, expect, f"audit.yaml {variant}", markers=[str(marker)], hang_prone=hang)


def spec_yaml(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A --spec file."""
    variant, text, expect, hang = rng.choice(
        [
            ("valid", "range: [0, 1]\n", "ok", False),
            ("empty", "", "ok", False),
            ("list", "- 1\n", "error", False),
            ("unknown", "nosuch: 1\n", "error", False),
            ("range", "range: [1, 0]\n", "error", False),
            (
                "laughs",
                "a: &a [1,1,1,1,1,1,1,1,1]\n"
                + "".join(f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]\n" for a, b in zip("abcdefg", "bcdefgh"))
                + "class_names: *h\n",
                "error",
                False,
            ),
            ("deep", "class_names: " + "[" * 50000 + "]" * 50000 + "\n", "error", False),
            ("tag", "range: !!python/object/apply:os.system ['true']\n", "error", False),
            ("input-shape-inf", "input_shape: [.inf, 8, 8]\n", "error", False),
            ("input-shape-nan", "input_shape: .nan\n", "error", False),
            ("binary", "\x00\xff\xfe", "error", False),
            ("class-names-map", "class_names: {a: 1}\n", "error", False),
            ("layout", "layout: [nchw]\n", "error", False),
            ("dev-zero", "", "error", True),
            ("folder", "", "error", False),
        ]
    )
    p = dst / "spec.yaml"
    if variant == "dev-zero":
        p = Path(rng.choice(DEVICE_FILES))
    elif variant == "folder":
        p.mkdir()
    else:
        p.write_text(text, encoding="utf-8", errors="surrogateescape")
    return Made(p, expect, f"spec yaml {variant}", hang_prone=hang)


# ============================================================================================ JSON files
def _json_file(
    rng: random.Random, base: Path, dst: Path, name: str, what: str, schema_key: str
) -> tuple[Path, str, str, bool]:
    """``base`` (a valid JSON document) with one hostile edit, written to ``dst/name``."""
    tree = json.loads(base.read_text())
    variant = rng.choice(
        [
            "tree",
            "tree",
            "tree",
            "tree",
            "schema",
            "deep",
            "not-json",
            "empty",
            "array",
            "huge-number",
            "nan",
            "bytes",
            "device",
            "fifo",
            "folder",
            "utf16",
            "valid",
            "big-int",
        ]
    )
    expect, hang = "error", False
    p = dst / name
    text: str | None = None
    if variant == "tree":
        new, edits = mu.mutate_tree(tree, rng)
        text = mu.dumps(new)
        expect = "any"
        variant = f"tree {'; '.join(edits)[:140]}"
    elif variant == "schema":
        tree[schema_key] = rng.choice(["advaudit.report/2", "", None, 1, "advaudit.calibration/0"])
        text = json.dumps(tree)
    elif variant == "deep":
        key = rng.choice(sorted(tree))
        tree[key] = mu.Deep(rng.choice([1000, 100000, 1000000]), 0, rng.choice(["list", "dict"]))
        text = mu.dumps(tree)
        expect = "any"  # deep nesting in a field the command ignores is harmless; the contract still holds
    elif variant == "not-json":
        text = rng.choice(["{", "}", "{'a': 1}", "nul", "[1,]", '{"a" 1}', "\x00"])
    elif variant == "empty":
        text = ""
    elif variant == "array":
        text = rng.choice(["[]", "[1, 2]", "42", '"text"', "null", "true"])
    elif variant == "huge-number":
        key = rng.choice(sorted(tree))
        tree[key] = mu.Raw(rng.choice(mu.RAW_NUMBERS))
        text = mu.dumps(tree)
        expect = "any"
    elif variant == "nan":
        key = rng.choice(sorted(tree))
        tree[key] = rng.choice([float("nan"), float("inf"), float("-inf")])
        text = json.dumps(tree)
        expect = "any"
    elif variant == "bytes":
        text = mu.mutate_bytes(json.dumps(tree).encode(), rng)[0].decode("latin1")
        expect = "any"
    elif variant == "device":
        p = Path(rng.choice(DEVICE_FILES))
        hang = True
    elif variant == "fifo":
        (dst / name).unlink(missing_ok=True)
        p = _fifo(dst / name)
        hang = True
    elif variant == "folder":
        p.unlink(missing_ok=True)
        p.mkdir(parents=True, exist_ok=True)
    elif variant == "utf16":
        p.write_bytes(json.dumps(tree).encode("utf-16"))
    elif variant == "valid":
        text = json.dumps(tree)
        expect = "ok"
    elif variant == "big-int":
        key = rng.choice(sorted(tree))
        tree[key] = 10 ** rng.choice([20, 400, 4000])
        text = json.dumps(tree)
        expect = "any"
    if text is not None:
        p.write_text(text, encoding="utf-8", errors="surrogateescape")
    return p, expect, f"{what} {variant}", hang


def calibration_json(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    p, expect, kind, hang = _json_file(rng, seeds.calibration, dst, "calib.json", "calibration", "schema")
    return Made(p, expect, kind, hang_prone=hang)


def report_json(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A report of a random kind with one hostile edit, its artifacts beside it (or hostile artifact paths)."""
    which = rng.choice(sorted(seeds.reports))
    base = seeds.reports[which]
    folder = dst / "report"
    if which == "audit":
        shutil.copytree(base.parent, folder)
    else:
        folder.mkdir(parents=True)
        if which == "attack":
            shutil.copy(seeds.attack_run / "grid.png", folder / "grid.png")
    hang = False
    if rng.random() < 0.25:  # artifact paths pointing at device files, FIFOs, outside files, huge names
        tree = json.loads(base.read_text())
        target = rng.choice(
            [
                "/dev/zero",
                "/dev/urandom",
                "fifo",
                "../../../../../../etc/passwd",
                "x" * 5000,
                "\x00",
                str(seeds.attack_run / "grid.png"),
                "artifacts",
            ]
        )
        if target == "fifo":
            target = str(_fifo(folder / "fifo.png"))
        hang = target in ("/dev/zero", "/dev/urandom") or target.endswith("fifo.png")
        for step in tree.get("steps", []) or [tree]:
            arts = step.setdefault("artifacts", {}) if which == "audit" else None
            if arts is not None:
                for k in list(arts) or ["examples"]:
                    arts[k] = target
        if which != "audit":
            tree["examples"] = target
        p = folder / "report.json"
        p.write_text(json.dumps(tree))
        return Made(p, "any", f"report {which} artifacts at {target[:40]!r}", hang_prone=hang)
    tmp = folder / "base.json"
    shutil.copy(base, tmp)
    p, expect, kind, hang = _json_file(rng, tmp, folder, "report.json", f"report {which}", "schema")
    tmp.unlink()
    return Made(p, expect, kind, hang_prone=hang)


def baseline_json(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    tmp = dst / "base-audit.json"
    shutil.copy(seeds.reports["audit"], tmp)
    p, expect, kind, hang = _json_file(rng, tmp, dst, "baseline.json", "baseline", "schema")
    tmp.unlink()
    return Made(p, expect, kind, hang_prone=hang)


def safetensors_file(rng: random.Random, seeds: Seeds, dst: Path) -> Made:
    """A VQ-VAE file for ``vqvae:path=``: mutated bytes, a hostile header, a device file, or the valid one."""
    variant = rng.choice(["bytes", "bytes", "header", "device", "sample", "valid", "metadata"])
    p = dst / "vqvae.safetensors"
    expect, hang = "any", False
    if variant == "bytes":
        p.write_bytes(mu.mutate_bytes(seeds.vqvae.read_bytes(), rng)[0])
    elif variant == "header":
        header = rng.choice(
            [
                b'{"a": {"dtype": "F32", "shape": [1000000000000], "data_offsets": [0, 4000000000000]}}',
                b"[" * 10000 + b"]" * 10000,
                b"{}",
                b"not json",
            ]
        )
        p.write_bytes(struct.pack("<Q", rng.choice([len(header), 2**62, 0])) + header)
        expect = "error"
    elif variant == "device":
        p = Path(rng.choice(DEVICE_FILES))
        expect, hang = "error", True
    elif variant == "sample":
        shutil.copy(SAMPLE_FILES["vqvae"], p)  # trained on 1x28x28: does not fit the tiny images
        expect = "error"
    elif variant == "metadata":
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open

        with safe_open(str(seeds.vqvae), framework="pt") as f:
            meta = dict(f.metadata() or {})
        key = rng.choice(sorted(meta))
        meta[key] = rng.choice(["", "x", "-1", "1e400", "99999999999", "1,8", "0,0,0", json.dumps([1] * 3)])
        save_file(load_file(str(seeds.vqvae)), str(p), metadata=meta)
        variant = f"metadata {key}={meta[key][:20]!r}"
    else:
        shutil.copy(seeds.vqvae, p)
        expect = "ok"
    return Made(p, expect, f"safetensors {variant}", hang_prone=hang)
