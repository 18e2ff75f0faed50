"""``--resume`` and interruption for the commands that checkpoint (attack, scan-backdoor, detect evaluate).

The checkpoint itself is :mod:`advaudit.checkpoint`; this module is the command-line side: the
option, its checks, opening the checkpoint on the rank that writes, and turning Ctrl-C / SIGTERM into
exit code 130 with one line that says how many units were kept and how to continue.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from typing import Any, Callable

import click

from ..checkpoint import Checkpoint, checkpoint_dir, kept_units
from ..distributed import is_main_process
from ..errors import EXIT_INTERRUPTED, UsageError
from .common import Output

resume_option = click.option(
    "--resume", is_flag=True,
    help="Continue an interrupted run from the checkpoint beside --report (REPORT.partial/); "
    "without one, run from scratch. Needs the same model, data and options.",
)


def check_resume(kw: dict[str, Any]) -> None:
    """``--resume`` needs ``--report``: the checkpoint lives beside it."""
    if kw.get("resume") and not kw.get("report_path"):
        raise UsageError(
            "--resume needs --report", "give the --report of the interrupted run: its checkpoint is beside it"
        )


def open_checkpoint(out: Output, kw: dict[str, Any], command: str, inputs: dict[str, Any]) -> Checkpoint | None:
    """This run's checkpoint beside ``--report`` (None without ``--report``); only rank 0 writes."""
    if not kw.get("report_path"):
        return None
    return Checkpoint.open(
        kw["report_path"], command, inputs, resume=bool(kw.get("resume")), writer=is_main_process(), log=out.info,
    )


def finish(ckpt: Checkpoint | None, report: dict[str, Any], resume: bool) -> None:
    """Record in ``meta`` how many units were reused (``resumed_units``, with ``--resume``)."""
    if ckpt is not None and resume:
        report["meta"]["resumed_units"] = ckpt.available


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same arguments plus ``--resume``."""
    return shlex.join(["advaudit", *(a for a in argv if a != "--resume"), "--resume"])


NO_REPORT = "give --report to keep finished work for --resume"


def interruptible(report_path: str | None, body: Callable[[], int], why_none: str = NO_REPORT) -> int:
    """Run ``body``; Ctrl-C or SIGTERM -> one line on stderr and :data:`EXIT_INTERRUPTED` (130).

    ``report_path``: where the checkpoint is kept (None: the run keeps none, for the reason ``why_none``)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        return body()
    except KeyboardInterrupt:
        if is_main_process():
            click.echo(interrupted_message(report_path, sys.argv[1:], why_none), err=True)
        return EXIT_INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def interrupted_message(report_path: str | None, argv: list[str], why_none: str = NO_REPORT) -> str:
    """``advaudit: interrupted; N finished unit(s) kept in DIR; continue with: COMMAND``."""
    if not report_path:
        return f"advaudit: interrupted; nothing kept ({why_none})"
    n = kept_units(report_path)
    return (
        f"advaudit: interrupted; {n} finished unit(s) kept in {checkpoint_dir(report_path)}; "
        f"continue with: {resume_command(argv)}"
    )


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


__all__ = ["check_resume", "finish", "interruptible", "open_checkpoint", "resume_command", "resume_option"]
