"""``advaudit detect``: calibrate a detector, flag inputs, evaluate detection (LCR, STRIP, plugins).

A thin layer over :mod:`advaudit.jobs.detect` and :mod:`advaudit.jobs.detect_evaluate`: each command
builds the job's options from its flags, calls the job through :mod:`advaudit.api` and prints."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import api
from ..detect.model_mutation import OPERATORS as MODEL_OPERATORS
from ..detect.mutations import MUTATORS
from ..errors import EXIT_GATE, EXIT_OK
from ..jobs.detect import DetectCalibrateOptions, DetectOptions
from ..jobs.detect_evaluate import DetectEvaluateOptions
from .common import (
    Output,
    ProgressBar,
    check_outputs,
    compose,
    data_selection_options,
    data_options_from,
    model_options,
    model_options_from,
    output_options,
    print_report,
)
from .resume import check_resume, interruptible, resume_option
from .sharding import prepare_ranks, recorded_command, workers_option

_CAL, _RUN, _EVAL = DetectCalibrateOptions, DetectOptions, DetectEvaluateOptions

MUTATION_HELP = (
    f"auto, input operators ({', '.join(MUTATORS)}) chained with '+', or one model operator "
    f"({', '.join(MODEL_OPERATORS)}). LCR only."
)
RADIUS_HELP = (
    "Size of each operator's mutation as a fraction of the value range (the rate for model operators), "
    "comma-separated for a chain. [default: each operator's own; auto: darken+pixel 0.5,0.05 for "
    "one-channel images, brightness 0.5 for colour] LCR only."
)
METHOD_HELP = (
    "Detector: lcr (Label Change Rate + SPRT), strip (STRIP entropy under superimposition) or an installed "
    "plugin's name (advaudit plugins --kind detector), with optional NAME:key=value,... hyperparameters."
)

sprt_options = compose(
    click.option("--alpha", default=_RUN.alpha, show_default=True, type=float,
                 help="Bound on reporting an adversarial input as normal (LCR)."),
    click.option("--beta", default=_RUN.beta, show_default=True, type=float,
                 help="Bound on reporting a normal input as adversarial (LCR)."),
    click.option("--mu", default=_RUN.mu, show_default=True, type=float,
                 help="Threshold factor: test kappa(x) > mu * kappa_nor (LCR)."),
    click.option("--sigma", type=float,
                 help="Indifference region half-width (default min(0.05, 0.8*mu*kappa_nor); LCR)."),
    click.option("--max-mutations", default=_RUN.max_mutations, show_default=True, type=click.IntRange(min=1),
                 help="Most mutations drawn per input (LCR)."),
)


class _DetectGroup(click.Group):
    """``advaudit detect MODEL ...`` runs detection; ``calibrate`` and ``evaluate`` are subcommands."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """``detect MODEL ...`` is ``detect run MODEL ...``."""
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """One usage line for the three forms."""
        formatter.write_usage("advaudit detect",
                              "MODEL --inputs INPUTS --calibration CALIB [OPTIONS] | calibrate ... | evaluate ...")


@click.group(cls=_DetectGroup)
def detect() -> None:
    """Flag adversarial inputs: Label Change Rate under random mutations (nMutant, SPRT; the default),
    STRIP, or a plugin detector (--method).

    \b
    advaudit detect calibrate MODEL --data CLEAN --out calib.json [--method lcr|strip|NAME]
    advaudit detect MODEL --inputs INPUTS --calibration calib.json
    advaudit detect evaluate MODEL --clean CLEAN --adversarial ADV.npz [--calibration calib.json]
    """



@detect.command("calibrate")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="Clean labelled data.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Calibration JSON to write.")
@click.option("--method", default=_CAL.method, show_default=True, metavar="NAME[:k=v,...]", help=METHOD_HELP)
@click.option("--mutation", default=_CAL.mutation, show_default=True, help=MUTATION_HELP)
@click.option("--radius", help=RADIUS_HELP)
@click.option("--mutations", "n_mutations", type=click.IntRange(min=10), default=_CAL.n_mutations, show_default=True,
              help="Mutations per input (LCR).")
@model_options
@data_selection_options
@output_options
@click.pass_obj
def calibrate(out: Output, **kw: Any) -> None:
    """Calibrate a detector on clean data (LCR: kappa_nor, the LCR of correctly classified clean inputs
    + one-sided 99% margin; STRIP: the entropy threshold for a false rejection rate, and its overlay pool)."""
    check_outputs({"--out": kw["out_path"]}, inputs=[kw["model"], kw["data_path"], kw["spec_file"]])
    options = DetectCalibrateOptions(
        model=model_options_from(kw), data=data_options_from(kw, kw["data_path"]), out=kw["out_path"],
        method=kw["method"], mutation=kw["mutation"], radius=kw["radius"], n_mutations=kw["n_mutations"],
        seed=kw["seed"] or 0,
    )
    with ProgressBar(out) as progress:
        result = api.detect_calibrate(options, api.JobContext(progress=progress, log=out.info))
    out.out.print(result.calibration.summary(), highlight=False)


@detect.command("run", hidden=True)
@click.argument("model", type=click.Path())
@click.option("--inputs", "inputs_path", required=True, type=click.Path(), help="npz, image folder, or image.")
@click.option("--calibration", "calibration_path", required=True, type=click.Path(dir_okay=False))
@click.option("--method", metavar="NAME[:k=v,...]", help=METHOD_HELP + " [default: the calibration's]")
@sprt_options
@click.option("--report", "report_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-on-adversarial", is_flag=True, help="Exit 1 if any input is flagged adversarial.")
@model_options
@data_selection_options
@output_options
@click.pass_obj
def run(out: Output, **kw: Any) -> int:
    """Flag adversarial inputs (LCR: the sequential probability ratio test)."""
    check_outputs({"--report": kw["report_path"]},
                  inputs=[kw["model"], kw["inputs_path"], kw["calibration_path"], kw["spec_file"]])
    options = DetectOptions(
        model=model_options_from(kw), inputs=data_options_from(kw, kw["inputs_path"]),
        calibration=kw["calibration_path"], method=kw["method"], alpha=kw["alpha"], beta=kw["beta"], mu=kw["mu"],
        sigma=kw["sigma"], max_mutations=kw["max_mutations"], fail_on_adversarial=kw["fail_on_adversarial"],
        report=kw["report_path"], seed=kw["seed"] or 0, command=" ".join(["advaudit", *sys.argv[1:]]),
    )
    with ProgressBar(out) as progress:
        result = api.detect(options, api.JobContext(progress=progress, log=out.info))
    print_report(out, result.to_report(), kw["fmt"])
    return EXIT_OK if result.passed else EXIT_GATE


@detect.command("evaluate")
@click.argument("model", type=click.Path())
@click.option("--clean", "clean_path", required=True, type=click.Path(), help="Clean labelled data.")
@click.option("--adversarial", "adv_path", required=True, type=click.Path(),
              help="Adversarial .npz (from 'advaudit attack --save-adv').")
@click.option("--calibration", "calibration_path", type=click.Path(dir_okay=False),
              help="Default: calibrate on the first half of --clean, evaluate on the rest.")
@click.option("--method", default=_EVAL.method, show_default=True, metavar="NAME[:k=v,...]", help=METHOD_HELP)
@click.option("--mutation", default=_EVAL.mutation, show_default=True, help=MUTATION_HELP)
@click.option("--radius", help=RADIUS_HELP)
@click.option("--lcr-mutations", type=click.IntRange(min=10), default=_EVAL.lcr_mutations, show_default=True,
              help="Mutations per input for LCR / AUROC.")
@sprt_options
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), help="Write the ROC curve PNG.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@workers_option
@resume_option
@model_options
@data_selection_options
@output_options
@click.pass_obj
def evaluate(out: Output, **kw: Any) -> int:
    """AUROC of the detector's score and the figures of its decisions (LCR: kappa_nor vs kappa_adv per
    attack, Table 3; SPRT precision/recall/cost).

    With --report, every finished chunk of inputs (LCR: calibration, LCR, SPRT) is kept in
    REPORT.partial/; after Ctrl-C or a kill (exit 130), --resume continues where it stopped.
    """
    check_resume(kw)
    check_outputs({"--roc": kw["roc_path"], "--report": kw["report_path"]},
                  inputs=[kw["model"], kw["clean_path"], kw["adv_path"], kw["calibration_path"], kw["spec_file"]])
    prepare_ranks(out, kw)
    options = DetectEvaluateOptions(
        model=model_options_from(kw), clean=data_options_from(kw, kw["clean_path"]), adversarial=kw["adv_path"],
        calibration=kw["calibration_path"], method=kw["method"], mutation=kw["mutation"], radius=kw["radius"],
        lcr_mutations=kw["lcr_mutations"], alpha=kw["alpha"], beta=kw["beta"], mu=kw["mu"], sigma=kw["sigma"],
        max_mutations=kw["max_mutations"], roc=kw["roc_path"], report=kw["report_path"], resume=kw["resume"],
        workers=kw["workers"], seed=kw["seed"] or 0, command=" ".join(["advaudit", *recorded_command(sys.argv[1:])]),
    )
    return interruptible(kw["report_path"], lambda: _evaluate(out, options, kw["fmt"]))


def _evaluate(out: Output, options: DetectEvaluateOptions, fmt: str) -> int:
    """Run the job (checkpointed beside ``--report``) and print its figures."""
    result = api.detect_evaluate(options, api.JobContext(log=out.info))
    if result is None:  # a helper rank: rank 0 reports
        return EXIT_OK
    print_report(out, result.to_report(), fmt)
    return EXIT_OK
