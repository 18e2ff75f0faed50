"""``advaudit detect``: Label Change Rate detection (calibrate, detect, evaluate)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.table import Table
from rich.text import Text

from ..checkpoint import Checkpoint, ChunkUnits, data_inputs, make_inputs
from ..models.base import sha256_file
from ..data import load_data, prepare
from ..detect.evaluate import adversarial_groups, evaluate_held_out, roc_png
from ..detect.lcr import DEFAULT_MUTATION, Calibration, LCRDetector, Mutation, calibrate as calibrate_lcr
from ..detect.model_mutation import OPERATORS as MODEL_OPERATORS
from ..detect.mutations import MUTATORS
from ..distributed import Shard, run_sharded
from ..errors import EXIT_GATE, EXIT_OK, DataError
from ..report import base_report
from ..report.detect_report import detect_evaluate_report
from .common import (
    Output, check_outputs, compose, data_options, max_input_pixels, model_options, open_data, open_model,
    output_options,
)
from .resume import check_resume, finish, interruptible, open_checkpoint, resume_option
from .sharding import is_main_process, prepare_ranks, recorded_command, workers_option

MUTATION_HELP = (
    f"auto, input operators ({', '.join(MUTATORS)}) chained with '+', or one model operator ({', '.join(MODEL_OPERATORS)})."
)
RADIUS_HELP = (
    "Size of each operator's mutation as a fraction of the value range (the rate for model operators), "
    "comma-separated for a chain. [default: each operator's own; auto: darken+pixel 0.5,0.05 for "
    "one-channel images, brightness 0.5 for colour]"
)

sprt_options = compose(
    click.option("--alpha", default=0.05, show_default=True, type=float, help="Bound on reporting an adversarial input as normal."),
    click.option("--beta", default=0.05, show_default=True, type=float, help="Bound on reporting a normal input as adversarial."),
    click.option("--mu", default=1.2, show_default=True, type=float, help="Threshold factor: test kappa(x) > mu * kappa_nor."),
    click.option("--sigma", type=float, help="Indifference region half-width (default min(0.05, 0.8*mu*kappa_nor))."),
    click.option("--max-mutations", default=500, show_default=True, type=click.IntRange(min=1)),
)


class _DetectGroup(click.Group):
    """``advaudit detect MODEL ...`` runs detection; ``calibrate`` and ``evaluate`` are subcommands."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("advaudit detect", "MODEL --inputs INPUTS --calibration CALIB [OPTIONS] | calibrate ... | evaluate ...")


@click.group(cls=_DetectGroup)
def detect() -> None:
    """Flag adversarial inputs by their Label Change Rate under random mutations (nMutant, SPRT).

    \b
    advaudit detect calibrate MODEL --data CLEAN --out calib.json
    advaudit detect MODEL --inputs INPUTS --calibration calib.json
    advaudit detect evaluate MODEL --clean CLEAN --adversarial ADV.npz [--calibration calib.json]
    """


def _mutation(kw: dict[str, Any]) -> Mutation:
    return Mutation.parse(kw["mutation"], kw["radius"]).check()


@detect.command("calibrate")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="Clean labelled data.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Calibration JSON to write.")
@click.option("--mutation", default=DEFAULT_MUTATION, show_default=True, help=MUTATION_HELP)
@click.option("--radius", help=RADIUS_HELP)
@click.option("--mutations", "n_mutations", type=click.IntRange(min=10), default=200, show_default=True, help="Mutations per input.")
@model_options
@data_options
@output_options
@click.pass_obj
def calibrate(out: Output, **kw: Any) -> None:
    """Estimate kappa_nor (LCR of correctly classified clean inputs + one-sided 99% margin)."""
    check_outputs({"--out": kw["out_path"]}, inputs=[kw["model"], kw["data_path"], kw["spec_file"]])
    mutation = _mutation(kw)
    model = open_model(kw)
    data = open_data(kw["data_path"], model, kw, out=out)
    assert data.y is not None
    cal = calibrate_lcr(model, data.view, data.y, mutation, n_mutations=kw["n_mutations"], seed=kw["seed"] or 0)
    cal.save(kw["out_path"])
    out.info(f"wrote {kw['out_path']}")
    out.out.print(
        f"kappa_nor = {cal.kappa_nor:.4f} (mean {cal.lcr_mean:.4f} + margin {cal.margin:.4f}; "
        f"{cal.n_inputs} inputs x {cal.n_mutations} {cal.mutation.operator} mutations, radius {cal.mutation.radius_text})",
        highlight=False,
    )


@detect.command("run", hidden=True)
@click.argument("model", type=click.Path())
@click.option("--inputs", "inputs_path", required=True, type=click.Path(), help="npz, image folder, or image.")
@click.option("--calibration", "calibration_path", required=True, type=click.Path(dir_okay=False))
@sprt_options
@click.option("--report", "report_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-on-adversarial", is_flag=True, help="Exit 1 if any input is flagged adversarial.")
@model_options
@data_options
@output_options
@click.pass_obj
def run(out: Output, **kw: Any) -> int:
    """Detect adversarial inputs with the sequential probability ratio test."""
    check_outputs({"--report": kw["report_path"]},
                  inputs=[kw["model"], kw["inputs_path"], kw["calibration_path"], kw["spec_file"]])
    cal = Calibration.load(kw["calibration_path"])
    model = open_model(kw)
    cal.check_for(model)
    data = open_data(kw["inputs_path"], model, kw, need_labels=False, out=out)
    det = LCRDetector(
        model, cal, alpha=kw["alpha"], beta=kw["beta"], mu=kw["mu"], sigma=kw["sigma"],
        max_mutations=kw["max_mutations"], seed=kw["seed"] or 0,
    )
    res = det(data.view)
    report = base_report(["advaudit", *sys.argv[1:]], kw["seed"] or 0)
    report.update(
        {
            "kind": "detect",
            "model": {"path": str(model.path), "sha256": model.sha256, "format": model.format},
            "data": data.dataset.describe(),
            "calibration": {"path": kw["calibration_path"], "kappa_nor": cal.kappa_nor, "mutation": cal.mutation.settings()},
            "sprt": {"alpha": det.test.alpha, "beta": det.test.beta, "mu": det.test.mu, "sigma": det.test.sigma},
            "inputs": [
                {"index": int(i), "verdict": str(v), "label": int(lab), "lcr": float(r), "mutations": int(m), "error_bound": None if np.isnan(e) else float(e)}
                for i, v, lab, r, m, e in zip(data.dataset.indices, res.verdict, res.labels, res.lcr, res.mutations, res.error_bound)
            ],
            "totals": res.totals(),
            "passed": not (kw["fail_on_adversarial"] and (res.decision == 1).any()),
        }
    )
    out.report(kw["report_path"], report)
    if kw["fmt"] == "json":
        out.json(report)
    else:
        t = report["totals"]
        if kw["fmt"] == "md":
            click.echo("| index | verdict | label | LCR | mutations | error bound |\n|---|---|---|---|---|---|")
            for r in report["inputs"]:
                click.echo(f"| {r['index']} | {r['verdict']} | {r['label']} | {r['lcr']:.3f} | {r['mutations']} | {r['error_bound']} |")
        else:
            table = Table(title=f"advaudit detect: {t['adversarial']} adversarial, {t['normal']} normal, {t['undecided']} undecided")
            for c in ("index", "verdict", "label", "LCR", "mutations", "error bound"):
                table.add_column(c)
            for r in report["inputs"][:200]:
                table.add_row(*(Text(str(v)) for v in (r["index"], r["verdict"], r["label"], f"{r['lcr']:.3f}", r["mutations"], r["error_bound"])))
            out.out.print(table)
        out.out.print(f"mean mutations {t['mean_mutations']:.1f}, {t['ms_per_input']:.2f} ms per input", highlight=False)
    return EXIT_OK if report["passed"] else EXIT_GATE


@detect.command("evaluate")
@click.argument("model", type=click.Path())
@click.option("--clean", "clean_path", required=True, type=click.Path(), help="Clean labelled data.")
@click.option("--adversarial", "adv_path", required=True, type=click.Path(), help="Adversarial .npz (from 'advaudit attack --save-adv').")
@click.option("--calibration", "calibration_path", type=click.Path(dir_okay=False), help="Default: calibrate on the first half of --clean, evaluate on the rest.")
@click.option("--mutation", default=DEFAULT_MUTATION, show_default=True, help=MUTATION_HELP)
@click.option("--radius", help=RADIUS_HELP)
@click.option("--lcr-mutations", type=click.IntRange(min=10), default=200, show_default=True, help="Mutations per input for LCR / AUROC.")
@sprt_options
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), help="Write the ROC curve PNG.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@workers_option
@resume_option
@model_options
@data_options
@output_options
@click.pass_obj
def evaluate(out: Output, **kw: Any) -> int:
    """AUROC of LCR, kappa_nor vs kappa_adv per attack (Table 3), SPRT precision/recall/cost.

    With --report, every finished chunk of inputs (calibration, LCR, SPRT) is kept in
    REPORT.partial/; after Ctrl-C or a kill (exit 130), --resume continues where it stopped.
    """
    check_resume(kw)
    check_outputs({"--roc": kw["roc_path"], "--report": kw["report_path"]},
                  inputs=[kw["model"], kw["clean_path"], kw["adv_path"], kw["calibration_path"], kw["spec_file"]])
    prepare_ranks(out, kw)
    return interruptible(kw["report_path"], lambda: _evaluate(out, kw))


def _evaluate(out: Output, kw: dict[str, Any]) -> int:
    """``detect evaluate`` (checkpointed beside ``--report``): figures, ROC, report, table."""
    seed = kw["seed"] or 0
    inputs = _evaluate_inputs(kw)  # bad input fails here, before any worker starts
    model, clean, adv, groups, _ = inputs
    ckpt = open_checkpoint(out, kw, "detect-evaluate", make_inputs(
        "detect-evaluate", model, kw, seed, data=data_inputs(kw["clean_path"], clean.view, clean.y),
        adversarial=data_inputs(kw["adv_path"], adv.view, groups.astype(str)),
        calibration=sha256_file(kw["calibration_path"]) if kw["calibration_path"] else None,
    ))
    if kw["workers"] > 1:
        out.info(f"sharding over {kw['workers']} worker processes")
    ev = run_sharded(_evaluate_step, kw["workers"], kw, seed, out.quiet, inputs if kw["workers"] == 1 else None, ckpt)
    if not is_main_process():
        return EXIT_OK
    assert ev is not None
    report = detect_evaluate_report(ev, model, clean, ["advaudit", *recorded_command(sys.argv[1:])], seed)
    finish(ckpt, report, kw["resume"])
    if kw["roc_path"]:
        roc_png(kw["roc_path"], ev.fpr, ev.tpr, f"LCR ROC, AUROC {ev.figures['auroc_all']:.4f}")
        out.info(f"wrote {kw['roc_path']}")
    out.report(kw["report_path"], report)
    if ckpt is not None:
        ckpt.finish()
    if kw["fmt"] == "json":
        out.json(report)
        return EXIT_OK
    f = ev.figures
    t3 = f["table3"]
    mutation = Mutation.parse(f["mutation"]["operator"], f["mutation"]["radius"])
    table = Table(title=f"kappa (LCR) and AUROC, {mutation.operator} radius {mutation.radius_text}")
    for c in ("set", "n", "kappa mean +- 99% CI", "AUROC"):
        table.add_column(c)
    table.add_row("normal", str(t3["kappa_nor"]["n"]), f"{t3['kappa_nor']['mean']:.4f} +- {t3['kappa_nor']['ci99']:.4f}", "-")
    for g, v in t3["kappa_adv"].items():
        table.add_row(Text(g), str(v["n"]), f"{v['mean']:.4f} +- {v['ci99']:.4f}", f"{f['auroc'][g]:.4f}")
    table.add_row("mean", "", "", f"{f['auroc_mean']:.4f}")
    out.out.print(table)
    s = f["sprt"]
    out.out.print(
        f"SPRT: precision {s['precision']:.4f}, recall {s['recall']:.4f}, accuracy {s['accuracy']:.4f}, "
        f"false positives {s['false_positive_rate']:.4f}, undecided {s['undecided']}, "
        f"mean mutations {s['mean_mutations']:.1f} (adversarial {s['mean_mutations_adversarial'] or 0:.1f}), "
        f"{s['ms_per_input']:.2f} ms per input",
        highlight=False,
    )
    return EXIT_OK


def _evaluate_inputs(kw: dict[str, Any], shard: Shard | None = None) -> tuple[Any, Any, Any, np.ndarray, Calibration | None]:
    """Model, clean data, adversarial data, their groups, and the calibration file if one is given."""
    model = open_model(kw if shard is None else {**kw, "device": shard.device(kw["device"])})
    clean = open_data(kw["clean_path"], model, kw)
    adv = prepare(load_data(kw["adv_path"], max_values=max_input_pixels(kw)), model, need_labels=False)
    if len(adv) == 0:
        raise DataError(f"{Path(kw['adv_path']).name} holds no adversarial examples")
    groups = adversarial_groups(kw["adv_path"], len(adv))
    cal = None
    if kw["calibration_path"]:
        cal = Calibration.load(kw["calibration_path"])
        cal.check_for(model)
    return model, clean, adv, groups, cal


def _evaluate_step(
    kw: dict[str, Any], seed: int, quiet: bool, inputs: tuple | None = None, ckpt: Checkpoint | None = None, *,
    shard: Shard,
) -> Any:
    """One rank's share of ``detect evaluate`` (all of it in one process); every rank returns the figures.

    ``ckpt``: the run's checkpoint; every rank reuses its chunks, rank 0 alone saves new ones."""
    model, clean, adv, groups, cal = inputs if inputs is not None else _evaluate_inputs(kw, shard)
    assert clean.y is not None
    ev, cal, half = evaluate_held_out(
        model, clean.view, clean.y, adv.view, groups, cal, _mutation(kw), n_lcr=kw["lcr_mutations"], seed=seed,
        shard=shard,
        alpha=kw["alpha"], beta=kw["beta"], mu=kw["mu"], sigma=kw["sigma"], max_mutations=kw["max_mutations"],
        units=None if ckpt is None else ChunkUnits(ckpt.for_rank(shard.is_main)),
    )
    if half:
        Output(quiet=quiet or not shard.is_main).info(
            f"calibrated on {half} clean inputs: kappa_nor {cal.kappa_nor:.4f}; "
            f"evaluated on the other {len(clean) - half}"
        )
    return ev
