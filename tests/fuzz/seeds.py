"""Seed files the fuzzer mutates: a tiny classifier in every format, data in every format, and one
valid calibration, audit configuration and report of each kind.

Everything is built once into a cache folder (:class:`Seeds`) and is deterministic.  The tiny model
takes 1x8x8 inputs in [0, 1] and has 3 classes, so a valid case (an attack on two images, a backdoor
scan of a few steps) runs in well under a second; the real sample models in ``sample_models/`` are
mutated byte by byte as well (:data:`SAMPLE_FILES`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLE_MODELS = REPO / "sample_models"
SAMPLE_FILES = {
    "onnx": SAMPLE_MODELS / "mnist_badnets.onnx",
    "torchscript": SAMPLE_MODELS / "mnist_badnets.pt",
    "npz": SAMPLE_MODELS / "data" / "mnist_test_1k.npz",
    "trigger-npz": SAMPLE_MODELS / "data" / "mnist_badnets_trigger.npz",
    "vqvae": SAMPLE_MODELS / "mnist_vqvae.safetensors",
}
"""Real files from ``sample_models/`` whose bytes are mutated (MNIST: 1x28x28, 10 classes)."""

SIDE = 8
CLASSES = 3
PER_CLASS = 10
SPEC = {"range": [0, 1], "input_shape": [1, SIDE, SIDE]}


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of the tiny CNN: Conv(1->2, 3x3, pad 1) -> ReLU -> Flatten -> Linear(2*8*8 -> 3)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 0.6, (2, 1, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, (2,)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (CLASSES, 2 * SIDE * SIDE)).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }


def tiny_forward(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The tiny CNN in numpy (float64), for choosing balanced labels without a runtime."""
    n = len(x)
    pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, 2, SIDE, SIDE))
    for c in range(2):
        for i in range(3):
            for j in range(3):
                conv[:, c] += w["w1"][c, 0, i, j] * pad[:, 0, i : i + SIDE, j : j + SIDE]
        conv[:, c] += w["b1"][c]
    return np.maximum(conv, 0).reshape(n, -1) @ w["w2"].T.astype(np.float64) + w["b2"]


def tiny_onnx_proto(softmax: bool = False, opset: int = 17, weights: dict[str, np.ndarray] | None = None) -> Any:
    """The tiny CNN as an ONNX ModelProto built node by node (dynamic batch, advaudit metadata)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights or balanced_weights()
    inits = [numpy_helper.from_array(w[k], k) for k in ("w1", "b1", "w2", "b2")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1),
    ]
    out_name = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        out_name = "probs"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="advaudit-fuzz")
    model.ir_version = 8
    helper.set_model_props(model, {"advaudit.range": "0,1"})
    onnx.checker.check_model(model)
    return model


def balanced_weights() -> dict[str, np.ndarray]:
    """Tiny-CNN weights whose last bias makes the three classes about equally likely on random images."""
    w = tiny_weights()
    x = np.random.default_rng(1).random((600, 1, SIDE, SIDE))
    for _ in range(50):
        counts = np.bincount(tiny_forward(w, x).argmax(1), minlength=CLASSES)
        if counts.min() >= 150:
            break
        w["b2"] = (w["b2"] - 0.05 * (counts - counts.mean()) / counts.mean()).astype(np.float32)
    return w


def tiny_torch(weights: dict[str, np.ndarray] | None = None) -> Any:
    """The same network as a torch module."""
    import torch

    w = weights or balanced_weights()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * SIDE * SIDE, CLASSES),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w["w1"]))
        net[0].bias.copy_(torch.from_numpy(w["b1"]))
        net[3].weight.copy_(torch.from_numpy(w["w2"]))
        net[3].bias.copy_(torch.from_numpy(w["b2"]))
    return net.eval()


def tiny_data(n_per_class: int = PER_CLASS, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 8, 8) images labelled with the tiny model's own predictions, ``n_per_class`` each."""
    w = balanced_weights()
    x = np.random.default_rng(seed).integers(0, 256, (40 * n_per_class, 1, SIDE, SIDE), dtype=np.uint8)
    labels = tiny_forward(w, x.astype(np.float32) / 255.0).argmax(1)
    keep = np.concatenate([np.flatnonzero(labels == c)[:n_per_class] for c in range(CLASSES)])
    keep.sort()
    if len(keep) != CLASSES * n_per_class:  # pragma: no cover - the weights are balanced above
        raise RuntimeError("the tiny model does not predict every class")
    return x[keep], labels[keep].astype(np.int64)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _cli(*args: str) -> None:
    """Run advaudit in this process to make a seed file; a failure here is a broken seed, not a finding."""
    from advaudit.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["-q", *args])
    if code != 0:
        raise RuntimeError(f"seed command failed ({code}): advaudit {' '.join(args)}\n{buf.getvalue()}")


class Seeds:
    """The seed files, built on first use under ``root`` (kept there: a second :class:`Seeds` on the same
    folder, e.g. in a fuzz worker process, reuses them)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name

    def _fresh(self, name: str) -> Path | None:
        """``root/name`` if it still has to be built (None when it exists)."""
        p = self._path(name)
        return None if p.exists() else p

    # ------------------------------------------------------------------------------------------ models
    @cached_property
    def onnx(self) -> Path:
        """The tiny CNN as ONNX (opset 17, dynamic batch, ``advaudit.range`` metadata)."""
        import onnx

        p = self._fresh("tiny.onnx")
        if p is not None:
            onnx.save(tiny_onnx_proto(), str(p))
        return self._path("tiny.onnx")

    @cached_property
    def torchscript(self) -> Path:
        """The tiny CNN as a TorchScript archive with an ``advaudit.json`` extra file."""
        import torch

        p = self._fresh("tiny.pt")
        if p is not None:
            with _quiet():
                traced = torch.jit.trace(tiny_torch(), torch.zeros(2, 1, SIDE, SIDE))
                torch.jit.save(traced, str(p), _extra_files={"advaudit.json": json.dumps(SPEC)})
        return self._path("tiny.pt")

    @cached_property
    def pt2(self) -> Path:
        """The tiny CNN as a torch.export program with a dynamic batch."""
        import torch

        p = self._fresh("tiny.pt2")
        if p is not None:
            with _quiet():
                program = torch.export.export(
                    tiny_torch(), (torch.rand(3, 1, SIDE, SIDE),), dynamic_shapes=({0: torch.export.Dim("batch")},)
                )
                torch.export.save(program, str(p), extra_files={"advaudit.json": json.dumps(SPEC)})
        return self._path("tiny.pt2")

    # -------------------------------------------------------------------------------------------- data
    @cached_property
    def npz(self) -> Path:
        """30 labelled uint8 images (10 per class), the model's own predictions as labels."""
        p = self._fresh("tiny.npz")
        if p is not None:
            x, y = tiny_data()
            np.savez(p, x=x, y=y)
        return self._path("tiny.npz")

    @cached_property
    def idx(self) -> Path:
        """The same images as MNIST-style IDX files (``tiny-images-idx3-ubyte`` and its labels file)."""
        p = self._fresh("tiny-images-idx3-ubyte")
        if p is not None:
            x, y = tiny_data()
            p.write_bytes(idx_bytes(x[:, 0]))
            self._path("tiny-labels-idx1-ubyte").write_bytes(idx_bytes(y.astype(np.uint8)))
        return self._path("tiny-images-idx3-ubyte")

    @cached_property
    def image_folder(self) -> Path:
        """The images as PNG files in class sub-folders ``0/``, ``1/``, ``2/``."""
        from PIL import Image

        root = self._path("images")
        if not root.exists():
            x, y = tiny_data()
            for i, (img, label) in enumerate(zip(x, y)):
                folder = root / str(int(label))
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img[0], mode="L").save(folder / f"img_{i:03d}_{int(label)}.png")
        return root

    @cached_property
    def vqvae(self) -> Path:
        """A VQ-VAE for the tiny images (one epoch; the defence's weights, not a good purifier)."""
        p = self._fresh("tiny-vqvae.safetensors")
        if p is not None:
            _cli(
                "defend",
                "train-vqvae",
                "--data",
                str(self.npz),
                "--out",
                str(p),
                "--epochs",
                "1",
                "--hidden",
                "4",
                "--codes",
                "4",
                "--dim",
                "2",
            )
        return self._path("tiny-vqvae.safetensors")

    # ------------------------------------------------------------------------------- runs of the tiny model
    @cached_property
    def attack_run(self) -> Path:
        """Folder with ``report.json``, ``adv.npz`` (verified adversarial examples) and ``grid.png`` of a
        small FGSM attack on the tiny ONNX model."""
        d = self._path("attack-run")
        if not (d / "report.json").exists():
            tmp = self._path("attack-run.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            _cli(
                "attack",
                str(self.onnx),
                "--data",
                str(self.npz),
                "--n",
                "12",
                "--attack",
                "fgsm",
                "--eps",
                "0.3",
                "--report",
                str(tmp / "report.json"),
                "--save-adv",
                str(tmp / "adv.npz"),
                "--examples",
                str(tmp / "grid.png"),
                "--fail-under",
                "clean_accuracy=0.5",
            )
            os.replace(tmp, d)
        return d

    @cached_property
    def adversarial(self) -> Path:
        return self.attack_run / "adv.npz"

    @cached_property
    def calibration(self) -> Path:
        """A detect calibration of the tiny ONNX model."""
        p = self._fresh("calib.json")
        if p is not None:
            _cli(
                "detect",
                "calibrate",
                str(self.onnx),
                "--data",
                str(self.npz),
                "--out",
                str(p),
                "--mutations",
                "10",
                "--n",
                "12",
            )
        return self._path("calib.json")

    @cached_property
    def reports(self) -> dict[str, Path]:
        """One valid report per kind: ``attack``, ``scan-backdoor``, ``detect``, ``detect-evaluate``, ``audit``."""
        d = self._path("reports")
        if not (d / "audit" / "report.json").exists():
            tmp = self._path("reports.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            shutil.copy(self.attack_run / "report.json", tmp / "attack.json")
            _cli(
                "scan-backdoor",
                str(self.onnx),
                "--data",
                str(self.npz),
                "--method",
                "all",
                "--steps",
                "3",
                "--n",
                "15",
                "--seed",
                "0",
                "--report",
                str(tmp / "scan-backdoor.json"),
            )
            _cli(
                "detect",
                str(self.onnx),
                "--inputs",
                str(self.npz),
                "--calibration",
                str(self.calibration),
                "--n",
                "4",
                "--max-mutations",
                "20",
                "--report",
                str(tmp / "detect.json"),
            )
            _cli(
                "detect",
                "evaluate",
                str(self.onnx),
                "--clean",
                str(self.npz),
                "--adversarial",
                str(self.adversarial),
                "--n",
                "24",
                "--lcr-mutations",
                "10",
                "--max-mutations",
                "20",
                "--report",
                str(tmp / "detect-evaluate.json"),
            )
            config = tmp / "audit.yaml"
            config.write_text(audit_config(self.npz))
            _cli("audit", str(self.onnx), "--config", str(config), "--report-dir", str(tmp / "audit"))
            os.replace(tmp, d)
        return {
            "attack": d / "attack.json",
            "scan-backdoor": d / "scan-backdoor.json",
            "detect": d / "detect.json",
            "detect-evaluate": d / "detect-evaluate.json",
            "audit": d / "audit" / "report.json",
        }

    def build_all(self) -> None:
        """Build every seed now (before worker processes start using the folder)."""
        for name in (
            "onnx",
            "torchscript",
            "pt2",
            "npz",
            "idx",
            "image_folder",
            "vqvae",
            "attack_run",
            "calibration",
            "reports",
        ):
            getattr(self, name)


def audit_config(data: Path, extra_steps: str = "") -> str:
    """A small valid audit.yaml for the tiny model: one FGSM attack step, a data-free scan and two gates."""
    return f"""\
version: 1
data: {json.dumps(str(data))}
n: 6
seed: 0
steps:
  - kind: attack
    attacks: ["fgsm"]
    eps: [0.1, 0.3]
  - kind: scan-backdoor
    method: mm-bd
    steps: 2
{extra_steps}gates:
  - clean_accuracy >= 0.5
  - robust_accuracy@0.1 >= 0.0
baseline:
  tolerance: 0.01
"""


def idx_bytes(arr: np.ndarray) -> bytes:
    """An uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dimensions)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
