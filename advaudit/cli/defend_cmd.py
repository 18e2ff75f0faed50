"""``advaudit defend``: apply input-purification defences to data; train a VQ-VAE purifier.

A thin layer over :func:`advaudit.api.purify` and :func:`advaudit.api.train_vqvae`."""

from __future__ import annotations

from typing import Any, Callable, TypeVar, cast

import click

from .. import api
from ..jobs.purify import check_suffix
from .common import (
    Output, ProgressBar, batch_size_option, check_outputs, data_options, data_options_from, output_options,
)

_V = api.TrainVqvaeOptions
F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def defend() -> None:
    """Input-purification defences outside an attack run.

    \b
    advaudit defend purify --defense kmeans:k=16 --data DATA --out purified.npz
    advaudit defend train-vqvae --data DATA --out vqvae.safetensors [--epochs 10]

    To evaluate a defence against attacks, use advaudit attack MODEL --defense ... --adaptive all.
    """


def _images_to_file(data_help: str, out_help: str, range_help: str) -> Callable[[F], F]:
    """What both subcommands take: ``--data``, ``--out``, ``--range``, the data and output options."""

    def wrap(f: F) -> F:
        for decorate in reversed((
            click.option("--data", "data_path", required=True, type=click.Path(), help=data_help),
            click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help=out_help),
            click.option("--range", "value_range", metavar="LO,HI", help=range_help),
            data_options, output_options, click.pass_obj,
        )):
            f = cast(F, decorate(f))
        return f

    return wrap


def _checked_data(kw: dict[str, Any], suffix: str) -> api.DataOptions:
    """Refuse an ``--out`` without ``suffix`` or one that would overwrite an input; the data options."""
    check_suffix(kw["out_path"], suffix)
    check_outputs({"--out": kw["out_path"]}, inputs=[kw["data_path"]])
    return data_options_from(kw, kw["data_path"])


@defend.command("purify")
@click.option("--defense", "defense_args", multiple=True, required=True, metavar="NAME[:k=v,...]",
              help="A defence, repeatable (applied in order).")
@_images_to_file("Images to purify (npz, IDX, image folder, ...).",
                 "The .npz to write (x, and y when the data has labels).",
                 "Value range of float data (default 0,1; uint8 data is 0..255 and stays uint8).")
def purify(out: Output, **kw: Any) -> None:
    """Apply a defence stack to DATA and write the purified images to an .npz."""
    options = api.PurifyOptions(
        defenses=tuple(kw["defense_args"]), data=_checked_data(kw, ".npz"), out=kw["out_path"],
        range=kw["value_range"], batch_size=batch_size_option(kw), seed=kw["seed"] or 0,
    )
    with ProgressBar(out) as progress:
        r = api.purify(options, api.JobContext(progress=progress, log=out.info))
    out.out.print(f"purified {r.n} images with {r.defense}: mean |change| {r.mean_change:.4g}, "
                  f"max {r.max_change:.4g} (data units)", highlight=False)


@defend.command("train-vqvae")
@click.option("--epochs", type=click.IntRange(min=1), default=_V.epochs, show_default=True)
@click.option("--lr", type=float, default=_V.lr, show_default=True,
              help="Adam learning rate (the paper used 2e-4 for 100 epochs on 50k images).")
@click.option("--hidden", type=click.IntRange(min=1), default=_V.hidden, show_default=True,
              help="Channels of the encoder/decoder.")
@click.option("--codes", type=click.IntRange(min=2), default=_V.codes, show_default=True, help="Codebook size.")
@click.option("--dim", type=click.IntRange(min=1), default=_V.dim, show_default=True, help="Code vector size.")
@click.option("--beta", type=float, default=_V.beta, show_default=True, help="Commitment loss weight.")
@click.option("--noise", type=float, default=_V.noise, show_default=True,
              help="Std of Gaussian noise added to the training inputs (fraction of the range).")
@_images_to_file("Clean training images.", "The .safetensors file to write.",
                 "Value range of float data (default 0,1; uint8 data is 0..255).")
def train_vqvae_cmd(out: Output, **kw: Any) -> None:
    """Train a small VQ-VAE on clean DATA for the vqvae defence (vqvae:path=FILE)."""
    options = _V(
        data=_checked_data(kw, ".safetensors"), out=kw["out_path"], epochs=kw["epochs"], lr=kw["lr"],
        hidden=kw["hidden"], codes=kw["codes"], dim=kw["dim"], beta=kw["beta"], noise=kw["noise"],
        range=kw["value_range"], batch_size=batch_size_option(kw), seed=kw["seed"] or 0,
    )
    with ProgressBar(out) as progress:
        r = api.train_vqvae(options, api.JobContext(progress=progress, log=out.info))
    out.out.print(f"VQ-VAE {','.join(map(str, r.shape))}: reconstruction MSE {r.train_mse:.5f} (last epoch, [0,1] "
                  "scale)",
                  highlight=False)
