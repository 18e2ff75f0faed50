"""``advaudit scan-backdoor``: model-level backdoor scan (Neural Cleanse, MM-BD, or all)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import api
from ..backdoor.mad import MIN_RATIO
from ..backdoor.scan import COMBINE_RULES, method_names, needs_clean_data
from ..errors import EXIT_GATE, EXIT_OK, UsageError
from ..gates import fail_on_backdoor
from ..registry import get_registry
from ..jobs import JobContext
from ..jobs.scan import ScanOptions
from .common import (
    Output,
    ProgressBar,
    batch_size_option,
    check_outputs,
    data_options,
    data_options_from,
    model_options,
    model_options_from,
    output_options,
    print_report,
)
from .resume import check_resume, interruptible, resume_option
from .sharding import recorded_command


@click.command("scan-backdoor")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", type=click.Path(),
              help="Clean labelled images (100-500 is typical). Optional for data-free methods (mm-bd, freeeagle).")
@click.option("--method", default=ScanOptions.method, show_default=True,
              metavar="neural-cleanse|mm-bd|freeeagle|NAME|all",
              help="Scanner to run ('advaudit plugins --kind backdoor-scanner'); 'all' runs every one.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Optimisation steps (NC: max mini-batch steps, default 1000 with early stop; MM-BD: default 300).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=ScanOptions.alpha,
              show_default=True, help="False-alarm rate: the largest chance that a clean model is flagged.")
@click.option("--combine", type=click.Choice(list(COMBINE_RULES)), default=ScanOptions.combine, show_default=True,
              help="How several scanners' verdicts combine: bonferroni (p-values, at --alpha overall), fisher "
              "(scanners pointing at the same class pooled by Fisher's method, pools Bonferroni-corrected) or "
              "any (flagged when one flags; not calibrated).")
@click.option("--nc-rule", type=click.Choice(["gap", "paper", "reference"]),
              help="Neural Cleanse's outlier rule: gap (log-norm anomaly index with a p-value against the "
              "model's own null, and a norm at least --min-ratio times below the median), paper (MAD index > "
              "--anomaly-threshold) or reference (each label against the same label in clean reference models; "
              "needs --reference). [default: reference with --reference, else gap]")
@click.option("--reference", multiple=True, type=click.Path(), metavar="REPORT|DIR",
              help="Scan reports (--report) of clean models of the same task, made with the same --method, --data "
              "and settings; a folder stands for its *.json. Neural Cleanse, MM-BD and FreeEagle then test each "
              "class against the same class in these models. Repeat for several; 5 or more, 10-20 is typical.")
@click.option("--min-ratio", type=click.FloatRange(min=1),
              help="With --nc-rule gap: a flagged label's mask norm must be at least this many times below the "
              f"median label's. [default: {MIN_RATIO:g}, set on calibration models]")
@click.option("--anomaly-threshold", type=click.FloatRange(min=0, min_open=True),
              help="With --nc-rule paper: the MAD anomaly index above which a label (with a norm below the median) "
              "is flagged. [default: 2, the paper's]")
@click.option("--target-labels", metavar="L1,L2,...",
              help="Neural Cleanse: scan only these labels of interest (others serve as the null's references).")
@click.option("--triggers-dir", type=click.Path(file_okay=False),
              help="Write mask / pattern / mask*pattern PNGs per class and overview.png.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-on-backdoor", is_flag=True, help="Exit 1 on a 'backdoored' verdict (after writing the report).")
@resume_option
@model_options
@data_options
@output_options
@click.pass_obj
def scan_backdoor(out: Output, **kw: Any) -> int:
    """Scan a model for a backdoor: reconstructed triggers per class, outlier test, verdict.

    \b
    advaudit scan-backdoor MODEL --data CLEAN [--method neural-cleanse|mm-bd|freeeagle|all] [--n 300]
        [--steps N] [--batch-size B] [--alpha 0.05] [--nc-rule gap|paper|reference] [--min-ratio R]
        [--reference REPORT|DIR ...] [--target-labels L,...]
        [--seed S] [--triggers-dir DIR] [--report out.json]
        [--format table|json|md] [--fail-on-backdoor]

    --n defaults to 300 clean images; --batch-size is Neural Cleanse's mini-batch of clean images
    per step (default 32, fewer for inputs of over 262144 values). Exit codes: 0 clean (or no gate),
    1 backdoored with --fail-on-backdoor, 2 bad input, 130 interrupted.

    With --report, each finished scanner and, inside Neural Cleanse, the search state each time a
    label finishes are kept in REPORT.partial/; after Ctrl-C or a kill, --resume continues.
    """
    check_resume(kw)
    check_outputs({"--report": kw["report_path"]}, {"--triggers-dir": kw["triggers_dir"]},
                  inputs=[kw["model"], kw["data_path"], kw["spec_file"], *kw["reference"]])
    options = scan_options_from(kw)
    return interruptible(kw["report_path"], lambda: _scan(out, options, kw["fmt"]))


def scan_options_from(kw: dict[str, Any]) -> ScanOptions:
    """The job's options from the command's; refuses flag combinations the chosen methods cannot use."""
    methods = method_names(kw["method"])
    refs = kw["reference"]
    if refs and not any(get_registry().get("backdoor-scanner", m).reference_key for m in methods):
        raise UsageError(f"--reference: --method {kw['method']} has no scanner with a reference test",
                         "use --method neural-cleanse, mm-bd or all")
    if refs and kw["nc_rule"] in ("gap", "paper") and "neural-cleanse" in methods:
        raise UsageError("--reference tests Neural Cleanse against the references", "drop --nc-rule")
    if kw["nc_rule"] == "reference" and not refs:
        raise UsageError("--nc-rule reference needs scans of clean reference models", "give them with --reference")
    rule = kw["nc_rule"] or ("reference" if refs else "gap")
    if rule == "reference" and kw["target_labels"] is not None:
        raise UsageError("--target-labels does not apply with --reference, which scans every label")
    if kw["anomaly_threshold"] is not None and "neural-cleanse" not in methods:
        raise UsageError("--anomaly-threshold applies to neural-cleanse", "add --method neural-cleanse or --method all")
    if kw["anomaly_threshold"] is not None and rule != "paper":
        raise UsageError("--anomaly-threshold is the paper rule's threshold", "add --nc-rule paper")
    if kw["min_ratio"] is not None and ("neural-cleanse" not in methods or rule != "gap"):
        raise UsageError("--min-ratio is Neural Cleanse's gap-rule floor",
                         "use it with --method neural-cleanse (or all) and --nc-rule gap")
    if kw["target_labels"] is not None and "neural-cleanse" not in methods:
        raise UsageError("--target-labels applies to neural-cleanse", "add --method neural-cleanse or --method all")
    if kw["data_path"] is None and needs_clean_data(kw["method"]):
        raise UsageError(f"--method {kw['method']} needs clean labelled images", "give them with --data")
    return ScanOptions(
        model=model_options_from(kw),
        data=None if kw["data_path"] is None else data_options_from(kw, kw["data_path"]),
        method=kw["method"], steps=kw["steps"], alpha=kw["alpha"], combine=kw["combine"], nc_rule=kw["nc_rule"],
        min_ratio=kw["min_ratio"], reference=tuple(refs), anomaly_threshold=kw["anomaly_threshold"],
        target_labels=parse_label_list(kw["target_labels"]),
        batch_size=batch_size_option(kw), triggers_dir=kw["triggers_dir"], report=kw["report_path"],
        gates=(fail_on_backdoor(),) if kw["fail_on_backdoor"] else (), resume=kw["resume"],
        seed=kw["seed"] if kw["seed"] is not None else ScanOptions.seed,
        command=" ".join(["advaudit", *recorded_command(sys.argv[1:])]),
    )


def parse_label_list(text: str | None) -> tuple[int, ...] | None:
    """``--target-labels 3,7`` -> (3, 7); a one-line UsageError for anything but class indices."""
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() for t in parts):
        raise UsageError(f"--target-labels {text!r} is not a list of class indices", "e.g. --target-labels 0,3,7")
    return tuple(int(t) for t in parts)


def _scan(out: Output, options: ScanOptions, fmt: str) -> int:
    """Run the job with a progress bar, print the result in ``fmt``; exit 1 when a gate failed."""
    with ProgressBar(out) as progress:
        result = api.scan_backdoor(options, JobContext(progress=progress, log=out.info))
    print_report(out, result.to_report(), fmt)
    return EXIT_OK if result.passed else EXIT_GATE
