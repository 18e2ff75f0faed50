"""``advaudit defend``: apply input-purification defences to data; train a VQ-VAE purifier."""

from __future__ import annotations

from typing import Any

import click
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..data import load_data
from ..defenses import build_stack
from ..defenses.defended import stack_spec
from ..defenses.purify import purify_array
from ..errors import UsageError
from ..report import write_atomic
from ..spec import _normalise_field
from .common import Output, data_options, output_options


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
    stack = build_stack(kw["defense_args"])
    bounds = (0.0, 1.0)
    if kw["value_range"]:
        bounds = tuple(_normalise_field("range", kw["value_range"]))  # type: ignore[assignment]
    ds = load_data(kw["data_path"], fmt=kw["data_format"], n=kw["n"], offset=kw["offset"] or 0,
                   seed=kw["seed"], labels_path=kw["labels_path"])
    seed = kw["seed"] or 0
    out.info(f"purifying {len(ds)} images with {stack_spec(stack)}")
    bar = None if out.quiet else Progress(TextColumn("purify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                          console=out.err, transient=True)
    if bar is not None:
        with bar:
            task = bar.add_task("purify", total=len(ds))
            x = purify_array(ds.x, stack, bounds, seed=seed, batch_size=kw["batch_size"],
                             progress=lambda done, total: bar.update(task, completed=done))
    else:
        x = purify_array(ds.x, stack, bounds, seed=seed, batch_size=kw["batch_size"])
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
