"""``--workers N`` and torchrun support for the commands that shard their work (attack, detect evaluate)."""

from __future__ import annotations

import os
from typing import Any

import click

from ..distributed import env_world, is_main_process, local_device
from ..errors import UsageError
from .common import Output

workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True,
    help="Shard the work over N processes on this machine (same report as one process). "
    "Under torchrun every rank takes its share automatically.",
)


def recorded_command(argv: list[str]) -> list[str]:
    """The command line for the report, without ``--workers N`` and ``--resume`` (they do not change
    the results: a resumed or sharded run's report equals a plain run's)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers=") and a != "--resume":
            out.append(a)
    return out


def prepare_ranks(out: Output, kw: dict[str, Any], supported: bool = True) -> None:
    """Under torchrun: silence ranks > 0 and put each rank on its own GPU; refuse unsupported modes."""
    if env_world() <= 1:
        return
    if not supported:
        raise UsageError("this mode of the command does not shard; run it without torchrun")
    if not is_main_process():
        out.quiet = True
    kw["device"] = local_device(kw.get("device") or "cpu", int(os.environ.get("LOCAL_RANK", "0") or 0))


__all__ = ["is_main_process", "prepare_ranks", "recorded_command", "workers_option"]
