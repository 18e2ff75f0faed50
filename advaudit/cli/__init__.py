"""The ``advaudit`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a gate failed, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import sys
from typing import Sequence

import click

from .. import __version__
from ..errors import EXIT_INPUT, EXIT_OK, AdvauditError
from .common import Output


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="advaudit")
@click.option("-q", "--quiet", is_flag=True, help="Print results only, no progress or messages.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Audit trained image classifiers: attacks, backdoor scans, adversarial-input detection.

    Exit codes: 0 success, 1 a gate failed, 2 usage or input error.
    """
    ctx.obj = Output(quiet=quiet, verbose=verbose)


def _register_commands() -> None:
    from .attack_cmd import attack
    from .audit_cmd import audit
    from .defend_cmd import defend
    from .detect_cmd import detect
    from .harden_cmd import harden_cmd
    from .info_cmd import info
    from .plugins_cmd import plugins
    from .report_cmd import report
    from .scan_backdoor_cmd import scan_backdoor

    for command in (info, attack, scan_backdoor, detect, defend, harden_cmd, audit, plugins, report):
        cli.add_command(command)


_register_commands()


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
