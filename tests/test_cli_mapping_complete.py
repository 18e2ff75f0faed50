"""Every option of every command that runs a job is pinned by a CLI mapping test.

The ``*_CASES`` tables of ``tests/test_cli_mapping_*.py`` (plus each command's base command line and the
flags a dedicated test there covers) must name every click option of the command, so an option added
without a mapping case fails here. Options that only change what is printed are listed with the reason."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import click
import pytest

from advaudit.cli import cli

from . import test_cli_mapping_attack as A
from . import test_cli_mapping_detect as D
from . import test_cli_mapping_scan_audit as S

Cases = Iterable[tuple[list[str], Any]]


def _flags(*argvs: list[str], tables: Iterable[Cases] = ()) -> set[str]:
    out = {a for argv in argvs for a in argv if a.startswith("-")}
    for table in tables:
        out |= {a for args, _ in table for a in args if a.startswith("-")}
    return out


# command path -> the flags its mapping tests exercise (tables, base command lines, dedicated tests)
COVERED: dict[tuple[str, ...], set[str]] = {
    ("attack",): _flags(A.ATTACK, A.DEFEND, tables=[A.ATTACK_CASES, A.DEFEND_CASES]),
    ("harden",): _flags(A.HARDEN, tables=[A.HARDEN_CASES]),
    ("repair",): _flags(A.REPAIR, tables=[A.REPAIR_CASES]),
    ("defend", "purify"): _flags(A.PURIFY, tables=[A.PURIFY_CASES]),
    ("defend", "train-vqvae"): _flags(A.VQVAE, tables=[A.VQVAE_CASES]),
    ("scan-backdoor",): _flags(S.SCAN, tables=[S.SCAN_CASES]),
    ("audit",): _flags(["--config"], tables=[S.AUDIT_CASES]),
    # test_detect_report_and_seed covers --report and --seed
    ("detect", "run"): _flags(D.RUN_ARGV, ["--report", "--seed"], tables=[D.RUN_CASES, D.MODEL_CASES, D.DATA_CASES]),
    # test_calibrate_seed_picks_the_sample_and_seeds_the_detector covers --seed
    ("detect", "calibrate"): _flags(["--data", "--out", "--seed"],
                                    tables=[D.CALIBRATE_CASES, D.MODEL_CASES, D.DATA_CASES]),
    # test_evaluate_outputs_resume_workers_seed covers the outputs, --resume, --workers and --seed
    ("detect", "evaluate"): _flags(D.EVAL_ARGV, ["--report", "--roc", "--resume", "--workers", "--seed"],
                                   tables=[D.EVAL_CASES, D.MODEL_CASES, D.DATA_CASES]),
}

# Commands that run no job (nothing to map).
NO_JOB = {
    ("info",): "describes a model file",
    ("plugins",): "lists the registry",
    ("report",): "renders an existing report",
}

# Options that change only what is printed, never the job's options.
DISPLAY_ONLY = {
    "--format": "how the report is printed (audit's --format, which writes files, is mapped)",
    "-q": "progress on stderr", "--quiet": "progress on stderr",
    "-v": "detail on stderr", "--verbose": "detail on stderr",
    "--help": "click's help",
    "--init": "audit --init writes a starter audit.yaml and exits (tests/test_audit.py); it runs no job",
}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` (loaded through ``get_command``: advaudit's group is lazy)."""
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None, name
        here = (*path, name)
        if isinstance(command, click.Group):
            if any(isinstance(p, click.Argument) for p in command.params):  # a group that is also a command
                yield here, command
            yield from _commands(command, here)
        else:
            yield here, command


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def test_every_command_is_a_job_command_or_listed() -> None:
    paths = {path for path, _ in _commands(cli)}
    assert paths == set(COVERED) | set(NO_JOB)


@pytest.mark.parametrize("path", sorted(COVERED), ids=" ".join)
def test_every_option_has_a_mapping_case(path: tuple[str, ...]) -> None:
    command = dict(_commands(cli))[path]
    options = _options(command)
    # an option is covered when one of its spellings is (-q / --quiet are one option)
    missing = sorted(
        "/".join(p.opts) for p in command.params if isinstance(p, click.Option)
        if not set(p.opts) & (COVERED[path] | set(DISPLAY_ONLY))
    )
    assert missing == [], f"advaudit {' '.join(path)}: options without a CLI mapping case"
    assert options, "the walk found the command's options"
