"""The ``advaudit`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a gate failed, 2 usage or input error (one line on stderr, no traceback),
3 internal error (a bug: one line on stderr, the traceback with ``-v``), 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Sequence

import click

from .. import __version__
from ..errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, AdvauditError
from .common import Output


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="advaudit")
@click.option("-q", "--quiet", is_flag=True, help="Print results only, no progress or messages.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Audit trained image classifiers: attacks, backdoor scans, adversarial-input detection.

    Exit codes: 0 success, 1 a gate failed, 2 usage or input error, 3 internal error (please report it).
    """
    out = ctx.ensure_object(Output)  # main() passes its own, to know -v when reporting an internal error
    out.quiet = out.quiet or quiet
    out.verbose += verbose


# Commands load on first use, so `advaudit report` (and `--version`) never import torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info_cmd", "info"),
    "attack": ("attack_cmd", "attack"),
    "scan-backdoor": ("scan_backdoor_cmd", "scan_backdoor"),
    "detect": ("detect_cmd", "detect"),
    "defend": ("defend_cmd", "defend"),
    "harden": ("harden_cmd", "harden_cmd"),
    "repair": ("repair_cmd", "repair"),
    "audit": ("audit_cmd", "audit"),
    "report": ("report_cmd", "report"),
    "plugins": ("plugins_cmd", "plugins"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it).

    Expected errors (:class:`~advaudit.errors.AdvauditError`, click's usage errors) and running out of
    memory print one ``advaudit: error:`` line and return 2.  Any other exception is a bug: one
    ``advaudit: internal error:`` line (the traceback too with ``-v``) and exit code 3, never 1, which
    CI reads as a failed gate.
    """
    out = Output()
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None, prog_name="advaudit", standalone_mode=False, obj=out
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("advaudit: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"advaudit: error: {_click_message(exc)}", err=True)
        return EXIT_INPUT
    except AdvauditError as exc:
        click.echo(f"advaudit: error: {' '.join(str(exc).split())}", err=True)  # one line, whatever the message
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - the last line of defence: see the docstring
        return _unexpected(exc, out.verbose)
    return int(rv) if isinstance(rv, int) else EXIT_OK


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` as one line: its first non-empty line, cut at ``limit`` characters."""
    first = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _click_message(exc: click.ClickException) -> str:
    """A click usage error as one line, pointing at the command's --help."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f"; see '{ctx.command_path} --help'"
    return message


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed (numpy's and Python's MemoryError, torch's allocators)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _unexpected(exc: Exception, verbose: int) -> int:
    """Report an exception that is not an :class:`AdvauditError` (see :func:`main`)."""
    if is_out_of_memory(exc):
        detail = _one_line(str(exc)) or type(exc).__name__
        click.echo(f"advaudit: error: out of memory ({detail}); lower --batch-size or --n", err=True)
        return EXIT_INPUT
    name = getattr(exc, "type_name", None) or type(exc).__name__  # a worker's crash names its own type
    try:
        message = _one_line(getattr(exc, "detail", None) or str(exc))
    except Exception:  # noqa: BLE001 - an exception whose message cannot even be formatted
        message = ""
    click.echo(
        f"advaudit: internal error: {name}{': ' + message if message else ''} "
        "(run with --verbose for the traceback; please report it)",
        err=True,
    )
    if verbose:
        remote = getattr(exc, "remote_traceback", None)
        click.echo(remote.rstrip("\n") if remote else "".join(traceback.format_exception(exc)).rstrip("\n"), err=True)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
