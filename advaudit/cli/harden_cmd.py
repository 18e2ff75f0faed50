"""``advaudit harden``: adversarial training, export in the input's format, before/after audit."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import EXIT_OK, UsageError
from ..harden.api import check_inputs, harden
from ..harden.evaluate import evaluate_suites
from ..harden.export import export_hardened
from ..harden.train import METHODS, EpochStats
from ..models import load_model
from ..report import base_report, model_section
from .attack_cmd import _progress
from .common import Output, check_outputs, data_options, model_options, open_data, open_model, output_options

EVAL_SUITES = ("quick", "standard")


def _format_of(suffix: str) -> str:
    """The model format a file suffix stands for: ``.onnx``, ``.pt2`` (torch.export), else TorchScript."""
    return {".onnx": "onnx", ".pt2": "torch.export"}.get(suffix, "torchscript")


def _default_out(model_path: str) -> str:
    p = Path(model_path)
    return f"{p.stem}-hardened{p.suffix}"


@click.command("harden")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled training data (--n/--offset select from it).")
@click.option("--eval-data", "eval_path", required=True, type=click.Path(), help="Labelled evaluation data for the before/after table.")
@click.option("--eval-n", type=click.IntRange(min=1), help="Evaluate on at most this many samples (the standard suite is slow on robust models).")
@click.option("--eval-offset", default=0, show_default=True, type=click.IntRange(min=0), help="Skip the first samples of --eval-data.")
@click.option("--eval-suite", "eval_suites", multiple=True, type=click.Choice(EVAL_SUITES), help="Suites for the before/after table, repeatable (default: quick and standard).")
@click.option("--eps", required=True, type=float, help="L-inf budget to train and evaluate at, in the model's input units (e.g. 0.3 for MNIST in [0,1]).")
@click.option("--method", type=click.Choice(METHODS), default="pgd", show_default=True, help="pgd (Madry), fgsm-rs (Wong et al. 2020) or trades (Zhang et al. 2019).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", type=click.IntRange(min=1), help="PGD/TRADES steps K [default: 10].")
@click.option("--step-size", type=float, help="Attack step [default: 2.5 eps/K; fgsm-rs 1.25 eps].")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Learning-rate schedule.")
@click.option("--ramp", default=0.3, show_default=True, type=click.FloatRange(0, 1), help="Fraction of training over which eps grows linearly from 0.")
@click.option("--beta", default=6.0, show_default=True, type=float, help="TRADES trade-off.")
@click.option("--shift", default=0, show_default=True, type=click.IntRange(min=0), help="Data augmentation: translate each training image by a random offset of up to SHIFT pixels (against robust overfitting on small training sets).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True, help="Training arithmetic: bf16 autocast (float32 weights) where the CPU/GPU has native bf16 under auto. Also the attacks' search precision in the before/after evaluation.")
@click.option("--train-batch", default=128, show_default=True, type=click.IntRange(min=1), help="Training batch size.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Hardened model, same format as MODEL [default: MODEL-hardened.onnx/.pt here].")
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
    seed = 0 if kw["seed"] is None else kw["seed"]
    eps = kw["eps"]
    for option, key, zero_ok in (("--lr", "lr", False), ("--step-size", "step_size", False), ("--beta", "beta", True),
                                 ("--ramp", "ramp", True)):
        value = kw[key]
        if value is not None and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):  # NaN too
            raise UsageError(f"{option} must be a {'non-negative' if zero_ok else 'positive'} number, got {value:g}")
    suites = list(kw["eval_suites"]) or list(EVAL_SUITES)
    out_path = kw["out_path"] or _default_out(kw["model"])
    in_suffix, out_suffix = Path(kw["model"]).suffix.lower(), Path(out_path).suffix.lower()
    if _format_of(in_suffix) != _format_of(out_suffix):
        raise UsageError(f"--out {out_path} changes the model format", f"the hardened model keeps MODEL's format: use a {in_suffix or '.pt'} file")
    if Path(out_path).resolve() == Path(kw["model"]).resolve():
        raise UsageError("--out is the input model", "write the hardened model to a new file")
    check_outputs({"--out": out_path, "--report": kw["report_path"]},
                  inputs=[kw["model"], kw["data_path"], kw["eval_path"], kw["spec_file"]])

    out.info(f"loading {kw['model']} ...")
    model = open_model(kw)
    train = open_data(kw["data_path"], model, kw)
    eval_kw = {**kw, "n": kw["eval_n"], "offset": kw["eval_offset"]}
    test = open_data(kw["eval_path"], model, eval_kw)
    assert train.y is not None and test.y is not None
    check_inputs(model, train.y, eps, kw["method"])
    check_inputs(model, test.y, eps, kw["method"])

    out.info(f"before: {len(test)} evaluation samples, suites {', '.join(suites)}, linf eps {eps:g}")
    with _progress(out) as progress:
        before = evaluate_suites(model, test.view, test.y, eps, suites, batch_size=kw["batch_size"], seed=seed,
                                 progress=progress)

    out.info(f"training ({kw['method']}) on {len(train)} samples for {kw['epochs']} epochs ...")

    def on_epoch(s: EpochStats) -> None:
        out.info(f"epoch {s.epoch}/{kw['epochs']}: eps {s.eps:.3g} lr {s.lr:.2e} loss {s.loss:.4f} "
                 f"train clean {100 * s.clean_accuracy:.1f}% adv {100 * s.adv_accuracy:.1f}% ({s.time_s:.0f} s)")

    with _progress(out) as progress:
        result = harden(
            model, train.x, train.y, eps, kw["method"], epochs=kw["epochs"], steps=kw["steps"],
            step_size=kw["step_size"], lr=kw["lr"], batch_size=kw["train_batch"], seed=seed, progress=progress,
            on_epoch=on_epoch, optimizer=kw["optimizer"], schedule=kw["schedule"], ramp=kw["ramp"], beta=kw["beta"],
            precision=kw["precision"], shift=kw["shift"],
        )
    record = {"method": kw["method"], "eps": eps, "config": result.config, "source_sha256": model.sha256,
              "train_data": train.dataset.describe()}
    export = export_hardened(model, result.module, out_path, test.view[:256], record)
    out.info(f"wrote {out_path} (export check: max rel diff {export['max_rel_diff']:.2g})")

    hardened = load_model(out_path, spec=_spec_flags(kw), spec_file=kw.get("spec_file"), device=kw["device"] or "cpu")
    hardened.set_search_precision(kw["precision"])
    if hardened.input_shape is None and model.input_shape is not None:
        hardened.set_input_shape(model.input_shape)
    out.info("after: evaluating the exported model ...")
    with _progress(out) as progress:
        after = evaluate_suites(hardened, test.view, test.y, eps, suites, batch_size=kw["batch_size"], seed=seed,
                                progress=progress)

    report = base_report(["advaudit", *sys.argv[1:]], seed)
    report.update({
        "kind": "harden",
        "model": model_section(model),
        "hardened": {"path": str(hardened.path), "sha256": hardened.sha256, "format": hardened.format, "export": export},
        "train_data": train.dataset.describe(),
        "eval_data": test.dataset.describe(),
        "norm": "linf",
        "eps": eps,
        "method": kw["method"],
        "config": result.config,
        "history": [s.to_dict() for s in result.history],
        "suites": suites,
        "before": before,
        "after": after,
        "summary": _summary(before, after, suites),
    })
    out.report(kw["report_path"], report)
    if kw["fmt"] == "json":
        out.json(report)
    else:
        out.out.print(harden_table(report))
    return EXIT_OK


def _spec_flags(kw: dict[str, Any]) -> dict[str, Any]:
    return {"range": kw.get("value_range"), "mean": kw.get("mean"), "std": kw.get("std"),
            "layout": kw.get("layout"), "input_shape": kw.get("input_shape")}


def _summary(before: dict[str, Any], after: dict[str, Any], suites: list[str]) -> list[dict[str, Any]]:
    rows = [{"metric": "clean_accuracy", "suite": None, "before": before["clean_accuracy"], "after": after["clean_accuracy"]}]
    rows += [{"metric": "robust_accuracy", "suite": s, "before": before["robust_accuracy"][s], "after": after["robust_accuracy"][s]}
             for s in suites]
    for r in rows:
        r["change"] = r["after"] - r["before"]
    return rows


def harden_table(report: dict[str, Any]) -> Table:
    t = Table(title=f"harden ({report['method']}, linf eps {report['eps']:g}, {report['after']['n']} eval samples)")
    for c in ("metric", "before", "after", "change"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for r in report["summary"]:
        label = r["metric"].replace("_", " ") + (f" ({r['suite']})" if r["suite"] else "")
        t.add_row(label, f"{100 * r['before']:.1f}%", f"{100 * r['after']:.1f}%", f"{100 * r['change']:+.1f} pts")
    return t
