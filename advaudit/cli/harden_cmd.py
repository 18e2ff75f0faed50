"""``advaudit harden``: adversarial training, export in the input's format, before/after audit.

A thin layer over :func:`advaudit.api.harden`: it builds the options, checks the outputs, calls the
job and prints the before/after table."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from .. import api
from ..harden.train import METHODS
from ..jobs.harden import EVAL_SUITES, check_harden
from .common import (
    Output, batch_size_option, data_options, data_options_from, model_options,
    model_options_from, output_options, run_model_job,
)

_H = api.HardenOptions

@click.command("harden")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Labelled training data (--n/--offset select from it).")
@click.option("--eval-data", "eval_path", required=True, type=click.Path(),
              help="Labelled evaluation data for the before/after table.")
@click.option("--eval-n", type=click.IntRange(min=1),
              help="Evaluate on at most this many samples (the standard suite is slow on robust models).")
@click.option("--eval-offset", default=0, show_default=True, type=click.IntRange(min=0),
              help="Skip the first samples of --eval-data.")
@click.option("--eval-suite", "eval_suites", multiple=True, type=click.Choice(EVAL_SUITES),
              help="Suites for the before/after table, repeatable (default: quick and standard).")
@click.option("--eps", required=True, type=float,
              help="L-inf budget to train and evaluate at, in the model's input units (e.g. 0.3 for MNIST in [0,1]).")
@click.option("--method", type=click.Choice(METHODS), default=_H.method, show_default=True,
              help="pgd (Madry), fgsm-rs (Wong et al. 2020) or trades (Zhang et al. 2019).")
@click.option("--epochs", default=_H.epochs, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", type=click.IntRange(min=1), help="PGD/TRADES steps K [default: 10].")
@click.option("--step-size", type=float, help="Attack step [default: 2.5 eps/K; fgsm-rs 1.25 eps].")
@click.option("--lr", default=_H.lr, show_default=True, type=float, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=_H.optimizer, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default=_H.schedule, show_default=True,
              help="Learning-rate schedule.")
@click.option("--ramp", default=_H.ramp, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of training over which eps grows linearly from 0.")
@click.option("--beta", default=_H.beta, show_default=True, type=float, help="TRADES trade-off.")
@click.option("--shift", default=_H.shift, show_default=True, type=click.IntRange(min=0),
              help="Data augmentation: translate each training image by a random offset of up to SHIFT pixels (against "
                   "robust overfitting on small training sets).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=api.ModelOptions.precision,
              show_default=True,
              help="Training arithmetic: bf16 autocast (float32 weights) where the CPU/GPU has native bf16 under auto. "
                   "Also the attacks' search precision in the before/after evaluation.")
@click.option("--train-batch", default=_H.train_batch, show_default=True, type=click.IntRange(min=1),
              help="Training batch size.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Hardened model, same format as MODEL [default: MODEL-hardened.onnx/.pt here].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@model_options
@data_options
@output_options
@click.pass_obj
def harden_cmd(out: Output, **kw: Any) -> int:
    """Adversarially fine-tune MODEL at --eps on --data, export it, and audit it before and after.

    The hardened model is written in MODEL's format (ONNX or TorchScript, input spec kept) and checked
    against the trained module; the before/after robust accuracies come from the attack suites, each
    adversarial example verified in the deployment runtime of the exported file.
    """
    options = _H(
        model=model_options_from(kw), train=data_options_from(kw, kw["data_path"]),
        eval=replace(data_options_from(kw, kw["eval_path"]), n=kw["eval_n"], offset=kw["eval_offset"]),
        eps=kw["eps"], method=kw["method"], epochs=kw["epochs"], steps=kw["steps"], step_size=kw["step_size"],
        lr=kw["lr"], optimizer=kw["optimizer"], schedule=kw["schedule"], ramp=kw["ramp"], beta=kw["beta"],
        shift=kw["shift"], train_batch=kw["train_batch"], eval_suites=tuple(kw["eval_suites"]) or _H.eval_suites,
        out=kw["out_path"], report=kw["report_path"], batch_size=batch_size_option(kw),
        seed=0 if kw["seed"] is None else kw["seed"], command=" ".join(["advaudit", *sys.argv[1:]]),
    )
    out_path = check_harden(options)
    return run_model_job(out, kw, out_path, api.harden, options)
