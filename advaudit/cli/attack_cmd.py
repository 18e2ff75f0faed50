"""``advaudit attack``: run attack suites, verify in the deployment runtime, report, gate."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from ..attacks.runner import AttackRun, build_attacks, resolve_eps, run_attacks
from ..attacks.suites import SUITES, AttackChoice, resolve_choices
from ..checkpoint import AttackUnits, Checkpoint, data_inputs, make_inputs
from ..defenses import build_stack
from ..defenses.defended import stack_spec
from ..defenses.evaluate import evaluate_defense, parse_modes
from ..distributed import Shard, run_sharded
from ..errors import EXIT_GATE, EXIT_OK, UsageError
from ..report import parse_gate
from ..report.artifacts import example_grid_for_run, save_adversarial
from ..report.attack_report import attack_markdown, attack_report, attack_table
from ..report.defense_report import defense_markdown, defense_report, defense_table
from .common import (
    Output, ProgressBar, check_outputs, data_options, model_options, open_data, open_model, output_options,
)
from .resume import check_resume, finish, interruptible, open_checkpoint, resume_option
from .sharding import is_main_process, prepare_ranks, recorded_command, workers_option

@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled test data.")
@click.option("--suite", type=click.Choice(list(SUITES)), help="Attack suite (default: standard, unless --attack is given).")
@click.option("--attack", "attack_args", multiple=True, metavar="NAME[:k=v,...]", help="An attack, repeatable; e.g. pgd:steps=100.")
@click.option("--eps", "eps", multiple=True, type=float, help="Budget, repeatable for a robustness curve (default: 8/255 of the range for linf, 0.5 of it for l2).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--targeted", is_flag=True, help="Targeted attacks (needs --target).")
@click.option("--target", help="least-likely, random, or a class label.")
@click.option("--save-adv", type=click.Path(dir_okay=False), help="Write verified adversarial examples (largest eps) to this .npz.")
@click.option("--examples", type=click.Path(dir_okay=False), help="Write a PNG grid of adversarial examples.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC=VALUE", help="Exit 1 if METRIC < VALUE: robust_accuracy, clean_accuracy, robust_accuracy@EPS.")
@click.option("--defense", "defense_args", multiple=True, metavar="NAME[:k=v,...]", help="Put a defence in front of the model, repeatable (stacked in order); e.g. jpeg:quality=75.")
@click.option("--adaptive", type=click.Choice(["blind", "bpda", "bpda+eot", "all"]), help="With --defense: how the attacker treats the defence (default: all).")
@click.option("--eot", "eot", type=click.IntRange(min=1), default=10, show_default=True, help="With --defense: random draws averaged per gradient in bpda+eot.")
@click.option("--eval-draws", "eval_draws", type=click.IntRange(min=1), help="With --defense: seeded draws of randomised defences to verify under (default 5; 1 for deterministic stacks).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True, help="Precision the iterative attacks search in (auto: bf16 where the CPU/GPU has native bf16). Success is always decided and verified in float32 / the deployment runtime.")
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
    gates = [parse_gate(g) for g in kw["fail_under"]]
    choices, cascade = _choices(kw["suite"], kw["attack_args"])
    if kw["targeted"] != (kw["target"] is not None):
        raise UsageError("--targeted and --target go together", "e.g. --targeted --target least-likely")
    seed = 0 if kw["seed"] is None else kw["seed"]
    if not kw["defense_args"] and kw["adaptive"]:
        raise UsageError("--adaptive needs --defense", "e.g. --defense jpeg:quality=75 --adaptive all")
    if kw["defense_args"]:
        if kw["workers"] > 1:
            raise UsageError("--workers is not supported with --defense yet", "run the defence evaluation in one process")
        if kw["resume"]:
            raise UsageError("--resume is not supported with --defense yet", "run the defence evaluation again")
        prepare_ranks(out, kw, supported=False)
        return interruptible(
            None, lambda: _attack_defended(out, kw, choices, gates, seed), "runs with --defense keep no checkpoint yet"
        )
    prepare_ranks(out, kw)
    return interruptible(kw["report_path"], lambda: _attack(out, kw, choices, cascade, gates, seed))


def _attack(
    out: Output, kw: dict[str, Any], choices: list[AttackChoice], cascade: bool, gates: list[Any], seed: int
) -> int:
    """The undefended attack run, checkpointed beside ``--report``."""
    out.info(f"loading {kw['model']} ...")
    model = open_model(kw)
    data = open_data(kw["data_path"], model, kw, out=out)
    eps = _eps(model, kw)
    build_attacks(choices, model, kw["norm"], kw["target"] is not None)  # bad names/params fail before any work
    out.info(
        f"{len(data)} samples, attacks: {', '.join(str(c) for c in choices)}"
        + (" (cascade)" if cascade else "")
        + f", {kw['norm']} eps {', '.join(f'{e:g}' for e in eps)}, batch size {kw['batch_size']}"
    )
    assert data.y is not None
    inputs = make_inputs(
        "attack", model, kw, seed, data=data_inputs(kw["data_path"], data.view, data.y),
        attacks=[str(c) for c in choices], cascade=cascade, eps=eps,
    )
    ckpt = open_checkpoint(out, kw, "attack", inputs)
    if kw["workers"] > 1:
        out.info(f"sharding over {kw['workers']} worker processes")
    prepared = (model, data) if kw["workers"] == 1 else None  # spawned workers load their own
    run = run_sharded(_attack_step, kw["workers"], kw, choices, eps, cascade, seed, out.quiet, prepared, ckpt)
    if not is_main_process():
        return EXIT_OK
    assert run is not None
    report = attack_report(run, model, data, ["advaudit", *recorded_command(sys.argv[1:])], seed, gates)
    finish(ckpt, report, kw["resume"])
    out.report(kw["report_path"], report)
    if kw["save_adv"]:
        save_adversarial(kw["save_adv"], run, choices)
        out.info(f"wrote adversarial examples {kw['save_adv']}")
    if kw["examples"]:
        example_grid_for_run(kw["examples"], run, model.spec.class_names, model.spec.range)
        out.info(f"wrote examples {kw['examples']}")
    if ckpt is not None:
        ckpt.finish()
    return _render(out, report, kw["fmt"], attack_markdown, attack_table)


def _attack_step(
    kw: dict[str, Any], choices: list[AttackChoice], eps: list[float], cascade: bool, seed: int, quiet: bool,
    prepared: tuple[Any, Any] | None = None, ckpt: Checkpoint | None = None, *, shard: Shard,
) -> AttackRun:
    """One rank's share of the attack (all of it in one process); every rank returns the whole run.

    ``ckpt``: the run's checkpoint; every rank reuses its units, rank 0 alone saves new ones."""
    if prepared is None:
        model = open_model({**kw, "device": shard.device(kw["device"])})
        data = open_data(kw["data_path"], model, kw)
    else:
        model, data = prepared
    assert data.y is not None
    with ProgressBar(Output(quiet=quiet or not shard.is_main)) as progress:
        return run_attacks(
            model, data.view, data.y, choices, eps, norm=kw["norm"], cascade=cascade,
            target=kw["target"], batch_size=kw["batch_size"], seed=seed, progress=progress, shard=shard,
            units=None if ckpt is None else AttackUnits(ckpt.for_rank(shard.is_main)),
            keep_adversarial=_keep_adversarial(kw, ckpt),
        )


def _keep_adversarial(kw: dict[str, Any], ckpt: Checkpoint | None) -> str:
    """Keep the adversarial images of the largest eps (in a temporary file) for --save-adv and
    --examples, and in a checkpoint's units so that a --resume can still write them; else none."""
    return "largest" if kw["save_adv"] or kw["examples"] or ckpt is not None else "none"


def _attack_defended(out: Output, kw: dict[str, Any], choices: list[AttackChoice], gates: list[Any], seed: int) -> int:
    """``--defense``: evaluate the defence stack under blind / BPDA / BPDA+EOT attacks."""
    for flag in ("targeted", "save_adv", "examples"):
        if kw[flag]:
            raise UsageError(f"--{flag.replace('_', '-')} is not supported with --defense")
    stack = build_stack(kw["defense_args"])  # bad names/params fail before any work
    modes = parse_modes(kw["adaptive"] or "all")
    out.info(f"loading {kw['model']} ...")
    model = open_model(kw)
    data = open_data(kw["data_path"], model, kw, out=out)
    assert model.input_shape is not None and data.y is not None
    for d in stack:
        d.fits(tuple(model.input_shape))
    eps = _eps(model, kw)
    build_attacks(choices, model, kw["norm"], False)
    out.info(
        f"{len(data)} samples, defence {stack_spec(stack)}, modes {', '.join(modes)}, attacks: "
        f"{', '.join(str(c) for c in choices)}, {kw['norm']} eps {', '.join(f'{e:g}' for e in eps)}"
    )
    with ProgressBar(out) as progress:
        ev = evaluate_defense(
            model, data.x, data.y, stack, choices, eps, modes=modes, norm=kw["norm"], eot=kw["eot"],
            eval_draws=kw["eval_draws"], batch_size=kw["batch_size"], seed=seed, progress=progress,
        )
    report = defense_report(ev, model, data, ["advaudit", *sys.argv[1:]], seed, gates)
    out.report(kw["report_path"], report)
    return _render(out, report, kw["fmt"], defense_markdown, defense_table)


def _eps(model: Any, kw: dict[str, Any]) -> list[float]:
    """The --eps values, checked; default 8/255 of the value range (Linf) or half of it (L2)."""
    return resolve_eps(model, list(kw["eps"]), kw["norm"])


def _render(
    out: Output, report: dict[str, Any], fmt: str, markdown: Callable[[dict], str], table: Callable[[dict], Any]
) -> int:
    """Print the report in ``fmt`` (warnings and gates after a table); the exit code from its gates."""
    if fmt == "json":
        out.json(report)
    elif fmt == "md":
        click.echo(markdown(report), nl=False)
    else:
        out.out.print(table(report))
        for w in report["warnings"]:
            out.err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
        for g in report["gates"]:
            status = "[green]pass[/green]" if g["passed"] else "[red]FAIL[/red]"
            out.out.print(f"gate {g['metric']} >= {g['threshold']:g}: {g['value']:.4f} {status}")
    return EXIT_OK if report["passed"] else EXIT_GATE


def _choices(suite: str | None, attack_args: tuple[str, ...]) -> tuple[list[AttackChoice], bool]:
    if suite and attack_args:
        raise UsageError("give --suite or --attack, not both")
    return resolve_choices(suite, attack_args)


_progress = ProgressBar  # the old name, still imported by other commands
