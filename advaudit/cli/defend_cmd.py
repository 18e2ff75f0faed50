"""``advaudit defend``: apply input-purification defences to data; train a VQ-VAE purifier."""

from __future__ import annotations

import math
from typing import Any

import click
import numpy as np

from ..data import load_data, resolve_batch_size
from ..defenses import build_stack
from ..defenses.defended import stack_spec
from ..defenses.purify import purify_array
from ..errors import UsageError
from ..report import write_atomic
from ..spec import _normalise_field
from .common import Output, ProgressBar, check_outputs, data_options, max_input_pixels, output_options, progress_for

VQVAE_DEFAULT_BATCH = 128
"""train-vqvae's default --batch-size (fewer for large images)."""


@click.group()
def defend() -> None:
    """Input-purification defences outside an attack run.

    \b
    advaudit defend purify --defense kmeans:k=16 --data DATA --out purified.npz
    advaudit defend train-vqvae --data DATA --out vqvae.safetensors [--epochs 10]

    To evaluate a defence against attacks, use advaudit attack MODEL --defense ... --adaptive all.
    """


@defend.command("purify")
@click.option("--defense", "defense_args", multiple=True, required=True, metavar="NAME[:k=v,...]", help="A defence, repeatable (applied in order).")
@click.option("--data", "data_path", required=True, type=click.Path(), help="Images to purify (npz, IDX, image folder, ...).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The .npz to write (x, and y when the data has labels).")
@click.option("--range", "value_range", metavar="LO,HI", help="Value range of float data (default 0,1; uint8 data is 0..255 and stays uint8).")
@data_options
@output_options
@click.pass_obj
def purify(out: Output, **kw: Any) -> None:
    """Apply a defence stack to DATA and write the purified images to an .npz."""
    if not str(kw["out_path"]).endswith(".npz"):
        raise UsageError(f"--out {kw['out_path']} must end in .npz")
    check_outputs({"--out": kw["out_path"]}, inputs=[kw["data_path"]])
    stack = build_stack(kw["defense_args"])
    bounds = (0.0, 1.0)
    if kw["value_range"]:
        bounds = tuple(_normalise_field("range", kw["value_range"]))  # type: ignore[assignment]
    ds = _load(out, kw)
    seed = kw["seed"] or 0
    if ds.x.ndim == 4:
        for d in stack:
            d.fits(tuple(ds.x.shape[1:]))
    batch_size = resolve_batch_size(kw["batch_size"], ds.x.shape[1:])
    out.info(f"purifying {len(ds)} images with {stack_spec(stack)}")
    with ProgressBar(out) as progress:
        x = purify_array(ds.x, stack, bounds, seed=seed, batch_size=batch_size,
                         progress=progress_for(progress, "purify"))
    arrays: dict[str, Any] = {"x": x, "index": ds.indices, "defense": np.array(stack_spec(stack)), "seed": np.int64(seed)}
    if ds.y is not None:
        arrays["y"] = ds.y
    if ds.class_names:
        arrays["class_names"] = np.array(ds.class_names)

    def write(p: Any) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    write_atomic(kw["out_path"], write)
    out.info(f"wrote {kw['out_path']}")
    diff = np.abs(x.astype(np.float64) - ds.x.astype(np.float64)).reshape(len(x), -1)
    out.out.print(f"purified {len(x)} images with {stack_spec(stack)}: mean |change| {diff.mean():.4g}, "
                  f"max {diff.max():.4g} (data units)", highlight=False)


@defend.command("train-vqvae")
@click.option("--data", "data_path", required=True, type=click.Path(), help="Clean training images.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The .safetensors file to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate (the paper used 2e-4 for 100 epochs on 50k images).")
@click.option("--hidden", type=click.IntRange(min=1), default=64, show_default=True, help="Channels of the encoder/decoder.")
@click.option("--codes", type=click.IntRange(min=2), default=128, show_default=True, help="Codebook size.")
@click.option("--dim", type=click.IntRange(min=1), default=32, show_default=True, help="Code vector size.")
@click.option("--beta", type=float, default=1.0, show_default=True, help="Commitment loss weight.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Std of Gaussian noise added to the training inputs (fraction of the range).")
@click.option("--range", "value_range", metavar="LO,HI", help="Value range of float data (default 0,1; uint8 data is 0..255).")
@data_options
@output_options
@click.pass_obj
def train_vqvae_cmd(out: Output, **kw: Any) -> None:
    """Train a small VQ-VAE on clean DATA for the vqvae defence (vqvae:path=FILE)."""
    from ..defenses.vqvae import save_vqvae, train_vqvae

    if not str(kw["out_path"]).endswith(".safetensors"):
        raise UsageError(f"--out {kw['out_path']} must end in .safetensors")
    check_outputs({"--out": kw["out_path"]}, inputs=[kw["data_path"]])
    for option, value, low in (("--noise", kw["noise"], 0.0), ("--beta", kw["beta"], 0.0), ("--lr", kw["lr"], None)):
        if not (math.isfinite(value) and (value > 0 if low is None else value >= low)):  # NaN fails both
            kind = "positive" if low is None else "non-negative"
            raise UsageError(f"{option} must be a {kind} number, got {value:g}")
    if kw["value_range"]:
        _normalise_field("range", kw["value_range"])  # checked before training, whatever the data's dtype
    ds = _load(out, kw)
    x = _unit(ds.x, kw["value_range"])
    out.info(f"training a VQ-VAE on {len(x)} images of shape {tuple(x.shape[1:])} for {kw['epochs']} epochs")

    def progress(epoch: int, total: int, rec: float) -> None:
        out.info(f"epoch {epoch}/{total}: reconstruction MSE {rec:.5f}")

    net, rec = train_vqvae(
        x, epochs=kw["epochs"], batch_size=resolve_batch_size(kw["batch_size"], x.shape[1:], base=VQVAE_DEFAULT_BATCH),
        lr=kw["lr"], hidden=kw["hidden"], codes=kw["codes"], dim=kw["dim"], beta=kw["beta"], noise=kw["noise"],
        seed=kw["seed"] or 0, progress=progress,
    )
    info = {"data": ds.source, "n": len(x), "epochs": kw["epochs"], "noise": kw["noise"], "lr": kw["lr"],
            "beta": kw["beta"], "seed": kw["seed"] or 0, "train_mse": rec}
    save_vqvae(kw["out_path"], net, tuple(x.shape[1:]), info)
    out.info(f"wrote {kw['out_path']}")
    out.out.print(f"VQ-VAE {','.join(map(str, x.shape[1:]))}: reconstruction MSE {rec:.5f} (last epoch, [0,1] scale)", highlight=False)


def _load(out: Output, kw: dict[str, Any]) -> Any:
    """The --data images with the data options (--resize/--crop included), a bar while decoding."""
    with ProgressBar(out) as progress:
        return load_data(kw["data_path"], fmt=kw["data_format"], n=kw["n"], offset=kw["offset"] or 0, seed=kw["seed"],
                         labels_path=kw["labels_path"], resize=kw["resize"], crop=kw["crop"],
                         progress=progress_for(progress, f"loading {kw['data_path']}"), max_values=max_input_pixels(kw))


def _unit(x: np.ndarray, value_range: str | None) -> np.ndarray:
    """Images on [0, 1]: uint8 / 255, floats mapped from --range (default 0,1)."""
    if x.ndim != 4:
        from ..errors import DataError

        raise DataError(f"a VQ-VAE is trained on image batches (N, C, H, W); the data has shape {tuple(x.shape)}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    lo, hi = _normalise_field("range", value_range) if value_range else (0.0, 1.0)
    xf = x.astype(np.float32)
    if not np.all(np.isfinite(xf)) or xf.min() < lo or xf.max() > hi:
        from ..errors import DataError

        raise DataError(f"the data's values lie outside the range {lo:g},{hi:g}", "give its value range with --range LO,HI")
    return (xf - lo) / (hi - lo)
