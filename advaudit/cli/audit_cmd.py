"""``advaudit audit``: run an audit.yaml on one model, gate it, write one report."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from .. import api
from ..audit import load_config, starter
from ..audit.config import AuditConfig, ConfigError
from ..audit.job import AuditOptions, text_writer
from ..errors import EXIT_GATE, EXIT_INTERRUPTED, EXIT_OK, UsageError
from ..jobs import JobContext
from ..report.writer import write_atomic
from .common import MAX_SEED, Output, ProgressBar, check_outputs, output_options, print_report
from .sharding import recorded_command


@click.command()
@click.argument("model", type=click.Path(), required=False)
@click.option("--config", "config_path", default="audit.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Audit configuration (steps and gates).")
@click.option("--report-dir", default=AuditOptions.report_dir, show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.json, the steps' files and the rendered reports.")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="report.json of an earlier audit: fail when a gated metric regresses beyond the tolerance.")
@click.option("--tolerance", type=click.FloatRange(min=0, max=1),
              help="Regression allowed against --baseline (default: the config's baseline.tolerance, else 0.01).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["html", "md", "junit", "json"]),
              help="Also render the report into REPORT_DIR (report.html, report.md, report.junit.xml); repeatable.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED),
              help="Seed of every step (default: the config's seed, else 0).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes the attack and detect steps shard their data across (default: the config's workers, "
              "else 1).")
@click.option("--device", help="cpu or cuda (default: the config's device, else cpu).")
@click.option("--resume", is_flag=True, help="Reuse the steps an interrupted audit already finished in REPORT_DIR.")
@click.option("--init", "init", is_flag=True, help="Write a commented starter --config file and exit.")
@output_options
@click.pass_obj
def audit(out: Output, **kw: Any) -> int:
    """Run the steps of --config on MODEL, check its gates, write REPORT_DIR/report.json.

    \b
    advaudit audit --init                        # writes a commented audit.yaml
    advaudit audit MODEL --config audit.yaml --report-dir out/ [--baseline previous.json]
        [--format html --format junit] [--resume] [--workers N]

    Exit codes: 0 every gate passed, 1 a gate failed (or regressed against --baseline),
    2 usage or input error (bad config: the offending key and line are named), 130 interrupted
    (finished steps are kept: run again with --resume).
    """
    if kw["init"]:
        return _init(out, Path(kw["config_path"]))
    if not kw["model"]:
        raise UsageError("missing MODEL", "advaudit audit MODEL --config audit.yaml (or --init for a starter config)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("advaudit audit starts its own worker processes",
                         "run it without torchrun and give --workers N")
    check_outputs(folders={"--report-dir": kw["report_dir"]}, inputs=[kw["model"], kw["config_path"]])
    if kw["tolerance"] is not None and not 0.0 <= kw["tolerance"] <= 1.0:  # click's FloatRange lets NaN through
        raise UsageError(f"--tolerance must be in [0, 1], got {kw['tolerance']:g}")
    config = load_config(kw["config_path"])
    report_dir = Path(kw["report_dir"])
    _check_writable(report_dir)
    options = audit_options_from(kw, config)
    out.info(f"auditing {kw['model']} with {kw['config_path']}: {len(config.steps)} steps, {len(config.gates)} gates")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with ProgressBar(out) as progress:
            result = api.audit(options, JobContext(progress=progress, log=out.info))
    except KeyboardInterrupt:
        kept = sorted(p.stem for p in (report_dir / "steps").glob("*.json")) if (report_dir / "steps").is_dir() else []
        click.echo(
            f"advaudit: interrupted; {len(kept)} finished step(s) kept in {report_dir / 'steps'}"
            f"{': ' + ', '.join(kept) if kept else ''}; run the same command with --resume to continue",
            err=True,
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_report(out, result.to_report(), "table")
    return EXIT_OK if result.passed else EXIT_GATE


def audit_options_from(kw: dict[str, Any], config: AuditConfig) -> AuditOptions:
    """The job's options from the command's (None where the user left an option to the config)."""
    # --resume and --workers do not change the results, so the recorded command leaves them out.
    command = " ".join(["advaudit", *(a for a in recorded_command(sys.argv[1:]) if a != "--resume")])
    return AuditOptions(
        model=str(kw["model"]), config=config, report_dir=str(kw["report_dir"]), baseline=kw["baseline"],
        tolerance=kw["tolerance"], formats=tuple(kw["formats"]), seed=kw["seed"], workers=kw["workers"],
        device=kw["device"], resume=kw["resume"], command=command,
    )


def _check_writable(folder: Path) -> None:
    """Fail before any work if ``folder`` cannot be created or written (creates nothing)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --report-dir {folder}: {existing} is not a writable folder",
                         "give a folder you can write to")


def _sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the audit as Ctrl-C does (finished steps are kept)."""
    raise KeyboardInterrupt


def _init(out: Output, path: Path) -> int:
    """``--init``: write a commented starter configuration (never over an existing file)."""
    if path.exists():
        raise ConfigError(f"{path} already exists", "remove it, or give another file with --config")
    data = "sample_models/data/mnist_test_1k.npz"
    write_atomic(path, text_writer(starter(data)))
    out.info(f"wrote {path}: edit the steps and gates, then run 'advaudit audit MODEL --config {path}'")
    return EXIT_OK
