"""``advaudit attack``: run attack suites, verify in the deployment runtime, report, gate.

A thin layer over :func:`advaudit.api.attack` (and :func:`advaudit.api.defend` with ``--defense``):
it builds the options, checks flag combinations, calls the job and prints its report."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import api
from ..attacks.suites import SUITES, resolve_choices
from ..errors import EXIT_GATE, EXIT_OK, UsageError
from ..report import parse_gate
from .common import (
    Output, ProgressBar, batch_size_option, check_outputs, data_options, data_options_from, model_options,
    model_options_from, output_options, print_report,
)
from .resume import check_resume, interruptible, resume_option
from .sharding import is_main_process, prepare_ranks, recorded_command, workers_option

@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled test data.")
@click.option("--suite", type=click.Choice(list(SUITES)),
              help="Attack suite (default: standard, unless --attack is given).")
@click.option("--attack", "attack_args", multiple=True, metavar="NAME[:k=v,...]",
              help="An attack, repeatable; e.g. pgd:steps=100.")
@click.option("--eps", "eps", multiple=True, type=float,
              help="Budget, repeatable for a robustness curve "
                   "(default: 8/255 of the range for linf, 0.5 of it for l2).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=api.AttackOptions.norm, show_default=True)
@click.option("--targeted", is_flag=True, help="Targeted attacks (needs --target).")
@click.option("--target", help="least-likely, random, or a class label.")
@click.option("--save-adv", type=click.Path(dir_okay=False),
              help="Write verified adversarial examples (largest eps) to this .npz.")
@click.option("--examples", type=click.Path(dir_okay=False), help="Write a PNG grid of adversarial examples.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 if METRIC < VALUE: robust_accuracy, clean_accuracy, robust_accuracy@EPS.")
@click.option("--defense", "defense_args", multiple=True, metavar="NAME[:k=v,...]",
              help="Put a defence in front of the model, repeatable (stacked in order); e.g. jpeg:quality=75.")
@click.option("--adaptive", type=click.Choice(["blind", "bpda", "bpda+eot", "all"]),
              help="With --defense: how the attacker treats the defence (default: all).")
@click.option("--eot", "eot", type=click.IntRange(min=1), default=api.DefendOptions.eot, show_default=True,
              help="With --defense: random draws averaged per gradient in bpda+eot.")
@click.option("--eval-draws", "eval_draws", type=click.IntRange(min=1),
              help="With --defense: seeded draws of randomised defences to verify under (default 5; 1 for "
                   "deterministic stacks).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=api.ModelOptions.precision,
              show_default=True,
              help="Precision the iterative attacks search in (auto: bf16 where the CPU/GPU has native bf16). Success "
                   "is always decided and verified in float32 / the deployment runtime.")
@workers_option
@resume_option
@model_options
@data_options
@output_options
@click.pass_obj
def attack(out: Output, **kw: Any) -> int:
    """Attack MODEL on DATA; report clean and robust accuracy; gate CI with --fail-under.

    Every adversarial example is re-checked in the model's deployment runtime (ONNX Runtime for
    .onnx) inside the eps ball and the value range; only verified ones count.

    With --defense the model is the defence stack followed by MODEL, and each --adaptive mode is
    reported side by side: blind (adversarials made on the undefended model, then purified), bpda
    (gradients through the defence approximated) and bpda+eot (averaged over --eot random draws).
    Verification runs the real defences, then the deployment runtime.

    With --report, every finished attack x eps is kept in REPORT.partial/ as it finishes; after
    Ctrl-C or a kill (exit 130), the same command with --resume continues where it stopped.
    """
    check_resume(kw)
    check_outputs({"--report": kw["report_path"], "--save-adv": kw["save_adv"], "--examples": kw["examples"]},
                  inputs=[kw["model"], kw["data_path"], kw["spec_file"]])
    for g in kw["fail_under"]:
        parse_gate(g)  # a bad gate fails before any work
    if kw["suite"] and kw["attack_args"]:
        raise UsageError("give --suite or --attack, not both")
    resolve_choices(kw["suite"], kw["attack_args"])  # bad attack texts fail here, before the other checks
    if kw["targeted"] != (kw["target"] is not None):
        raise UsageError("--targeted and --target go together", "e.g. --targeted --target least-likely")
    if not kw["defense_args"] and kw["adaptive"]:
        raise UsageError("--adaptive needs --defense", "e.g. --defense jpeg:quality=75 --adaptive all")
    if kw["defense_args"]:
        if kw["workers"] > 1:
            raise UsageError("--workers is not supported with --defense yet",
                             "run the defence evaluation in one process")
        if kw["resume"]:
            raise UsageError("--resume is not supported with --defense yet", "run the defence evaluation again")
        prepare_ranks(out, kw, supported=False)
        return interruptible(None, lambda: _defend(out, kw), "runs with --defense keep no checkpoint yet")
    prepare_ranks(out, kw)
    return interruptible(kw["report_path"], lambda: _attack(out, kw))


def _attack(out: Output, kw: dict[str, Any]) -> int:
    """The undefended attack run, checkpointed beside ``--report``."""
    options = api.AttackOptions(
        model=model_options_from(kw), data=data_options_from(kw, kw["data_path"]), suite=kw["suite"],
        attacks=tuple(kw["attack_args"]), eps=tuple(kw["eps"]), norm=kw["norm"], target=kw["target"],
        save_adversarial=kw["save_adv"], examples=kw["examples"], report=kw["report_path"],
        fail_under=tuple(kw["fail_under"]), batch_size=batch_size_option(kw), workers=kw["workers"],
        resume=kw["resume"], seed=_seed(kw), command=" ".join(["advaudit", *recorded_command(sys.argv[1:])]),
    )
    with ProgressBar(out) as progress:
        result = api.attack(options, api.JobContext(progress=progress, log=out.info))
    if not is_main_process():
        return EXIT_OK
    return _render(out, result.to_report(), kw["fmt"])


def _defend(out: Output, kw: dict[str, Any]) -> int:
    """``--defense``: evaluate the defence stack under blind / BPDA / BPDA+EOT attacks."""
    for flag in ("targeted", "save_adv", "examples"):
        if kw[flag]:
            raise UsageError(f"--{flag.replace('_', '-')} is not supported with --defense")
    options = api.DefendOptions(
        model=model_options_from(kw), data=data_options_from(kw, kw["data_path"]),
        defenses=tuple(kw["defense_args"]), suite=kw["suite"], attacks=tuple(kw["attack_args"]),
        eps=tuple(kw["eps"]), norm=kw["norm"], adaptive=kw["adaptive"] or "all", eot=kw["eot"],
        eval_draws=kw["eval_draws"], report=kw["report_path"], fail_under=tuple(kw["fail_under"]),
        batch_size=batch_size_option(kw), seed=_seed(kw), command=" ".join(["advaudit", *sys.argv[1:]]),
    )
    with ProgressBar(out) as progress:
        result = api.defend(options, api.JobContext(progress=progress, log=out.info))
    return _render(out, result.to_report(), kw["fmt"])


def _seed(kw: dict[str, Any]) -> int:
    """The attacks' seed: ``--seed``, else 0 (without ``--seed`` the data are the first ``--n``)."""
    return 0 if kw["seed"] is None else int(kw["seed"])


def _render(out: Output, report: dict[str, Any], fmt: str) -> int:
    """Print the report in ``fmt``; the exit code from its gates."""
    print_report(out, report, fmt)
    return EXIT_OK if report["passed"] else EXIT_GATE
