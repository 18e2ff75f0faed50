"""The ``audit`` job: every configured step on one model, its gates and the baseline ratchet, one report.

Each finished step is saved at once (atomically) as ``REPORT_DIR/steps/<name>.json``, beside its
files in ``REPORT_DIR/artifacts/<name>/``.  An interrupted audit keeps those; ``resume=True``
reuses every saved step whose fingerprint (step settings, model sha256, seed, input spec) still
matches, and runs the rest.  Because each step is deterministic given its fingerprint, the resumed
report equals an uninterrupted one (apart from ``meta`` and wall-clock times).

Steps run through :data:`advaudit.audit.steps.RUNNERS` (looked up at run time, so a test can swap
one), each calling the same job function as the matching command.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..gates import GateResult, evaluate_gates
from ..jobs.base import Gated, JobContext, report_head

if TYPE_CHECKING:
    from ..models import Model
    from .config import AuditConfig
    from .steps import StepResult

REPORT_NAME = "report.json"
RENDERED = {"html": "report.html", "md": "report.md", "junit": "report.junit.xml", "json": REPORT_NAME}
"""The file each ``formats`` entry renders the report into, inside the report folder."""
SHARDED_KINDS = ("attack", "detect")
"""Step kinds whose data ``workers`` processes share; the others run in this process."""
DEFAULT_SEED, DEFAULT_WORKERS, DEFAULT_BATCH_SIZE, DEFAULT_DEVICE = 0, 1, 256, "cpu"
"""What an option left as None means when the configuration does not set it either."""


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    """An audit of the model file ``model`` with the parsed ``config``.  ``None`` means "the config's
    value, else the default" for ``seed`` (0), ``workers`` (1), ``device`` (cpu) and ``tolerance``
    (the config's ``baseline.tolerance``, else 0.01).  ``formats``: also render the report into
    ``report_dir`` (html, md, junit); ``command``: the command line the report records."""

    model: str
    config: AuditConfig
    report_dir: str = "audit-report"
    baseline: str | None = None
    tolerance: float | None = None
    formats: tuple[str, ...] = ()
    seed: int | None = None
    workers: int | None = None
    device: str | None = None
    resume: bool = False
    command: str = "advaudit audit"


@dataclass
class AuditResult(Gated):
    """A finished audit: each step's saved entry (in order), the flat ``<step>.<name>`` metrics,
    the gates decided over them and everything the report records around them."""

    kind: ClassVar[str] = "audit"

    steps: list[dict[str, Any]]
    step_metrics: dict[str, Any]
    gates: tuple[GateResult, ...]
    command: str
    seed: int
    meta: dict[str, Any]
    model_section: dict[str, Any]
    environment: dict[str, Any]
    config: dict[str, Any]
    config_sha256: str
    baseline: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """Every step's metrics, named ``<step>.<name>`` (what the audit's gates read)."""
        return dict(self.step_metrics)

    def to_report(self) -> dict[str, Any]:
        """The ``advaudit.report/1`` document of kind ``audit`` (``REPORT_DIR/report.json``)."""
        passed = self.passed
        return {
            **report_head(self.command, self.seed, self.meta),
            "kind": self.kind,
            "model": self.model_section,
            "environment": self.environment,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "steps": [{k: v for k, v in e.items() if k != "fingerprint"} for e in self.steps],
            "metrics": self.step_metrics,
            "gates": [g.to_dict() for g in self.gates],
            "baseline": self.baseline,
            "warnings": self.warnings,
            "passed": passed,
            "verdict": "pass" if passed else "fail",
        }


def open_audit_model(model_path: str | Path, config: AuditConfig, device: str | None = None) -> Model:
    """The audited model with the config's ``model:`` input spec, on ``device`` (else the config's)."""
    from ..models import load_model

    spec = dict(config.raw.get("model") or {})
    for key in ("range", "mean", "std", "input_shape"):
        if key in spec:
            spec[key] = ",".join(str(v) for v in spec[key])
    return load_model(model_path, spec=spec, device=device or config.raw.get("device", DEFAULT_DEVICE))


def fingerprint(step: dict[str, Any], model: Model, seed: int, batch_size: int) -> str:
    """What a step's result depends on; a saved step is reused only when this matches."""
    from .. import __version__

    payload = {"step": step, "model": model.sha256, "spec": model.spec.to_dict(), "seed": seed,
               "batch_size": batch_size, "advaudit": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def environment(model: Model, workers: int) -> dict[str, Any]:
    """The report's versions plus ONNX Runtime's, the device and the worker count."""
    from ..report.writer import versions

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        ort = None
    return {**versions(), "onnxruntime": ort, "device": str(model.device), "workers": workers}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """An earlier audit report (its ``metrics`` feed the ratchet), checked against the schema."""
    from ..errors import DataError
    from ..report.schema import validate_report
    from ..report.writer import SCHEMA
    from ..safeio import parse_json, read_text

    p = Path(path)
    hint = "give the report.json of an earlier 'advaudit audit'"
    text = read_text(p, "baseline", missing=(f"baseline {p} not found", hint))
    try:
        doc = parse_json(text, f"baseline {p}")
    except json.JSONDecodeError as exc:
        raise DataError(f"baseline {p} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("kind") != "audit":
        raise DataError(f"baseline {p} is not an advaudit audit report", hint)
    try:  # its metrics, model and meta are read below: they must have the published shape
        validate_report(doc)
    except DataError as exc:
        raise DataError(f"baseline {p}: {exc.message}", exc.hint) from None
    return doc


def _sharded_step(model_path: str, config: AuditConfig, device: str | None, step: dict[str, Any],
                  ctx_args: dict[str, Any], earlier: dict[str, Any], shard: Any = None) -> StepResult:
    """One worker's share of a step (runs in a worker process under :func:`run_sharded`)."""
    from . import steps

    model = open_audit_model(model_path, config, device)
    ctx = steps.StepContext(model=model, shard=shard, earlier=earlier, **ctx_args)
    return steps.RUNNERS[step["kind"]](ctx, step)


def _reusable(saved: Path, out: Path, fp: str) -> dict[str, Any] | None:
    """The entry saved at ``saved`` if its fingerprint is ``fp`` and its files are all still there."""
    if not saved.is_file():
        return None
    try:
        entry = json.loads(saved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if entry.get("fingerprint") == fp and all((out / p).exists() for p in entry.get("artifacts", {}).values()):
        return dict(entry)
    return None


def _run_step(options: AuditOptions, ctx: JobContext, model: Model, step: dict[str, Any], ctx_args: dict[str, Any],
              done: dict[str, dict[str, Any]], workers: int) -> StepResult:
    """One step, sharded across ``workers`` processes where its kind allows; a failure names the
    step and says that the finished ones are kept."""
    from ..errors import AdvauditError
    from . import steps

    name, kind = step["name"], step["kind"]
    try:
        if workers > 1 and kind in SHARDED_KINDS:
            from ..distributed import run_sharded

            result = run_sharded(_sharded_step, workers, str(options.model), options.config, options.device, step,
                                 {**ctx_args, "progress": None}, done)
            assert result is not None  # this process is rank 0: it gets the merged result
            return result
        return steps.RUNNERS[kind](steps.StepContext(model=model, earlier=done, **ctx_args), step)
    except AdvauditError as exc:
        kept = f"the {len(done)} finished step(s) are kept: fix it and run again with --resume" if done else None
        raise type(exc)(f"step {name}: {exc.message}", "; ".join(filter(None, [exc.hint, kept])) or None) from None


def _steps(options: AuditOptions, ctx: JobContext, model: Model, seed: int, workers: int,
           batch_size: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run (or, with ``resume``, reuse) every step in order; each entry is saved as soon as it is done."""
    from ..report.writer import write_json

    out = Path(options.report_dir)
    total = len(options.config.steps)
    done: dict[str, dict[str, Any]] = {}
    reused: list[str] = []
    for i, step in enumerate(options.config.steps):
        name, kind = step["name"], step["kind"]
        fp = fingerprint(step, model, seed, batch_size)
        saved = out / "steps" / f"{name}.json"
        entry = _reusable(saved, out, fp) if options.resume else None
        if entry is not None:
            ctx.log(f"[{i + 1}/{total}] {name}: reused from {saved}")
            done[name] = entry
            reused.append(name)
            continue
        ctx.log(f"[{i + 1}/{total}] {name} ({kind}) ...")
        start = time.perf_counter()
        ctx_args = dict(seed=seed, command=options.command, artifacts_dir=out / "artifacts" / name, report_dir=out,
                        batch_size=batch_size, progress=ctx.progress)
        result = _run_step(options, ctx, model, step, ctx_args, done, workers)
        entry = {
            "fingerprint": fp, "name": name, "kind": kind, "status": "done", "error": None,
            "time_s": round(time.perf_counter() - start, 3), "metrics": result.metrics,
            "artifacts": result.artifacts, "report": result.report,
        }
        write_json(saved, entry)
        done[name] = entry
        ctx.log(f"[{i + 1}/{total}] {name}: done in {entry['time_s']:.1f} s")
    return done, reused


def _render(result: AuditResult, options: AuditOptions, ctx: JobContext) -> None:
    """Render the report into the report folder in each requested format (json is report.json itself)."""
    from ..report.render import render
    from ..report.writer import write_atomic

    folder = Path(options.report_dir)
    report = result.to_report()
    for fmt in dict.fromkeys(options.formats):
        if fmt != "json":
            path = folder / RENDERED[fmt]
            write_atomic(path, text_writer(render(report, fmt, folder)))
            ctx.log(f"wrote {path}")


def text_writer(text: str) -> Callable[[Path], None]:
    """The ``write`` callback of :func:`advaudit.report.writer.write_atomic` for ``text``."""

    def write(path: Path) -> None:
        path.write_text(text)

    return write


def audit(options: AuditOptions, ctx: JobContext | None = None) -> AuditResult:
    """Run the audit, write ``REPORT_DIR/report.json`` (and the rendered ``formats``); a bad baseline
    fails before any work."""
    from ..report.writer import base_report, model_section, write_json

    ctx = ctx or JobContext()
    config = options.config
    seed = config.raw.get("seed", DEFAULT_SEED) if options.seed is None else options.seed
    workers = options.workers or config.raw.get("workers", DEFAULT_WORKERS)
    batch_size = config.raw.get("batch_size", DEFAULT_BATCH_SIZE)
    tolerance = config.tolerance if options.tolerance is None else options.tolerance
    base_doc = load_baseline(options.baseline) if options.baseline else None
    model = open_audit_model(options.model, config, options.device)
    done, reused = _steps(options, ctx, model, seed, workers, batch_size)

    metrics = {f"{name}.{k}": v for name, e in done.items() for k, v in e["metrics"].items()}
    gates = evaluate_gates(config.gates, metrics, None if base_doc is None else base_doc.get("metrics", {}), tolerance)
    warnings = [f"{name}: {w}" for name, e in done.items() for w in e["report"].get("warnings", [])]
    if base_doc is not None and base_doc.get("model", {}).get("sha256") == model.sha256:
        warnings.append("the baseline audited the same model file (sha256 match)")
    base = base_report(options.command, seed)
    base["meta"]["resumed_steps"] = reused
    result = AuditResult(
        steps=list(done.values()), step_metrics=metrics, gates=tuple(gates), command=base["command"], seed=seed,
        meta=base["meta"], model_section=model_section(model), environment=environment(model, workers),
        config=config.raw, config_sha256=config.sha256, warnings=warnings,
        baseline=None if base_doc is None else {
            "path": str(options.baseline), "tolerance": tolerance, "created": base_doc.get("meta", {}).get("created"),
            "model_sha256": base_doc.get("model", {}).get("sha256"),
        },
    )
    report_path = Path(options.report_dir) / REPORT_NAME
    write_json(report_path, result.to_report())
    ctx.log(f"wrote report {report_path}")
    _render(result, options, ctx)
    return result
