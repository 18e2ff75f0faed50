"""The ``purify`` and ``train_vqvae`` jobs behind ``advaudit defend purify`` and ``defend train-vqvae``:
apply an input-purification defence stack to a data set, and train the VQ-VAE purifier the
``vqvae`` defence loads.  Neither needs a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import Dataset, load_data
from ..defenses import build_stack
from ..defenses.defended import stack_spec
from ..defenses.purify import purify_array
from ..defenses.vqvae import save_vqvae
from ..defenses.vqvae import train_vqvae as fit_vqvae
from ..errors import DataError, UsageError
from ..report.writer import write_atomic
from ..spec import _normalise_field
from .base import DataOptions, JobContext, SpecValue, batch_size_for


@dataclass(frozen=True, kw_only=True)
class PurifyOptions:
    """Apply ``defenses`` (``NAME[:k=v,...]`` texts, in order) to ``data`` and write ``out`` (.npz).

    ``range`` is the value range of float data (None: 0,1; uint8 data stays uint8 on 0..255);
    ``batch_size`` None fits 256 to the image size; ``seed`` drives randomised defences."""

    defenses: tuple[str, ...]
    data: DataOptions
    out: str
    range: SpecValue = None
    batch_size: int | None = None
    seed: int = 0


@dataclass
class PurifyResult:
    """What a purification changed: how many images, with which stack, by how much (data units)."""

    n: int
    defense: str
    mean_change: float
    max_change: float
    out: str


@dataclass(frozen=True, kw_only=True)
class TrainVqvaeOptions:
    """Train a VQ-VAE on the clean images of ``data`` and write it to ``out`` (.safetensors).

    ``hidden`` channels in the encoder/decoder, a codebook of ``codes`` vectors of size ``dim``,
    commitment weight ``beta``, Gaussian input ``noise`` (fraction of the range), Adam at ``lr``;
    ``range`` as in :class:`PurifyOptions`; ``batch_size`` None fits 128 to the image size."""

    data: DataOptions
    out: str
    epochs: int = 10
    lr: float = 1e-3
    hidden: int = 64
    codes: int = 128
    dim: int = 32
    beta: float = 1.0
    noise: float = 0.0
    range: SpecValue = None
    batch_size: int | None = None
    seed: int = 0


@dataclass
class VqvaeResult:
    """A trained VQ-VAE: the image shape it takes and its last epoch's reconstruction MSE."""

    shape: tuple[int, ...]
    train_mse: float
    out: str


def load_images(data: DataOptions, ctx: JobContext) -> Dataset:
    """The images of ``data`` without a model (no channel conversion), a bar while decoding."""
    return load_data(data.path, fmt=data.format, n=data.n, offset=data.offset, seed=data.seed,
                     labels_path=data.labels, resize=data.resize, crop=data.crop,
                     progress=ctx.bar(f"loading {data.path}"), max_values=data.max_input_pixels)


def purify(options: PurifyOptions, ctx: JobContext | None = None) -> PurifyResult:
    """Purify ``options.data`` with ``options.defenses`` and write the .npz (x, index, defense, seed,
    and y / class_names when the data has them)."""
    ctx = ctx or JobContext()
    check_suffix(options.out, ".npz")
    stack = build_stack(list(options.defenses))
    bounds = (0.0, 1.0)
    if options.range:
        lo, hi = _normalise_field("range", options.range)
        bounds = (lo, hi)
    ds = load_images(options.data, ctx)
    if ds.x.ndim == 4:
        for d in stack:
            d.fits(tuple(ds.x.shape[1:]))
    spec = stack_spec(stack)
    ctx.log(f"purifying {len(ds)} images with {spec}")
    x = purify_array(ds.x, stack, bounds, seed=options.seed, batch_size=batch_size_for(options.batch_size,
                     ds.x.shape[1:]), progress=ctx.bar("purify"))
    arrays: dict[str, Any] = {"x": x, "index": ds.indices, "defense": np.array(spec), "seed": np.int64(options.seed)}
    if ds.y is not None:
        arrays["y"] = ds.y
    if ds.class_names:
        arrays["class_names"] = np.array(ds.class_names)

    def write(p: Any) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    write_atomic(options.out, write)
    ctx.log(f"wrote {options.out}")
    diff = np.abs(x.astype(np.float64) - ds.x.astype(np.float64)).reshape(len(x), -1)
    return PurifyResult(n=len(x), defense=spec, mean_change=float(diff.mean()), max_change=float(diff.max()),
                        out=options.out)


def check_suffix(out: str, suffix: str) -> None:
    """Refuse an output path that does not end in ``suffix`` (``.npz``, ``.safetensors``)."""
    if not str(out).endswith(suffix):
        raise UsageError(f"--out {out} must end in {suffix}")


def _check_vqvae(options: TrainVqvaeOptions) -> None:
    """Refuse NaN or negative ``noise``/``beta``, a non-positive ``lr`` and a bad ``range``."""
    for option, value, low in (("--noise", options.noise, 0.0), ("--beta", options.beta, 0.0),
                               ("--lr", options.lr, None)):
        if not (math.isfinite(value) and (value > 0 if low is None else value >= low)):  # NaN fails both
            kind = "positive" if low is None else "non-negative"
            raise UsageError(f"{option} must be a {kind} number, got {value:g}")
    if options.range:
        _normalise_field("range", options.range)  # checked before training, whatever the data's dtype


def train_vqvae(options: TrainVqvaeOptions, ctx: JobContext | None = None) -> VqvaeResult:
    """Train a VQ-VAE on ``options.data`` for the ``vqvae`` defence (``vqvae:path=FILE``) and save it."""
    ctx = ctx or JobContext()
    check_suffix(options.out, ".safetensors")
    _check_vqvae(options)
    ds = load_images(options.data, ctx)
    x = unit_images(ds.x, options.range)
    ctx.log(f"training a VQ-VAE on {len(x)} images of shape {tuple(x.shape[1:])} for {options.epochs} epochs")

    def progress(epoch: int, total: int, rec: float) -> None:
        ctx.log(f"epoch {epoch}/{total}: reconstruction MSE {rec:.5f}")

    net, rec = fit_vqvae(
        x, epochs=options.epochs, batch_size=batch_size_for(options.batch_size, x.shape[1:], base=128),
        lr=options.lr, hidden=options.hidden, codes=options.codes, dim=options.dim, beta=options.beta,
        noise=options.noise, seed=options.seed, progress=progress,
    )
    info = {"data": ds.source, "n": len(x), "epochs": options.epochs, "noise": options.noise, "lr": options.lr,
            "beta": options.beta, "seed": options.seed, "train_mse": rec}
    save_vqvae(options.out, net, tuple(x.shape[1:]), info)
    ctx.log(f"wrote {options.out}")
    return VqvaeResult(shape=tuple(int(s) for s in x.shape[1:]), train_mse=float(rec), out=options.out)


def unit_images(x: np.ndarray, value_range: SpecValue) -> np.ndarray:
    """Images on [0, 1]: uint8 / 255, floats mapped from ``value_range`` (default 0,1)."""
    if x.ndim != 4:
        raise DataError(f"a VQ-VAE is trained on image batches (N, C, H, W); the data has shape {tuple(x.shape)}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    lo, hi = _normalise_field("range", value_range) if value_range else (0.0, 1.0)
    xf = x.astype(np.float32)
    if not np.all(np.isfinite(xf)) or xf.min() < lo or xf.max() > hi:
        raise DataError(f"the data's values lie outside the range {lo:g},{hi:g}",
                        "give its value range with --range LO,HI")
    return (xf - lo) / (hi - lo)
