"""``advaudit repair``: find a backdoor with Neural Cleanse, unlearn it, export the repaired model.

A thin layer over :func:`advaudit.api.repair`: it builds the options, checks the outputs, calls the
job and prints the before/after figures."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from .. import api
from ..jobs.harden import output_path
from .common import (
    Output, data_options_from, data_selection_options, model_options, model_options_from,
    output_options, run_model_job,
)
from .scan_backdoor_cmd import parse_label_list

_R = api.RepairOptions


@click.command("repair")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Clean labelled images to scan and fine-tune on (--n/--offset select from them; 1000+ is "
                   "better, and about 70 per class: 30 per class cost GTSRB models 1-4 accuracy points).")
@click.option("--eval-data", "eval_path", required=True, type=click.Path(),
              help="Clean labelled images for the before/after figures (not the --data images).")
@click.option("--eval-n", type=click.IntRange(min=1), help="Evaluate on at most this many images.")
@click.option("--scan-n", default=_R.scan_n, show_default=True, type=click.IntRange(min=1),
              help="Images of --data that Neural Cleanse reads (stratified).")
@click.option("--target-labels", metavar="L1,L2,...", help="Scan (and so repair) only these labels.")
@click.option("--scan", "scan_report", type=click.Path(),
              help="A scan-backdoor --report of MODEL: repair the labels its verdict names (e.g. a scan with "
                   "--method all --reference), whatever Neural Cleanse's own outlier test says.")
@click.option("--rounds", default=_R.rounds, show_default=True, type=click.IntRange(min=1),
              help="Most unlearning rounds (each: fine-tune, then reverse the trigger again).")
@click.option("--min-rounds", default=_R.min_rounds, show_default=True, type=click.IntRange(min=1),
              help="Least unlearning rounds: later rounds stop once the re-reversed trigger is no smaller than "
                   "the median label's.")
@click.option("--reversals", default=_R.reversals, show_default=True, type=click.IntRange(min=1),
              help="Triggers reversed per label and round, from different random starts.")
@click.option("--keep-below", default=_R.keep_below, show_default=True, type=click.FloatRange(min=0),
              help="A trigger reversed again after a round joins the unlearning set only if its mask norm is below "
                   "this share of the median label's (larger ones are natural features; unlearning them costs "
                   "clean accuracy).")
@click.option("--epochs", default=_R.epochs, show_default=True, type=click.IntRange(min=1),
              help="Fine-tuning epochs per round.")
@click.option("--lr", default=_R.lr, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate.")
@click.option("--ratio", default=_R.ratio, show_default=True, type=click.FloatRange(0, 1, min_open=True,
                                                                                    max_open=True),
              help="Share of each batch stamped with a reversed trigger (labels kept).")
@click.option("--train-batch", default=_R.train_batch, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Repaired model, same format as MODEL [default: MODEL-repaired.onnx/.pt here].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@model_options
@data_selection_options
@output_options
@click.pass_obj
def repair(out: Output, **kw: Any) -> int:
    """Repair a backdoored MODEL: Neural Cleanse finds the infected label(s) and their reversed
    trigger, fine-tuning on --data with that trigger stamped on a share of the images (labels kept)
    unlearns it (Wang et al. 2019), and the result is exported in MODEL's format.

    Clean accuracy and each reversed trigger's attack success rate are measured on --eval-data
    before and after, the after figures on the exported file in its deployment runtime. A model the
    scan finds clean is left as it is (no file written). With --scan, the labels come from that
    scan-backdoor report and Neural Cleanse only reverses their triggers.
    """
    options = _R(
        model=model_options_from(kw), data=data_options_from(kw, kw["data_path"]),
        eval=replace(data_options_from(kw, kw["eval_path"]), n=kw["eval_n"], offset=0),
        out=kw["out_path"], scan_n=kw["scan_n"], target_labels=parse_label_list(kw["target_labels"]),
        scan_report=kw["scan_report"],
        rounds=kw["rounds"], min_rounds=kw["min_rounds"], reversals=kw["reversals"],
        keep_below=kw["keep_below"], epochs=kw["epochs"], lr=kw["lr"], ratio=kw["ratio"],
        train_batch=kw["train_batch"],
        report=kw["report_path"], seed=0 if kw["seed"] is None else kw["seed"],
        command=" ".join(["advaudit", *sys.argv[1:]]),
    )
    out_path = output_path(options.model.path, options.out, "repaired")
    return run_model_job(out, kw, out_path, api.repair, options)
