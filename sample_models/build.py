"""Rebuild advaudit's bundled sample models and data subsets, deterministically.

Usage:
    python sample_models/build.py [--shared DIR] [--only NAME]

Reads the public data in ``<repo>/../shared/data`` (or ``--shared DIR``), trains or loads each
sample model, exports it as ONNX (``<name>.onnx``) and TorchScript (``<name>.pt``) with the
advaudit input spec embedded, writes the 1,000-image data subsets to ``data/``, checks ONNX Runtime
against TorchScript, and regenerates ``README.md`` from the measured numbers. With ``--only`` one
model is rebuilt; the others are re-verified from the files already on disk so the README stays
complete.
"""

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAMPLE_DIR.parent
DATA_DIR = SAMPLE_DIR / "data"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
TESTING_HELPERS = REPO_ROOT / "plugins" / "advaudit-testing"
for _path in (REPO_ROOT, TESTING_HELPERS):  # run as a script: the checkout's advaudit and its test-only helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from advaudit_testing.zoo import (  # noqa: E402
    GtsrbCNN,
    MnistCNN,
    Normalize,
    load_resnet20_akamaster,
)

SEED = 0
NUM_THREADS = 1
THREADS_TEXT = f"{NUM_THREADS} CPU thread" + ("s" if NUM_THREADS > 1 else "")
OPSET = 17
EVAL_BATCH = 500
MAX_LOGIT_DIFF = 1e-3  # largest accepted |ONNX Runtime - TorchScript| logit difference
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp so the .npz subsets are byte-identical
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
GTSRB_CLASSES = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Split:
    """Images as uint8 NCHW with int64 labels."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or len(self.x) != len(self.y):
            raise ValueError(f"bad split: x {self.x.dtype} {self.x.shape}, y {self.y.shape}")

    def __getitem__(self, index: slice) -> "Split":
        return Split(self.x[index], self.y[index])

    def __len__(self) -> int:
        return len(self.y)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (MNIST's format) into a uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic {found:#x}, expected {magic:#x}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist_test(shared: Path) -> Split:
    images = _read_idx(shared / "mnist" / "t10k-images-idx3-ubyte.gz", 0x803)
    labels = _read_idx(shared / "mnist" / "t10k-labels-idx1-ubyte.gz", 0x801)
    return Split(images[:, None].copy(), labels.astype(np.int64))


def load_cifar10_exact(shared: Path) -> Split:
    with np.load(shared / "cifar10" / "cifar10_test_first1017_exact.npz") as data:
        return Split(data["x"], data["y"].astype(np.int64))


def load_gtsrb_test(shared: Path) -> Split:
    with np.load(shared / "gtsrb" / "gtsrb_test_12630_32x32.npz") as data:
        x_nchw = np.ascontiguousarray(data["x"].transpose(0, 3, 1, 2))
        return Split(x_nchw, data["y"].astype(np.int64))


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 images -> float32 tensor in [0, 1]."""
    return torch.from_numpy(x).float().div_(255.0)


def save_npz(path: Path, split: Split) -> None:
    """Write ``x`` and ``y`` like ``np.savez_compressed``, but with fixed zip timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in (("x", split.x), ("y", split.y)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def load_npz(path: Path) -> Split:
    with np.load(path) as data:
        return Split(data["x"], data["y"])


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of a training run (Adam with a one-cycle learning-rate schedule)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_shift: int  # random translation of up to this many pixels
    pad_mode: str  # how the shifted-in border is filled: "constant" (zeros) or "replicate"
    jitter: float  # random brightness and contrast change of up to this fraction; 0 disables

    def describe(self) -> str:
        augment = [f"random shifts of up to {self.max_shift} px ({self.pad_mode} padding)"]
        if self.jitter:
            augment.append(f"brightness/contrast jitter of up to {self.jitter:.0%}")
        return (
            f"Adam (lr {self.lr:g}, weight decay {self.weight_decay:g}) with a one-cycle schedule, "
            f"{self.epochs} epochs, batch size {self.batch_size}, cross-entropy; augmentation: "
            f"{' and '.join(augment)}; seed {SEED}, {THREADS_TEXT}, "
            "`torch.use_deterministic_algorithms(True)`."
        )


def random_shift(
    x: torch.Tensor, max_shift: int, pad_mode: str, gen: torch.Generator
) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] on both axes."""
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode=pad_mode)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=gen)
    rows = (dy + torch.arange(h))[:, None, :, None]
    cols = (dx + torch.arange(w))[:, None, None, :]
    return padded[
        torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
    ]


def random_jitter(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Scale contrast around each image's mean and shift brightness, both by up to ``amount``."""
    n = x.shape[0]
    contrast = 1 + amount * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    brightness = amount * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(0, 1)


def augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    x = random_shift(x, recipe.max_shift, recipe.pad_mode, gen)
    return random_jitter(x, recipe.jitter, gen) if recipe.jitter else x


def train(model: nn.Module, data: Split, recipe: Recipe) -> nn.Module:
    """Train ``model`` on ``data`` following ``recipe``; returns it in eval mode."""
    gen = torch.Generator().manual_seed(SEED)
    x_all, y_all = to_float(data.x), torch.from_numpy(data.y)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(data), generator=gen)
        total_loss = 0.0
        for start in range(0, len(data), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(augment(x_all[batch], recipe, gen)), y_all[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
        print(
            f"    epoch {epoch + 1}/{recipe.epochs}: loss {total_loss / len(data):.4f}", flush=True
        )
    return model.eval()


@torch.no_grad()
def torch_logits(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [model(to_float(x[i : i + EVAL_BATCH])).numpy() for i in range(0, len(x), EVAL_BATCH)]
    )


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


# --------------------------------------------------------------------------------------------
# The sample models


@dataclass(frozen=True)
class SampleSpec:
    """One bundled sample model: how to build it, how to evaluate it, and its model card."""

    name: str
    title: str
    class_names: tuple[str, ...]
    build: Callable[[Path], nn.Module]  # shared data dir -> trained model in eval mode
    eval_split: Callable[[Path], Split]
    eval_desc: str
    subset: Callable[[Path], Split]
    subset_file: str
    subset_desc: str
    input_shape: tuple[int, int, int]
    min_accuracy: float  # the build fails if ONNX Runtime scores less on the eval split
    architecture: str
    training: str
    licence: str


MNIST_RECIPE = Recipe(
    epochs=8, batch_size=64, lr=2e-3, weight_decay=0.0, max_shift=2, pad_mode="constant", jitter=0.0
)
GTSRB_RECIPE = Recipe(
    epochs=15,
    batch_size=64,
    lr=3e-3,
    weight_decay=1e-4,
    max_shift=2,
    pad_mode="replicate",
    jitter=0.2,
)


def build_mnist_cnn(shared: Path) -> nn.Module:
    torch.manual_seed(SEED)
    return train(MnistCNN(), load_mnist_test(shared)[:8000], MNIST_RECIPE)


def build_cifar10_resnet20(shared: Path) -> nn.Module:
    shutil.copyfile(
        shared / "models" / "LICENSE.akamaster-resnet", SAMPLE_DIR / "LICENSE.akamaster-resnet"
    )
    resnet = load_resnet20_akamaster(shared / "models" / "resnet20_cifar10_akamaster.th")
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), resnet).eval()


def build_gtsrb_cnn(shared: Path) -> nn.Module:
    torch.manual_seed(SEED)
    return train(GtsrbCNN(), load_gtsrb_test(shared)[:10000], GTSRB_RECIPE)


SPECS = (
    SampleSpec(
        name="mnist_cnn",
        title="MNIST CNN",
        class_names=MNIST_CLASSES,
        build=build_mnist_cnn,
        eval_split=lambda shared: load_mnist_test(shared)[8000:],
        eval_desc="MNIST test images 8000-9999 (2,000 images, never seen in training)",
        subset=lambda shared: load_mnist_test(shared)[8000:9000],
        subset_file="mnist_test_1k.npz",
        subset_desc="MNIST test images 8000-8999 (held out from the training of `mnist_cnn`)",
        input_shape=(1, 28, 28),
        min_accuracy=0.98,
        architecture=(
            "`advaudit_testing.zoo.MnistCNN`, LeNet-style: conv 5x5 1->32, ReLU, max-pool 2, "
            "conv 5x5 32->64, ReLU, max-pool 2, linear 1024->128, ReLU, linear 128->10."
        ),
        training=(
            "Trained from scratch on MNIST **test** images 0-7999 (the build's data folder has "
            "no MNIST training set). MNIST's documentation notes that test images 0-4999 are "
            "cleaner and easier than 5000-9999, so the evaluation images come from the harder "
            "half.\n\n"
            f"Recipe: {MNIST_RECIPE.describe()}"
        ),
        licence=(
            "MNIST: Yann LeCun and Corinna Cortes, <http://yann.lecun.com/exdb/mnist/> "
            "(no formal licence)."
        ),
    ),
    SampleSpec(
        name="cifar10_resnet20",
        title="CIFAR-10 ResNet-20",
        class_names=CIFAR10_CLASSES,
        build=build_cifar10_resnet20,
        eval_split=load_cifar10_exact,
        eval_desc="the first 1,017 CIFAR-10 test images (lossless copies)",
        subset=lambda shared: load_cifar10_exact(shared)[:1000],
        subset_file="cifar10_test_1k.npz",
        subset_desc="the first 1,000 CIFAR-10 test images, lossless",
        input_shape=(3, 32, 32),
        min_accuracy=0.90,
        architecture=(
            "`nn.Sequential(Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), "
            "ResNet20())` from `advaudit_testing.zoo`: ResNet-20 (He et al. 2016) with "
            "option-A zero-padding shortcuts, laid out like akamaster's `resnet.py` (conv 16, "
            "three stages of three basic blocks with 16/32/64 channels, global average pool, "
            "linear 64->10). "
            "The normalisation is part of the graph, so the model takes [0, 1] input."
        ),
        training=(
            "Not trained here: the pretrained weights `resnet20_cifar10_akamaster.th` of Yerlan "
            "Idelbayev's *pytorch_resnet_cifar10* (trained on the 50,000 CIFAR-10 training images, "
            "91.78% top-1 on the full test set), loaded with `load_resnet20_akamaster`."
        ),
        licence=(
            "Weights: BSD-2-Clause, Copyright (c) 2018 Yerlan Idelbayev "
            "(akamaster/pytorch_resnet_cifar10), see `LICENSE.akamaster-resnet`. "
            "CIFAR-10: Alex Krizhevsky, *Learning Multiple Layers of Features from Tiny "
            "Images*, 2009."
        ),
    ),
    SampleSpec(
        name="gtsrb_cnn",
        title="GTSRB CNN",
        class_names=GTSRB_CLASSES,
        build=build_gtsrb_cnn,
        eval_split=lambda shared: load_gtsrb_test(shared)[10000:],
        eval_desc=(
            "GTSRB test images 10000-12629 (2,630 images, resized to 32x32, never seen in training)"
        ),
        subset=lambda shared: load_gtsrb_test(shared)[10000:11000],
        subset_file="gtsrb_test_1k.npz",
        subset_desc=(
            "GTSRB test images 10000-10999, resized to 32x32 "
            "(held out from the training of `gtsrb_cnn`)"
        ),
        input_shape=(3, 32, 32),
        min_accuracy=0.90,
        architecture=(
            "`advaudit_testing.zoo.GtsrbCNN`: three stages of conv 3x3 + BatchNorm + ReLU + "
            "max-pool (32, 64, 128 channels), average pool 2, dropout 0.3, linear 512->43."
        ),
        training=(
            "Trained from scratch on GTSRB **test** images 0-9999 (resized to 32x32). The GTSRB "
            "test set holds about 30 frames of each physical sign (one track per sign), shuffled, "
            "and this split is by image index, not by track: most evaluation images have "
            "near-duplicates in the training images (a 1-nearest-neighbour on raw pixels already "
            "scores about 94%), so the accuracy below is optimistic for unseen signs.\n\n"
            f"Recipe: {GTSRB_RECIPE.describe()}"
        ),
        licence=(
            "GTSRB: J. Stallkamp, M. Schlipsing, J. Salmen, C. Igel, *The German Traffic Sign "
            "Recognition Benchmark: A multi-class classification competition*, IJCNN 2011; used "
            "under the dataset's terms (<https://benchmark.ini.rub.de/>)."
        ),
    ),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


# --------------------------------------------------------------------------------------------
# Export


def input_spec(class_names: tuple[str, ...]) -> dict[str, object]:
    return {"range": [0, 1], "layout": "nchw", "class_names": list(class_names)}


def export_onnx(
    model: nn.Module, example: torch.Tensor, path: Path, class_names: tuple[str, ...]
) -> None:
    """Export with the TorchScript-based exporter (opset 17, dynamic batch, weights inline)."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    metadata = {
        "advaudit.range": "0,1",
        "advaudit.layout": "nchw",
        "advaudit.class_names": json.dumps(list(class_names)),
    }
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def export_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, class_names: tuple[str, ...]
) -> None:
    traced = torch.jit.trace(model, example)
    extra = {"advaudit.json": json.dumps(input_spec(class_names))}
    torch.jit.save(traced, str(path), _extra_files=extra)


def build_one(spec: SampleSpec, shared: Path) -> None:
    """Build, export and bundle one sample model's files."""
    print(f"[{spec.name}] building", flush=True)
    model = spec.build(shared)
    example = torch.zeros((2, *spec.input_shape))
    export_onnx(model, example, SAMPLE_DIR / f"{spec.name}.onnx", spec.class_names)
    export_torchscript(model, example, SAMPLE_DIR / f"{spec.name}.pt", spec.class_names)
    save_npz(DATA_DIR / spec.subset_file, spec.subset(shared))
    print(
        f"[{spec.name}] wrote {spec.name}.onnx, {spec.name}.pt, data/{spec.subset_file}", flush=True
    )


# --------------------------------------------------------------------------------------------
# Verification


class VerificationError(RuntimeError):
    """A built file is missing, malformed, or does not meet its accuracy or agreement bar."""


@dataclass(frozen=True)
class Report:
    """What verification measured on the files on disk."""

    spec: SampleSpec
    eval_count: int
    eval_accuracy: float  # ONNX Runtime, eval split
    subset_accuracy: float  # ONNX Runtime, bundled 1k file
    torchscript_accuracy: float  # TorchScript, eval split
    max_abs_diff: float  # ONNX Runtime vs TorchScript logits, eval split
    argmax_agreement: float
    onnx_sha256: str
    pt_sha256: str
    onnx_bytes: int
    pt_bytes: int
    parameters: int


def ort_logits(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            session.run(["logits"], {"input": to_float(x[i : i + EVAL_BATCH]).numpy()})[0]
            for i in range(0, len(x), EVAL_BATCH)
        ]
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_onnx_file(path: Path, class_names: tuple[str, ...]) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise VerificationError(f"{path}: weights are stored outside the file")
    metadata = {p.key: p.value for p in proto.metadata_props}
    if json.loads(metadata["advaudit.class_names"]) != list(class_names):
        raise VerificationError(f"{path}: class names in metadata do not match")


def check_batch_sizes(
    session: ort.InferenceSession, scripted: torch.jit.ScriptModule, spec: SampleSpec
) -> None:
    for batch in (1, 7):
        x = torch.rand((batch, *spec.input_shape), generator=torch.Generator().manual_seed(batch))
        (onnx_out,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            ts_out = scripted(x).numpy()
        expected = (batch, len(spec.class_names))
        if onnx_out.shape != expected or ts_out.shape != expected:
            raise VerificationError(
                f"{spec.name}: batch {batch} gave {onnx_out.shape} / {ts_out.shape}"
            )


def verify(spec: SampleSpec, shared: Path) -> Report:
    onnx_path, pt_path = SAMPLE_DIR / f"{spec.name}.onnx", SAMPLE_DIR / f"{spec.name}.pt"
    missing = [p for p in (onnx_path, pt_path, DATA_DIR / spec.subset_file) if not p.exists()]
    if missing:
        raise VerificationError(
            f"{spec.name}: {', '.join(map(str, missing))} missing; run a full build"
        )
    check_onnx_file(onnx_path, spec.class_names)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    extra = {"advaudit.json": ""}
    scripted = torch.jit.load(str(pt_path), map_location="cpu", _extra_files=extra).eval()
    if json.loads(extra["advaudit.json"]) != input_spec(spec.class_names):
        raise VerificationError(f"{pt_path}: embedded advaudit.json does not match")
    check_batch_sizes(session, scripted, spec)

    eval_split, subset = spec.eval_split(shared), load_npz(DATA_DIR / spec.subset_file)
    onnx_out, ts_out = ort_logits(session, eval_split.x), torch_logits(scripted, eval_split.x)
    report = Report(
        spec=spec,
        eval_count=len(eval_split),
        eval_accuracy=accuracy(onnx_out, eval_split.y),
        subset_accuracy=accuracy(ort_logits(session, subset.x), subset.y),
        torchscript_accuracy=accuracy(ts_out, eval_split.y),
        max_abs_diff=float(np.abs(onnx_out - ts_out).max()),
        argmax_agreement=float((onnx_out.argmax(1) == ts_out.argmax(1)).mean()),
        onnx_sha256=sha256(onnx_path),
        pt_sha256=sha256(pt_path),
        onnx_bytes=onnx_path.stat().st_size,
        pt_bytes=pt_path.stat().st_size,
        parameters=sum(p.numel() for p in scripted.parameters()),
    )
    if report.eval_accuracy < spec.min_accuracy:
        raise VerificationError(
            f"{spec.name}: eval accuracy {report.eval_accuracy:.2%} < {spec.min_accuracy:.0%}"
        )
    if report.max_abs_diff > MAX_LOGIT_DIFF:
        raise VerificationError(
            f"{spec.name}: ONNX Runtime and TorchScript logits differ by {report.max_abs_diff:.2e}"
        )
    return report


# --------------------------------------------------------------------------------------------
# README


README_HEADER = """\
# Sample models

Small image classifiers bundled with advaudit for examples, tests and benchmarks. Each model is
shipped twice, as ONNX (`<name>.onnx`) and as TorchScript (`<name>.pt`), and both files carry
advaudit's input spec, so `advaudit` needs no flags to feed them:

- input: float32 NCHW images with values in [0, 1]; any batch size (ONNX input `input`, output
  `logits`, dynamic batch dimension); the output is raw logits;
- any normalisation a network needs is part of the graph, so no mean/std is declared;
- ONNX: `metadata_props` `advaudit.range` = `0,1`, `advaudit.layout` = `nchw`,
  `advaudit.class_names` = JSON list; opset {opset}, weights inside the file;
- TorchScript: extra file `advaudit.json` =
  `{{"range": [0, 1], "layout": "nchw", "class_names": [...]}}`
  (read it with `torch.jit.load(path, _extra_files={{"advaudit.json": ""}})`).

This file is generated by `build.py` from the numbers it measures; do not edit it by hand.
Accuracies are measured on the exported ONNX model in ONNX Runtime (CPU execution provider).
"""

README_FOOTER = """\
## Data subsets

`data/` holds 1,000 labelled images per model, as `.npz` files (the `np.savez_compressed` format)
with `x` uint8 NCHW and `y` int64:

{subsets}

Attribution: MNIST by Yann LeCun and Corinna Cortes; CIFAR-10 by Alex Krizhevsky (*Learning
Multiple Layers of Features from Tiny Images*, 2009); GTSRB by J. Stallkamp, M. Schlipsing,
J. Salmen and C. Igel (IJCNN 2011), used under the dataset's terms. The subsets are small derived
samples of the public test sets, shipped for testing and demonstration.

## Rebuild

    python sample_models/build.py                  # everything
    python sample_models/build.py --only gtsrb_cnn # one model; the others are re-verified

The script reads the public data in `../shared/data` beside the repository (`--shared DIR` to
point elsewhere), fixes every seed, uses `torch.use_deterministic_algorithms(True)`,
{threads} and no data-loader workers. ONNX export uses PyTorch's TorchScript-based
exporter (`torch.onnx.export(..., dynamo=False)`) and TorchScript export uses `torch.jit.trace`.
On the same machine and library versions, rebuilding gives byte-identical `.onnx` and `.npz`
files. A full build also reproduces the `.pt` files byte for byte as long as the checkout path and
the source of `build.py` and `plugins/advaudit-testing/advaudit_testing/zoo.py` stay the same:
TorchScript stores the Python call stack seen while tracing (absolute file paths and line numbers) as
debug information, and numbers the traced classes per process, so `--only` can give a `.pt` whose
bytes (not weights or outputs) differ from a full build's. Other CPUs or library versions may change the trained weights
in the last bits.

Last built with Python {python}, torch {torch}, onnx {onnx}, onnxruntime {ort}, numpy {numpy}.
"""


def model_card(report: Report) -> str:
    spec = report.spec
    channels, height, width = spec.input_shape
    names = ", ".join(f"`{name}`" for name in spec.class_names)
    agreement = (
        f"max abs logit difference {report.max_abs_diff:.2e}, "
        f"argmax agreement {report.argmax_agreement:.2%} (eval split)"
    )
    return f"""\
## `{spec.name}`: {spec.title}

| | |
|---|---|
| `{spec.name}.onnx` | {report.onnx_bytes:,} bytes, sha256 `{report.onnx_sha256}` |
| `{spec.name}.pt` | {report.pt_bytes:,} bytes, sha256 `{report.pt_sha256}` |
| parameters | {report.parameters:,} |
| input | float32 (N, {channels}, {height}, {width}), NCHW, values in [0, 1] |
| output | (N, {len(spec.class_names)}) logits |
| accuracy, eval split | **{report.eval_accuracy:.2%}** on {spec.eval_desc} |
| accuracy, `data/{spec.subset_file}` | **{report.subset_accuracy:.2%}** (1,000 images) |
| ONNX Runtime vs TorchScript | {agreement} |

**Architecture.** {spec.architecture}

**Training data.** {spec.training}

**Classes.** {names}

**Licence and attribution.** {spec.licence}
"""


def write_readme(reports: list[Report]) -> None:
    subsets = "\n".join(f"- `{r.spec.subset_file}`: {r.spec.subset_desc}." for r in reports)
    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "ort": ort.__version__,
        "numpy": np.__version__,
    }
    parts = [README_HEADER.format(opset=OPSET), *map(model_card, reports)]
    # keep the section that build_backdoor.py maintains between its markers
    old = (SAMPLE_DIR / "README.md").read_text() if (SAMPLE_DIR / "README.md").exists() else ""
    start, end = "<!-- backdoor-models:start -->", "<!-- backdoor-models:end -->"
    if start in old and end in old:
        parts.append(start + old.split(start, 1)[1].split(end, 1)[0] + end + "\n")
    parts.append(README_FOOTER.format(subsets=subsets, threads=THREADS_TEXT, **versions))
    (SAMPLE_DIR / "README.md").write_text("\n".join(parts))


# --------------------------------------------------------------------------------------------
# Main


def print_summary(reports: list[Report]) -> None:
    rows = [
        ("model", "eval n", "ORT eval", "ORT 1k", "TS eval", "max|ORT-TS|", "argmax agree",
         "onnx KB", "pt KB"),
    ]  # fmt: skip
    rows += [
        (
            r.spec.name,
            str(r.eval_count),
            f"{r.eval_accuracy:.2%}",
            f"{r.subset_accuracy:.2%}",
            f"{r.torchscript_accuracy:.2%}",
            f"{r.max_abs_diff:.2e}",
            f"{r.argmax_agreement:.2%}",
            f"{r.onnx_bytes / 1024:.0f}",
            f"{r.pt_bytes / 1024:.0f}",
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    print("\n".join([lines[0], "-" * len(lines[0]), *lines[1:]]))


def silence_known_warnings() -> None:
    """Hide warnings that are expected and harmless for this build."""
    # torch.jit and the TorchScript-based ONNX exporter are deprecated but still work, and the
    # latter gives byte-stable output; it cannot constant-fold the strided slices of ResNet's
    # option-A shortcuts, which only leaves a few extra Slice nodes in the graph.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
    warnings.filterwarnings(
        "ignore", message="You are using the legacy TorchScript-based ONNX export"
    )
    warnings.filterwarnings(
        "ignore", message="Constant folding - Only steps=1 can be constant folded"
    )


def configure_determinism() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(NUM_THREADS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        metavar="DIR",
        help=f"public data folder (default {DEFAULT_SHARED})",
    )
    parser.add_argument("--only", choices=sorted(SPECS_BY_NAME), help="rebuild this model only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.shared.is_dir():
        print(f"error: shared data folder not found: {args.shared}", file=sys.stderr)
        return 2
    silence_known_warnings()
    configure_determinism()
    DATA_DIR.mkdir(exist_ok=True)
    started = time.perf_counter()
    for spec in SPECS:
        if args.only in (None, spec.name):
            step_start = time.perf_counter()
            build_one(spec, args.shared)
            print(f"[{spec.name}] built in {time.perf_counter() - step_start:.0f} s", flush=True)
    reports = []
    for spec in SPECS:
        print(f"[{spec.name}] verifying", flush=True)
        try:
            reports.append(verify(spec, args.shared))
        except VerificationError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    write_readme(reports)
    print()
    print_summary(reports)
    print(f"\nwrote {SAMPLE_DIR / 'README.md'}; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
