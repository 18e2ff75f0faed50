"""The ``advaudit`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a gate failed, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

import click

from .. import __version__
from ..errors import EXIT_INPUT, EXIT_OK, AdvauditError
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

    Exit codes: 0 success, 1 a gate failed, 2 usage or input error.
    """
    ctx.obj = Output(quiet=quiet, verbose=verbose)


# Commands load on first use, so `advaudit report` (and `--version`) never import torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info_cmd", "info"),
    "attack": ("attack_cmd", "attack"),
    "scan-backdoor": ("scan_backdoor_cmd", "scan_backdoor"),
    "detect": ("detect_cmd", "detect"),
    "defend": ("defend_cmd", "defend"),
    "harden": ("harden_cmd", "harden_cmd"),
    "audit": ("audit_cmd", "audit"),
    "report": ("report_cmd", "report"),
    "plugins": ("plugins_cmd", "plugins"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="advaudit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("advaudit: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_INPUT
    except AdvauditError as exc:
        click.echo(f"advaudit: error: {exc}", err=True)
        return EXIT_INPUT
    return int(rv) if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
