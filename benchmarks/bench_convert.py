"""Benchmark: how well advaudit turns exported image classifiers into differentiable twins.

    python benchmarks/bench_convert.py                                 # everything, default flags
    python benchmarks/bench_convert.py --arch resnet18 --arch squeezenet1_1 \\
        --n-calib 16 --n-check 8 --pgd-n 4                             # quick look
    python benchmarks/bench_convert.py --build-only                    # only fill the cache
    python benchmarks/bench_convert.py --json out.json                 # also write the table
    python benchmarks/bench_convert.py --from-json out.json            # re-print a (partial) table

What it builds (once; files are cached under ``--cache``, default ``benchmarks/.cache/convert``, and
rebuilt only when missing; an export or quantisation that failed is cached as ``NAME.error.txt``
and retried only with ``--retry-failed``):

* torchvision architectures (``--arch``, default all twelve) with *seeded random weights*
  (``weights=None`` after ``torch.manual_seed(--seed)``: nothing is downloaded).  A random-init
  network is made non-degenerate before anything is exported, and the cache records what was done
  (``meta.json``):

  1. BatchNorm running statistics are placeholders (mean 0, var 1) in an untrained network, which
     makes eval-mode activations explode or vanish with depth.  They are re-estimated: the BN layers
     alone are put in train mode (momentum ``None``: a plain average) and 64 random images are run
     through the network without gradients (networks without BN are untouched);
  2. the classifier layer (the last ``Linear``, or squeezenet's final 1x1 ``Conv2d``, with one output
     per class) is standardised per class on those images: ``W_k, b_k`` are rescaled so logit ``k``
     has mean 0 and std 3 over them.  Without this a random network predicts the same class for
     every input (the mean feature dominates), and argmax agreement says nothing.  A classifier
     initialised to zero (torchvision's ViT head) is first re-drawn from ``N(0, 1/fan_in)``; a head
     without bias (maxvit) is centred by projecting the mean feature out of every weight row.
     squeezenet's conv head is followed by ReLU and a global average: there the per-class spatial
     mean is standardised and all classes get the same offset (~80), so the ReLU almost never cuts;
     its logits are ~80 +- 3, which makes its relative diffs ~30x smaller than a centred net's.
  The network is still random: only its output statistics look like those of a trained one
  (``meta.json`` keeps, before and after, max |logit|, distinct argmax and median top-2 margin).

* per architecture and variant (``--variants``):
  ``fp32-op13`` / ``fp32-op17``: ``torch.onnx.export(..., dynamo=False)`` at opset 13 / 17, dynamic
  batch axis; ``fp32-dynamo``: ``torch.onnx.export(..., dynamo=True)`` at the exporter's default
  opset, dynamic batch; ``int8-qdq``: ``onnxruntime.quantization.quantize_static`` (QDQ format, int8
  activations and weights, per-channel weights unless ``--per-tensor``, MinMax calibration on
  ``--n-calib`` random images through a ``CalibrationDataReader``); ``int8-dynamic``:
  ``quantize_dynamic`` (QInt8 weights, ORT defaults otherwise); ``torchscript``: ``torch.jit.trace``
  saved with ``torch.jit.save``.  Both int8 variants quantise the opset-17 TorchScript-exporter file
  (``fp32-op17``) after ``onnxruntime.quantization.shape_inference.quant_pre_process`` as ORT
  recommends (retried with ``skip_symbolic_shape=True``, then skipped, if it fails; the row's note
  says which).

What it measures, per file, through advaudit's public API (``load_model`` with the spec
``range (0,1)``, ImageNet mean/std, ``input_shape (3,S,S)``):

* ``converts``: ``yes``, or why not (``model.gradients.note``, or the export / quantise / load
  failure); for rows that do not convert, the ops of the file that onnx2torch's converter registry
  (with advaudit's converters, where importable) has no converter for, at the file's opset;
* ``rel diff``: max |twin - runtime| / max |runtime logit| over the ``--n-check`` check inputs (the
  runtime is ONNX Runtime; for ``torchscript`` it is TorchScript itself, so the diff is 0 by design);
* ``agree``: argmax agreement of twin and runtime on the check inputs: the 20 ImageNet photos of
  ``/work/shared/data/samples/foolbox`` (resized to 256/224 of the size, centre-cropped), where
  present, then random images;
* ``pgd``: advaudit's own PGD (``run_attacks``, 10 steps, Linf eps 2/255, default step 2.5 eps / 10,
  random start, fp32 search unless ``--precision``) on the first ``--pgd-n`` check inputs, labelled
  with the runtime's own clean predictions (clean accuracy 100% by construction); the count is of
  adversarials ONNX Runtime (the deployment runtime) verified; ``rej`` counts candidates that fooled
  the twin but not the runtime;
* ``twin ms`` / ``native ms`` / ``ratio``: one forward + backward (cross-entropy, gradient w.r.t. the
  input, normalisation included) of a ``--batch`` batch through the twin (``model.logits``) and the
  native eager torch module, interleaved, median of ``--repeats`` after a warm-up, on every row whose
  model is fp32 (fp32-* and torchscript).

"Random images" are half i.i.d. uniform pixel noise, half smooth noise (7x7 uniform noise upsampled
bilinearly), all in [0, 1], from fixed seeds: calibration (BN, head, ORT), check and timing inputs
use different seeds.

The summary gives the rows that convert, agree on >= 99% of the check inputs and have at least one
verified PGD success, as a percentage of all rows; every other row with its reason; and the median
twin/native time ratio over the fp32-op13/op17/dynamo rows.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "benchmarks" / ".cache" / "convert"
SAMPLES = Path("/work/shared/data/samples/foolbox")

ARCHS = [
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "squeezenet1_1",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
    "shufflenet_v2_x1_0",
]
VARIANTS = ["fp32-op13", "fp32-op17", "fp32-dynamo", "int8-qdq", "int8-dynamic", "torchscript"]
FP32_ONNX = ("fp32-op13", "fp32-op17", "fp32-dynamo")
TIMED = FP32_ONNX + ("torchscript",)

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
NUM_CLASSES = 1000
BN_IMAGES = 64  # random images the BatchNorm statistics and the head are re-estimated on
BN_BATCH = 16
HEAD_STD = 3.0  # logit std per class after standardising the head
CALIB_VERSION = 2  # bump when calibrate() changes: cached files of another version are rebuilt
EXPORT_BATCH = 2  # example batch for the exporters (the batch axis is exported dynamic)
PGD_EPS = 2 / 255
PGD_STEPS = 10
SEED_CALIB, SEED_CHECK, SEED_TIME, SEED_ORT = 101, 202, 303, 404
AGREE_MIN = 0.99

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f}s] {msg}", flush=True)


def reason(exc: BaseException, limit: int = 240) -> str:
    """One line for a table: the exception's first non-empty line, type-prefixed."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}"[:limit]


# ------------------------------------------------------------------------------------------- inputs
def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` images (N, 3, size, size) in [0, 1]: even rows uniform pixel noise, odd rows smooth noise."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(0.0, 1.0, size=(n, 3, size, size)).astype(np.float32)
    smooth = torch.from_numpy(rng.uniform(0.0, 1.0, size=(n, 3, 7, 7)).astype(np.float32))
    smooth = F.interpolate(smooth, size=(size, size), mode="bilinear", align_corners=False).numpy()
    out[1::2] = smooth[1::2]
    return np.clip(out, 0.0, 1.0)


def photos(size: int) -> np.ndarray:
    """The ImageNet sample photos, resized (shorter side to 256/224 * size) and centre-cropped."""
    files = sorted(SAMPLES.glob("imagenet_*.jpg"))
    if not files:
        return np.zeros((0, 3, size, size), np.float32)
    from PIL import Image

    resize = int(round(size * 256 / 224))
    out = []
    for f in files:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        out.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out).astype(np.float32)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise_np(x: np.ndarray) -> np.ndarray:
    mean, std = np.array(MEAN, np.float32).reshape(1, 3, 1, 1), np.array(STD, np.float32).reshape(1, 3, 1, 1)
    return ((x - mean) / std).astype(
        np.float32
    )


# ------------------------------------------------------------------------------------- networks
def construct(arch: str, size: int, seed: int) -> torch.nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": NUM_CLASSES}
    if arch.startswith("vit_"):
        kwargs["image_size"] = size
    if arch.startswith("maxvit_"):
        kwargs["input_size"] = (size, size)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(arch, **kwargs).eval()


def classifier_layer(net: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The last Linear (or 1x1 Conv2d, squeezenet) with one output per class."""
    found = None
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == NUM_CLASSES:
            found = (name, m)
        elif isinstance(m, torch.nn.Conv2d) and m.out_channels == NUM_CLASSES:
            found = (name, m)
    if found is None:
        raise RuntimeError("no classifier layer with one output per class")
    return found


def output_stats(net: torch.nn.Module, x: np.ndarray) -> dict[str, Any]:
    with torch.no_grad():
        out = torch.cat([net(normalise(torch.from_numpy(x[i : i + BN_BATCH]))) for i in range(0, len(x), BN_BATCH)])
    top2 = out.topk(2, dim=1).values
    return {
        "finite": bool(torch.isfinite(out).all()),
        "max_abs_logit": float(out.abs().max()),
        "mean_class_std": float(out.std(dim=1).mean()),
        "distinct_argmax": int(out.argmax(1).unique().numel()),
        "n": len(x),
        "median_margin": float((top2[:, 0] - top2[:, 1]).median()),
    }


def calibrate(net: torch.nn.Module, size: int, seed: int) -> dict[str, Any]:
    """Make a random-init network non-degenerate (module docstring); return what was done."""
    x = random_images(BN_IMAGES, size, SEED_CALIB)
    notes: dict[str, Any] = {"before": output_stats(net, x)}
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        net.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i in range(0, len(x), BN_BATCH):
                net(normalise(torch.from_numpy(x[i : i + BN_BATCH])))
        for m in bns:
            m.momentum = 0.1
        net.eval()
    notes["bn_layers_recalibrated"] = len(bns)
    name, head = classifier_layer(net)
    notes["head"] = name
    captured: list[torch.Tensor] = []
    features: list[torch.Tensor] = []

    def capture(_m: Any, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        # clone: an in-place activation after the head (squeezenet's ReLU) would overwrite it
        captured.append(out.detach().clone())
        features.append(inputs[0].detach().clone())

    hook = head.register_forward_hook(capture)
    try:
        with torch.no_grad():
            if float(head.weight.abs().max()) == 0.0:
                gen = torch.Generator().manual_seed(seed)
                fan_in = head.weight[0].numel()
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / math.sqrt(fan_in))
                notes["head_redrawn"] = True
            for i in range(0, len(x), BN_BATCH):
                net(normalise(torch.from_numpy(x[i : i + BN_BATCH])))
            z = torch.cat(captured)  # (N, K) or, for a conv head, (N, K, H, W)
            if head.bias is None:
                if not isinstance(head, torch.nn.Linear):
                    raise RuntimeError(f"classifier {name} has no bias to centre")
                # No bias (maxvit): centre by removing the mean feature's direction from every row,
                # so W_k . mean(f) = 0 and logit k = W_k . (f - mean(f)).
                f = torch.cat(features).reshape(-1, head.in_features)
                fbar = f.mean(dim=0)
                head.weight.sub_(torch.outer(head.weight @ fbar, fbar) / fbar.dot(fbar).clamp_min(1e-12))
                z = f @ head.weight.T
                notes["head_centred_by_projection"] = True
            per_sample = z.mean(dim=(2, 3)) if z.dim() == 4 else z
            mu, sd = per_sample.mean(dim=0), per_sample.std(dim=0)
            scale = torch.where(sd > 1e-12, HEAD_STD / sd.clamp_min(1e-12), torch.ones_like(sd))
            shift = torch.zeros(())
            if z.dim() == 4:
                # A conv head is followed by ReLU and a spatial average (squeezenet): standardise the
                # spatial mean per class, then shift every class by the same offset so that the ReLU
                # is (almost) never inactive; the output is then that standardised mean plus a constant.
                zs = (z - mu.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
                flat = zs.flatten()
                sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:1_000_000]]
                shift = -sample.quantile(0.001).clamp_max(0.0)
                notes["head_common_offset"] = float(shift)
            shape = (-1,) + (1,) * (head.weight.dim() - 1)
            head.weight.mul_(scale.view(shape))
            if head.bias is not None:
                head.bias.copy_((head.bias - mu) * scale + shift)
    finally:
        hook.remove()
    notes["head_standardised_std"] = HEAD_STD
    held_out = random_images(32, size, SEED_CALIB + 1)
    notes["after"] = output_stats(net, held_out)
    return notes


def build_native(arch: str, size: int, seed: int, cache: Path, rebuild: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The calibrated eager network: from the cached state dict, or built and cached."""
    sd_path, meta_path = cache / "native.pt", cache / "meta.json"
    net = construct(arch, size, seed)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if sd_path.exists() and meta.get("calib_version") == CALIB_VERSION and not rebuild:
        net.load_state_dict(torch.load(sd_path, map_location="cpu", weights_only=True))
        return net.eval(), meta
    for old in cache.iterdir():  # every file there was built from other weights
        if old.is_file():
            old.unlink()
    log(f"{arch}: calibrating the random network (BN statistics, head)")
    notes = calibrate(net, size, seed)
    meta = {
        "arch": arch,
        "calib_version": CALIB_VERSION,
        "image_size": size,
        "seed": seed,
        "torch": torch.__version__,
        "calibration": notes,
    }
    atomic_write(sd_path, lambda p: torch.save(net.state_dict(), p))
    meta_path.write_text(json.dumps(meta, indent=1))
    b, a = notes["before"], notes["after"]
    log(
        f"{arch}: before: max|logit| {b['max_abs_logit']:.3g}, {b['distinct_argmax']}/{b['n']} distinct argmax; "
        f"after: max|logit| {a['max_abs_logit']:.3g}, {a['distinct_argmax']}/{a['n']} distinct argmax, "
        f"median margin {a['median_margin']:.3g}"
    )
    return net.eval(), meta


# --------------------------------------------------------------------------------------- building
def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename, so an interrupted build never leaves a file that looks cached."""
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    for p in (tmp, Path(str(tmp) + ".data")):
        p.unlink(missing_ok=True)
    write(tmp)
    tmp.replace(path)


@contextlib.contextmanager
def quiet():
    """Swallow the exporters' and quantisers' chatter (stdout, warnings, logging)."""
    buf = io.StringIO()
    level = logging.root.level
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logging.disable(logging.NOTSET)
        logging.root.setLevel(level)


def export_torchscript_onnx(net: torch.nn.Module, size: int, opset: int, path: Path) -> None:
    x = torch.rand(EXPORT_BATCH, 3, size, size)
    with quiet():
        torch.onnx.export(
            net, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True,
        )


def export_dynamo_onnx(net: torch.nn.Module, size: int, path: Path) -> None:
    x = torch.rand(EXPORT_BATCH, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with quiet():
        torch.onnx.export(
            net, (x,), str(path), dynamo=True, external_data=False, input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},),
        )


def export_torchscript(net: torch.nn.Module, size: int, path: Path) -> None:
    x = torch.rand(EXPORT_BATCH, 3, size, size)
    extra = {"advaudit.json": json.dumps({"range": [0, 1], "mean": MEAN, "std": STD, "input_shape": [3, size, size]})}
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=extra)


def check_ort(path: Path, size: int) -> None:
    """The file runs in ONNX Runtime with two batch sizes (the batch axis is really dynamic)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for n in (1, 3):
        out = sess.run(None, {name: normalise_np(random_images(n, size, 7))})[0]
        if out.shape != (n, NUM_CLASSES):
            raise RuntimeError(f"ONNX Runtime returns shape {out.shape} for a batch of {n}")


class RandomReader:
    """ORT ``CalibrationDataReader`` over random images, one image per call, normalised."""

    def __init__(self, input_name: str, n: int, size: int) -> None:
        self.input_name, self.n, self.size, self.i = input_name, n, size, 0
        self.chunk: np.ndarray | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.n:
            return None
        if self.i % 32 == 0:  # generate 32 at a time: little memory, reproducible
            self.chunk = normalise_np(random_images(min(32, self.n - self.i), self.size, SEED_ORT + self.i))
        assert self.chunk is not None
        x = self.chunk[self.i % 32 : self.i % 32 + 1]
        self.i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self.i = 0


def make_reader(input_name: str, n: int, size: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(RandomReader, CalibrationDataReader):
        pass

    return Reader(input_name, n, size)


def preprocess(src: Path, dst: Path) -> str:
    """``quant_pre_process``; returns a note saying what was used (``dst`` holds the model to quantise)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if dst.exists():
        return (dst.with_suffix(".note").read_text() if dst.with_suffix(".note").exists() else "quant_pre_process")
    import tempfile

    src, dst = src.resolve(), dst.resolve()
    errors: list[str] = []
    for kwargs, note in (({}, "quant_pre_process"), ({"skip_symbolic_shape": True},
                                                     "quant_pre_process (no symbolic shapes)")):
        try:
            # in a scratch folder: a failing symbolic shape inference leaves its temp files in the cwd
            with quiet(), tempfile.TemporaryDirectory(dir=dst.parent) as scratch, contextlib.chdir(scratch):
                atomic_write(dst, lambda p: quant_pre_process(str(src), str(p), **kwargs))
            if errors:
                note += f" (with them it failed: {errors[0]})"
            dst.with_suffix(".note").write_text(note)
            return note
        except Exception as exc:  # noqa: BLE001 -- any failure falls back
            errors.append(reason(exc, 120))
    import shutil

    shutil.copyfile(src, dst)
    note = "quant_pre_process failed (" + "; ".join(errors) + "), quantised without it"
    dst.with_suffix(".note").write_text(note)
    return note


def quantise_static(src: Path, dst: Path, n_calib: int, size: int, per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(src), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    input_name = next(i.name for i in proto.graph.input if i.name not in inits)
    del proto
    reader = make_reader(input_name, n_calib, size)
    with quiet():
        atomic_write(
            dst,
            lambda p: quantize_static(
                str(src), str(p), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],  # MinMax keeps only per-tensor min/max per image
            ),
        )


def quantise_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        atomic_write(dst, lambda p: quantize_dynamic(str(src), str(p), weight_type=QuantType.QInt8))


def variant_file(cache: Path, variant: str, args: argparse.Namespace) -> Path:
    if variant == "torchscript":
        return cache / "torchscript.pt"
    if variant == "int8-qdq":
        return cache / f"int8-qdq-calib{args.n_calib}{'-pt' if args.per_tensor else ''}.onnx"
    return cache / f"{variant}.onnx"


def build_variant(
    variant: str, net: torch.nn.Module, cache: Path, args: argparse.Namespace, built: dict[str, tuple[Path | None, str]]
) -> tuple[Path | None, str]:
    """Build one file (or find it in the cache); returns (path or None, note or failure reason)."""
    path = variant_file(cache, variant, args)
    err = path.with_name(path.name + ".error.txt")
    note = ""
    if variant.startswith("int8"):
        pre = cache / "fp32-op17.pre.onnx"
        note_file = pre.with_suffix(".note")
        note = note_file.read_text() if note_file.exists() else ""
        note = f"from fp32-op17{', ' + note if note else ''}"
    if path.exists() and not args.rebuild:
        return path, note
    if err.exists() and not (args.retry_failed or args.rebuild):
        return None, err.read_text().strip()
    size = args.image_size
    start = time.perf_counter()
    log(f"{net.arch_name}: building {variant}")  # type: ignore[attr-defined]
    try:
        if variant == "fp32-op13":
            atomic_write(path, lambda p: export_torchscript_onnx(net, size, 13, p))
            check_ort(path, size)
        elif variant == "fp32-op17":
            atomic_write(path, lambda p: export_torchscript_onnx(net, size, 17, p))
            check_ort(path, size)
        elif variant == "fp32-dynamo":
            atomic_write(path, lambda p: export_dynamo_onnx(net, size, p))
            check_ort(path, size)
        elif variant == "torchscript":
            atomic_write(path, lambda p: export_torchscript(net, size, p))
        else:
            src, why = built.get("fp32-op17") or build_variant("fp32-op17", net, cache, args, built)
            built["fp32-op17"] = (src, why)
            if src is None:
                raise RuntimeError(f"fp32-op17 (the file to quantise) failed: {why}")
            pre = cache / "fp32-op17.pre.onnx"
            if pre.exists() and pre.stat().st_mtime < src.stat().st_mtime:  # older than its source
                pre.unlink()
            pre_note = preprocess(src, pre)
            note = f"from fp32-op17, {pre_note}"
            if variant == "int8-qdq":
                quantise_static(pre, path, args.n_calib, size, not args.per_tensor)
            else:
                quantise_dynamic(pre, path)
    except Exception as exc:  # noqa: BLE001 -- one failure must not stop the others
        path.unlink(missing_ok=True)
        step = "export" if variant.startswith("fp32") or variant == "torchscript" else "quantise"
        why = f"{step} failed: {reason(exc)}"
        err.write_text(why + "\n")
        log(f"{net.arch_name}: {variant} FAILED ({why})")  # type: ignore[attr-defined]
        if args.verbose:
            traceback.print_exc()
        return None, why
    err.unlink(missing_ok=True)
    log(f"{net.arch_name}: built {variant} in {time.perf_counter() - start:.1f} s ({path.stat().st_size / 2**20:.1f} "
        "MB)")  # type: ignore[attr-defined]
    return path, note


# -------------------------------------------------------------------------------------- measuring
def missing_converters(path: Path) -> list[str]:
    """Ops of an ONNX file that onnx2torch's registry (plus advaudit's converters) cannot convert."""
    import onnx

    with contextlib.suppress(Exception):  # advaudit's own converters register on import, where present
        importlib.import_module("advaudit.models.convert")
        importlib.import_module("advaudit.models.convert.quant")
        importlib.import_module("advaudit.models.convert.ste")
    from onnx2torch.node_converters import get_converter

    proto = onnx.load(str(path), load_external_data=False)
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    missing = set()
    for node in proto.graph.node:
        domain = node.domain or ""
        if domain == "ai.onnx":
            domain = ""
        try:
            get_converter(node.op_type, opsets.get(domain, opsets.get("", 1)), domain)
        except NotImplementedError:
            missing.add(f"{domain + ':' if domain else ''}{node.op_type}-{opsets.get(domain, '?')}")
    return sorted(missing)


def file_opset(path: Path) -> int | None:
    if path.suffix != ".onnx":
        return None
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pair(
    twin: Callable[[torch.Tensor], torch.Tensor], native: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor, y: torch.Tensor, repeats: int, device: str,
) -> tuple[list[float], list[float]]:
    """Median ms of one forward + backward (input gradient of the cross-entropy), interleaved."""

    def once(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
        xr = x.detach().clone().requires_grad_(True)
        sync(device)
        start = time.perf_counter()
        with torch.enable_grad():
            loss = F.cross_entropy(fn(xr), y)
            (g,) = torch.autograd.grad(loss, xr)
        sync(device)
        elapsed = time.perf_counter() - start
        del g
        return elapsed * 1e3

    once(native), once(twin)  # warm-up
    t_twin, t_native = [], []
    for _ in range(repeats):
        t_native.append(once(native))
        t_twin.append(once(twin))
    return t_twin, t_native


def measure(
    arch: str, variant: str, path: Path, net: torch.nn.Module, args: argparse.Namespace, x_check: np.ndarray,
    x_pgd: np.ndarray, x_time: np.ndarray, row: dict[str, Any],
) -> None:
    """Fill ``row`` with the figures of one file (module docstring)."""
    from advaudit.attacks.runner import run_attacks
    from advaudit.attacks.suites import AttackChoice
    from advaudit.errors import AdvauditError
    from advaudit.models import load_model

    size = args.image_size
    spec = {"range": (0, 1), "mean": MEAN, "std": STD, "input_shape": (3, size, size)}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(path, spec=spec, device=args.device)
    except AdvauditError as exc:
        row["converts"] = f"load failed: {str(exc).splitlines()[0][:240]}"
        row["load_s"] = time.perf_counter() - start
        return
    row["load_s"] = time.perf_counter() - start
    if model.format == "onnx":
        row["opset"] = model.details.get("opset")
    if not model.gradients.available:
        row["converts"] = model.gradients.note or "no gradients"
        if model.gradients.max_abs_diff is not None:  # the twin ran but disagreed: how much, relatively
            row["twin_max_abs_diff_probe"] = model.gradients.max_abs_diff
            with contextlib.suppress(Exception):  # the probe batch advaudit checked the twin on
                probe_scale = float(np.max(np.abs(model.predict(model.probe_inputs(4, seed=1)).outputs)))
                row["twin_rel_diff_probe"] = model.gradients.max_abs_diff / probe_scale
                row["converts"] += f" = {row['twin_rel_diff_probe']:.2g} of max|logit|"
        if path.suffix == ".onnx":
            with contextlib.suppress(Exception):
                row["missing_converters"] = missing_converters(path)
        log(f"{arch} {variant}: does not convert ({row['converts']})"
            + (f"; ops without converter: {', '.join(row['missing_converters'])}"
               if row.get("missing_converters") else ""))
        return
    row["converts"] = "yes"
    row["twin_source"] = model.gradients.source
    row["twin_max_abs_diff_probe"] = model.gradients.max_abs_diff
    model.set_search_precision(args.precision)
    b = args.batch

    # twin vs runtime on the check inputs
    log(f"{arch} {variant}: converts; comparing twin and runtime on {len(x_check)} inputs")
    ref = model.predict(x_check, batch_size=b)
    ref_logits = ref.outputs if model.output_kind == "logits" else ref.log_probs
    with torch.no_grad():
        twin = torch.cat(
            [model.logits(torch.from_numpy(x_check[i : i + b]).to(model.device)).float().cpu()
             for i in range(0, len(x_check), b)]
        ).numpy()
    diff = float(np.max(np.abs(twin - ref_logits)))
    scale = float(np.max(np.abs(ref_logits)))
    row["max_abs_diff"] = diff
    row["rel_diff"] = diff / scale if scale > 0 else float("inf")
    agree = int((twin.argmax(1) == ref.labels).sum())
    row["agree"], row["n_check"] = agree, len(x_check)
    row["agreement"] = agree / len(x_check)
    row["distinct_runtime_labels"] = int(len(np.unique(ref.labels)))
    from advaudit.models.base import surrogate_error

    row["surrogate_error"] = surrogate_error(twin, ref_logits)
    if variant.startswith("int8") and model.format == "onnx":
        # The reference spread of the runtime itself: ONNX Runtime with its graph optimisations
        # off (QDQ pairs run as float ops) against the default session (fused integer kernels).
        with contextlib.suppress(Exception):
            plain = runtime_without_optimisations(path, model, x_check, b)
            row["ort_self_agree"] = int((plain.argmax(1) == ref.labels).sum())
            row["ort_self_rel_diff"] = float(np.max(np.abs(plain - ref_logits))) / scale

    # PGD-10, labels = the runtime's clean predictions, verified by the runtime
    if args.pgd_n > 0:
        log(f"{arch} {variant}: PGD-{PGD_STEPS} eps 2/255 on {len(x_pgd)} inputs")
        xp = x_pgd
        yp = model.predict(xp, batch_size=b).labels.astype(np.int64)
        t = time.perf_counter()
        try:
            run = run_attacks(
                model, xp, yp, [AttackChoice("pgd", {"steps": PGD_STEPS})], [PGD_EPS], norm="linf", batch_size=b, seed=0
            )
            r = run.rows[0]
            row["pgd_verified"], row["pgd_n"], row["pgd_rejected"] = r.verified, len(xp), r.rejected
            row["pgd_clean_accuracy"] = run.clean_accuracy
            row["pgd_warnings"] = run.warnings
        except Exception as exc:  # noqa: BLE001
            row["pgd_error"] = reason(exc)
            log(f"{arch} {variant}: PGD failed: {row['pgd_error']}")
        row["pgd_s"] = time.perf_counter() - t

    # forward + backward: twin vs native eager module, fp32 rows
    if variant in TIMED and args.repeats > 0:
        log(f"{arch} {variant}: timing forward+backward, batch {b}, {args.repeats} repeats")
        dev = model.device
        native_net = net.to(dev)
        xt = torch.from_numpy(x_time).to(dev)
        with torch.no_grad():
            yt = native_net(normalise(xt)).argmax(1)
        try:
            tws, tns = time_pair(model.logits, lambda x: native_net(normalise(x)), xt, yt, args.repeats, args.device)
            tw, tn = statistics.median(tws), statistics.median(tns)
            row["twin_ms"], row["native_ms"], row["time_ratio"] = tw, tn, tw / tn
            row["twin_ms_all"], row["native_ms_all"] = tws, tns
        except Exception as exc:  # noqa: BLE001
            row["time_error"] = reason(exc)
        finally:
            net.to("cpu")
    del model
    gc.collect()


def runtime_without_optimisations(path: Path, model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """The file's first output on ``x`` from an ONNX Runtime session with graph optimisations off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: model._np_input(x[i : i + batch])})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).reshape(len(x), -1).astype(np.float32)


# ----------------------------------------------------------------------------------------- output
def fmt_row(r: dict[str, Any]) -> str:
    conv = r.get("converts", "?")
    conv = "yes" if conv == "yes" else "no"
    rel = f"{r['rel_diff']:.2e}" if "rel_diff" in r else "-"
    agree = f"{r['agree']}/{r['n_check']}" if "agree" in r else "-"
    if "pgd_verified" in r:
        pgd = f"{r['pgd_verified']}/{r['pgd_n']}"
        rej = str(r["pgd_rejected"])
    else:
        pgd, rej = ("err" if "pgd_error" in r else "-"), "-"
    tw = f"{r['twin_ms']:.0f}" if "twin_ms" in r else "-"
    tn = f"{r['native_ms']:.0f}" if "native_ms" in r else "-"
    ratio = f"{r['time_ratio']:.2f}" if "time_ratio" in r else "-"
    opset = str(r.get("opset") or "-")
    self_agree = f"{r['ort_self_agree']}/{r['n_check']}" if "ort_self_agree" in r else "-"
    return (
        f"{r['arch']:<19} {r['variant']:<13} {opset:>5} {conv:>4} {rel:>9} {agree:>7} {self_agree:>8} {pgd:>6} "
        f"{rej:>4} "
        f"{tw:>8} {tn:>9} {ratio:>6} {r.get('row_s', 0):>6.0f}"
    )


HEADER = (
    f"{'arch':<19} {'variant':<13} {'opset':>5} {'conv':>4} {'rel diff':>9} {'agree':>7} {'ort-self':>8} {'pgd':>6} "
    f"{'rej':>4} "
    f"{'twin ms':>8} {'native ms':>9} {'ratio':>6} {'row s':>6}"
)


def passes(r: dict[str, Any]) -> bool:
    return (
        r.get("converts") == "yes"
        and r.get("agreement", 0.0) >= AGREE_MIN
        and r.get("pgd_verified", 0) >= 1
    )


def why_failing(r: dict[str, Any]) -> str:
    if r.get("converts") != "yes":
        text = r.get("converts", "?")
        if r.get("missing_converters"):
            text += f" [ops without converter: {', '.join(r['missing_converters'])}]"
        return text
    parts = []
    if r.get("agreement", 0.0) < AGREE_MIN:
        parts.append(f"argmax agreement {r.get('agree')}/{r.get('n_check')} < {AGREE_MIN:.0%} (rel diff "
                     f"{r.get('rel_diff', float('nan')):.2e})")
    if "pgd_error" in r:
        parts.append(f"PGD failed: {r['pgd_error']}")
    elif r.get("pgd_verified", 0) < 1:
        parts.append(f"no verified PGD success ({r.get('pgd_verified', 0)}/{r.get('pgd_n', 0)}, "
                     f"{r.get('pgd_rejected', 0)} rejected by the runtime)")
    return "; ".join(parts)


def summarise(rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    ok = [r for r in rows if passes(r)]
    fp32 = [r["time_ratio"] for r in rows if r["variant"] in FP32_ONNX and "time_ratio" in r]
    ts = [r["time_ratio"] for r in rows if r["variant"] == "torchscript" and "time_ratio" in r]
    return {
        "rows": len(rows),
        "passing": len(ok),
        "passing_pct": 100.0 * len(ok) / len(rows) if rows else 0.0,
        "median_twin_native_ratio_fp32_onnx": statistics.median(fp32) if fp32 else None,
        "median_twin_native_ratio_torchscript": statistics.median(ts) if ts else None,
        "failing": [{"arch": r["arch"], "variant": r["variant"], "reason": why_failing(r)}
                    for r in rows if not passes(r)],
        "elapsed_s": elapsed,
    }


def write_json(args: argparse.Namespace, rows: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any],
               partial: bool) -> None:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    with contextlib.suppress(Exception):
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"partial": partial, "config": cfg, "env": env, "calibration": meta, "rows": rows, "summary": summary}
    atomic_write(args.json, lambda p: p.write_text(json.dumps(doc, indent=1, default=str)))


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    print()
    print(
        f"bench_convert: {len(rows)} rows, image {args.image_size}px, device {args.device}, check inputs "
        f"{args.n_check}, "
        f"PGD-{PGD_STEPS} Linf eps 2/255 on {args.pgd_n}, calib {args.n_calib}, batch {args.batch}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.processor() or platform.machine()}"
    )
    print(HEADER)
    print("-" * len(HEADER))
    for r in rows:
        print(fmt_row(r))
    print(
        "(conv: twin available; rel diff: max|twin - runtime| / max|runtime logit| on the check inputs; agree: argmax "
        "agreement; ort-self (int8 rows): argmax agreement of ONNX Runtime with graph optimisations off against the "
        "default session; pgd: adversarials verified by the runtime / attacked; rej: twin-fooled candidates the "
        "runtime rejected; "
        "ms: median forward+backward of one batch, twin vs native eager torch; for torchscript the runtime is "
        "TorchScript)"
    )
    summary = summarise(rows, elapsed)
    ok = [r for r in rows if passes(r)]
    bad = [r for r in rows if not passes(r)]
    fp32 = [r["time_ratio"] for r in rows if r["variant"] in FP32_ONNX and "time_ratio" in r]
    ts = [r["time_ratio"] for r in rows if r["variant"] == "torchscript" and "time_ratio" in r]
    print()
    print(
        f"summary: {len(ok)}/{len(rows)} rows ({summary['passing_pct']:.1f}%) convert, agree on >= {AGREE_MIN:.0%} of "
        "the "
        f"check inputs and have a verified PGD success"
    )
    quant = [r for r in rows if "ort_self_agree" in r]
    if quant:
        as_good = [r for r in quant if r["agree"] >= r["ort_self_agree"] and r.get("pgd_verified", 0) >= 1]
        print(
            f"int8 rows: {len(as_good)}/{len(quant)} have a twin that agrees with ONNX Runtime at least as often as "
            "ONNX "
            f"Runtime agrees with itself across optimisation levels, and a verified PGD success"
        )
    if fp32:
        print(f"median twin/native forward+backward time over {len(fp32)} fp32 ONNX rows: "
              f"{statistics.median(fp32):.2f}x"
              + (f" (torchscript rows: {statistics.median(ts):.2f}x)" if ts else ""))
    if bad:
        print("failing rows:")
        for r in bad:
            print(f"  {r['arch']} {r['variant']}: {why_failing(r)}")
    print(f"total time {elapsed / 60:.1f} min")
    return summary


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", choices=ARCHS, help="architecture (repeatable; default all)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--n-calib", type=int, default=256, help="random images for the static-quantisation calibration")
    ap.add_argument("--n-check", type=int, default=64, help="inputs for the twin-vs-runtime comparison (photos first)")
    ap.add_argument("--pgd-n", type=int, default=32, help="inputs PGD attacks per row (0: no attack)")
    ap.add_argument("--batch", type=int, default=8, help="batch size for inference, attack and timing")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed forward+backward repeats (after one warm-up; 0: no timing)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of built files, reused between runs")
    ap.add_argument("--rebuild", action="store_true", help="rebuild every file even if cached")
    ap.add_argument("--retry-failed", action="store_true", help="retry exports/quantisations cached as failed")
    ap.add_argument("--build-only", action="store_true",
                    help="only export and quantise (fill the cache), measure nothing")
    ap.add_argument("--json", type=Path, help="also write rows and summary to this JSON file")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (twin, native module and ONNX Runtime)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                    help="advaudit's PGD search precision")
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights for int8-qdq")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the random weights")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    ap.add_argument("--from-json", type=Path, help="only print the table and summary of a (partial) --json file")
    args = ap.parse_args(argv)
    args.arch = args.arch or list(ARCHS)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {VARIANTS}")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        ap.error("--device must be cpu or cuda")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        doc = json.loads(args.from_json.read_text())
        for k in ("image_size", "device", "n_check", "pgd_n", "n_calib", "batch"):
            setattr(args, k, doc["config"].get(k, getattr(args, k)))
        if doc.get("partial"):
            print(f"(partial run: {len(doc['rows'])} rows)")
        print_table(doc["rows"], args, doc["summary"].get("elapsed_s", 0.0))
        return 0
    size = args.image_size
    # nn.MultiheadAttention takes a fused fast path in eval mode when no parameter requires grad (as
    # here): it has no ONNX export and no backward, and a real deployment export would not take it.
    torch.backends.mha.set_fastpath_enabled(False)
    log(
        f"bench_convert: {len(args.arch)} architectures x {len(args.variants)} variants, cache {args.cache}, "
        f"{'build only' if args.build_only else 'build + measure'}"
    )
    pics = photos(size)
    n_rand = max(0, max(args.n_check, args.pgd_n) - len(pics))
    x_pool = np.concatenate([pics, random_images(n_rand, size, SEED_CHECK)]) if n_rand else pics
    x_check, x_pgd = x_pool[: args.n_check], x_pool[: args.pgd_n]
    x_time = random_images(args.batch, size, SEED_TIME)
    if not args.build_only:
        k = min(len(pics), len(x_check))
        log(f"check inputs: {k} photos + {len(x_check) - k} random; PGD inputs: the first {len(x_pgd)} of them")

    rows: list[dict[str, Any]] = []
    per_arch: dict[str, float] = {}
    meta_all: dict[str, Any] = {}
    for arch in args.arch:
        t_arch = time.perf_counter()
        cache = args.cache / f"{arch}-{size}px-seed{args.seed}"
        cache.mkdir(parents=True, exist_ok=True)
        try:
            net, meta = build_native(arch, size, args.seed, cache, args.rebuild)
            net.arch_name = arch  # type: ignore[attr-defined]
            for p in net.parameters():
                p.requires_grad_(False)
            meta_all[arch] = meta
        except Exception as exc:  # noqa: BLE001
            why = f"building the network failed: {reason(exc)}"
            log(f"{arch}: {why}")
            if args.verbose:
                traceback.print_exc()
            rows.extend({"arch": arch, "variant": v, "converts": why} for v in args.variants)
            continue
        built: dict[str, tuple[Path | None, str]] = {}
        for variant in args.variants:
            if variant not in built:
                built[variant] = build_variant(variant, net, cache, args, built)
        if args.build_only:
            per_arch[arch] = time.perf_counter() - t_arch
            log(f"{arch}: cache complete in {per_arch[arch]:.0f} s")
            continue
        for variant in args.variants:
            t_row = time.perf_counter()
            path, note = built[variant]
            row: dict[str, Any] = {"arch": arch, "variant": variant}
            if note:
                row["note"] = note
            if path is None:
                row["converts"] = note
                log(f"{arch} {variant}: no file ({note})")
            else:
                row["file"] = str(path)
                try:
                    measure(arch, variant, path, net, args, x_check, x_pgd, x_time, row)
                except Exception as exc:  # noqa: BLE001 -- never stop the table
                    row.setdefault("converts", f"benchmark error: {reason(exc)}")
                    row["error"] = reason(exc)
                    log(f"{arch} {variant}: benchmark error {reason(exc)}")
                    if args.verbose:
                        traceback.print_exc()
            row["row_s"] = time.perf_counter() - t_row
            rows.append(row)
            print("    " + fmt_row(row), flush=True)
            if args.json:  # after every row, so an interrupted run leaves its partial table
                write_json(args, rows, summarise(rows, time.perf_counter() - T0), meta_all, partial=True)
            gc.collect()
        del net
        gc.collect()
        per_arch[arch] = time.perf_counter() - t_arch
        log(f"{arch}: done in {per_arch[arch]:.0f} s")

    elapsed = time.perf_counter() - T0
    if args.build_only:
        log(f"cache built in {elapsed / 60:.1f} min: " + ", ".join(f"{a} {t:.0f}s" for a, t in per_arch.items()))
        return 0
    summary = print_table(rows, args, elapsed)
    summary["per_arch_s"] = per_arch
    if args.json:
        write_json(args, rows, summary, meta_all, partial=False)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
