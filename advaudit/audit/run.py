"""Run an audit: every configured step, its gates and the baseline ratchet, into one report.

Each finished step is saved at once (atomically) as ``REPORT_DIR/steps/<name>.json``, beside its
files in ``REPORT_DIR/artifacts/<name>/``.  An interrupted audit keeps those; ``resume=True``
reuses every saved step whose fingerprint (step settings, model sha256, seed, input spec) still
matches, and runs the rest.  Because each step is deterministic given its fingerprint, the resumed
report equals an uninterrupted one (apart from ``meta`` and wall-clock times).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import AdvauditError, DataError
from ..models import Model, load_model
from ..report.writer import SCHEMA, base_report, model_section, versions, write_json
from ..report.schema import validate_report
from ..safeio import parse_json, read_text
from .config import AuditConfig
from .gates import evaluate_gates
from .steps import RUNNERS, StepContext, StepResult

REPORT_NAME = "report.json"
Log = Callable[[str], None]


def open_audit_model(model_path: str | Path, config: AuditConfig, device: str | None = None) -> Model:
    spec = {k: v for k, v in (config.raw.get("model") or {}).items()}
    for key in ("range", "mean", "std", "input_shape"):
        if key in spec:
            spec[key] = ",".join(str(v) for v in spec[key])
    return load_model(model_path, spec=spec, device=device or config.raw.get("device", "cpu"))


def fingerprint(step: dict[str, Any], model: Model, seed: int, batch_size: int) -> str:
    """What a step's result depends on; a saved step is reused only when this matches."""
    payload = {"step": step, "model": model.sha256, "spec": model.spec.to_dict(), "seed": seed,
               "batch_size": batch_size, "advaudit": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def environment(model: Model, workers: int) -> dict[str, Any]:
    """The report's versions plus ONNX Runtime's, the device and the worker count."""
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        ort = None
    return {**versions(), "onnxruntime": ort, "device": str(model.device), "workers": workers}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """The ``metrics`` of an earlier audit report (for the ratchet)."""
    p = Path(path)
    text = read_text(p, "baseline", missing=(f"baseline {p} not found",
                                             "give the report.json of an earlier 'advaudit audit'"))
    try:
        doc = parse_json(text, f"baseline {p}")
    except json.JSONDecodeError as exc:
        raise DataError(f"baseline {p} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("kind") != "audit":
        raise DataError(f"baseline {p} is not an advaudit audit report", "give the report.json of an earlier 'advaudit audit'")
    try:  # its metrics, model and meta are read below: they must have the published shape
        validate_report(doc)
    except DataError as exc:
        raise DataError(f"baseline {p}: {exc.message}", exc.hint) from None
    return doc


def _sharded_step(model_path: str, config: AuditConfig, device: str | None, step: dict[str, Any],
                  ctx_args: dict[str, Any], earlier: dict[str, Any], shard: Any = None) -> StepResult:
    """One worker's share of a step (runs in a worker process under :func:`run_sharded`)."""
    model = open_audit_model(model_path, config, device)
    ctx = StepContext(model=model, shard=shard, earlier=earlier, **ctx_args)
    return RUNNERS[step["kind"]](ctx, step)


def run_audit(
    model_path: str | Path,
    config: AuditConfig,
    report_dir: str | Path,
    *,
    seed: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    baseline: str | Path | None = None,
    tolerance: float | None = None,
    resume: bool = False,
    command: str = "advaudit audit",
    progress: Callable[[str, int, int], None] | None = None,
    log: Log = lambda message: None,
) -> dict[str, Any]:
    """Run the audit and write ``REPORT_DIR/report.json``; returns the report."""
    out = Path(report_dir)
    seed = config.raw.get("seed", 0) if seed is None else seed
    workers = workers or config.raw.get("workers", 1)
    batch_size = config.raw.get("batch_size", 256)
    tolerance = config.tolerance if tolerance is None else tolerance
    base_doc = load_baseline(baseline) if baseline else None  # bad baseline fails before any work
    model = open_audit_model(model_path, config, device)
    steps_dir = out / "steps"
    done: dict[str, dict[str, Any]] = {}
    reused: list[str] = []
    for i, step in enumerate(config.steps):
        name, kind = step["name"], step["kind"]
        fp = fingerprint(step, model, seed, batch_size)
        saved = steps_dir / f"{name}.json"
        if resume and saved.is_file():
            try:
                entry = json.loads(saved.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = {}
            if entry.get("fingerprint") == fp and all((out / p).exists() for p in entry.get("artifacts", {}).values()):
                log(f"[{i + 1}/{len(config.steps)}] {name}: reused from {saved}")
                done[name] = entry
                reused.append(name)
                continue
        log(f"[{i + 1}/{len(config.steps)}] {name} ({kind}) ...")
        start = time.perf_counter()
        ctx_args = dict(seed=seed, command=command, artifacts_dir=out / "artifacts" / name, report_dir=out,
                        batch_size=batch_size, progress=progress)
        try:
            if workers > 1 and kind in ("attack", "detect"):
                from ..distributed import run_sharded

                ctx_args["progress"] = None
                result = run_sharded(_sharded_step, workers, str(model_path), config, device, step, ctx_args, done)
            else:
                result = RUNNERS[kind](StepContext(model=model, earlier=done, **ctx_args), step)
        except AdvauditError as exc:
            kept = f"the {len(done)} finished step(s) are kept: fix it and run again with --resume" if done else None
            raise type(exc)(f"step {name}: {exc.message}", "; ".join(filter(None, [exc.hint, kept])) or None) from None
        entry = {
            "fingerprint": fp, "name": name, "kind": kind, "status": "done", "error": None,
            "time_s": round(time.perf_counter() - start, 3), "metrics": result.metrics,
            "artifacts": result.artifacts, "report": result.report,
        }
        write_json(saved, entry)
        done[name] = entry
        log(f"[{i + 1}/{len(config.steps)}] {name}: done in {entry['time_s']:.1f} s")

    metrics = {f"{name}.{k}": v for name, e in done.items() for k, v in e["metrics"].items()}
    gates = evaluate_gates(config.gates, metrics, None if base_doc is None else base_doc.get("metrics", {}), tolerance)
    warnings = [f"{name}: {w}" for name, e in done.items() for w in e["report"].get("warnings", [])]
    if base_doc is not None and base_doc.get("model", {}).get("sha256") == model.sha256:
        warnings.append("the baseline audited the same model file (sha256 match)")
    report = base_report(command, seed)
    report["meta"]["resumed_steps"] = reused
    passed = all(g["passed"] for g in gates)
    report.update({
        "kind": "audit",
        "model": model_section(model),
        "environment": environment(model, workers),
        "config": config.raw,
        "config_sha256": config.sha256,
        "steps": [{k: v for k, v in e.items() if k != "fingerprint"} for e in done.values()],
        "metrics": metrics,
        "gates": gates,
        "baseline": None if base_doc is None else {
            "path": str(baseline), "tolerance": tolerance, "created": base_doc.get("meta", {}).get("created"),
            "model_sha256": base_doc.get("model", {}).get("sha256"),
        },
        "warnings": warnings,
        "passed": passed,
        "verdict": "pass" if passed else "fail",
    })
    write_json(out / REPORT_NAME, report)
    return report


VOLATILE = frozenset({"meta", "time_s", "ms_per_input", "ms_per_input_adversarial", "ms_per_input_normal", "created"})


def comparable(report: Any) -> Any:
    """``report`` without what legitimately differs between two runs with the same seed: ``meta``
    (creation time, resumed steps) and wall-clock figures (``time_s``, ``ms_per_input``)."""
    if isinstance(report, dict):
        return {k: comparable(v) for k, v in report.items() if k.rsplit(".", 1)[-1] not in VOLATILE}
    if isinstance(report, list):
        return [comparable(v) for v in report]
    return report
