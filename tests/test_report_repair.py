"""Reports of kind ``repair`` (``advaudit repair --report``) through the report pipeline: the schema, the
Markdown, HTML, JUnit and table renderers, ``advaudit report``, and a ``kind: repair`` audit step (the
job mocked: only how the YAML maps to :class:`~advaudit.jobs.repair.RepairOptions` is tested here).

The fixture is built here in the shape of a real report (advaudit repair on a BadNets MNIST model)."""

from __future__ import annotations

import copy
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from advaudit.cli import main
from advaudit.errors import DataError, UsageError
from advaudit.report.fmt import headline
from advaudit.report.html import render_html
from advaudit.report.junit import render_junit
from advaudit.report.markdown import render_markdown
from advaudit.report.normalize import as_audit, repair_metrics
from advaudit.report.render import FORMATS, render
from advaudit.report.schema import report_errors, validate_report
from advaudit.report.table import render_table

from .conftest import SAMPLE_MODELS

DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
SHA = "aeca509fea69b3a9b4d4a86d657f7b03f000de68f70e9b84c228ce01ed39867e"
SHA_REPAIRED = "6f014376b5fec6a7033f73f23aee7ca8a896fe686862aef1976b5299f8a625f8"
META = {"advaudit": "0.1.0", "python": "3.11.7", "torch": "2.4.0", "numpy": "2.1.0", "platform": "Linux",
        "created": "2026-12-06T02:25:40+00:00"}


def _data(path: str) -> dict[str, Any]:
    return {"path": path, "format": "npz", "n": 1000, "shape": [1, 28, 28], "dtype": "float32", "labelled": True,
            "first_index": 0}


def _round(k: int, l1: float) -> dict[str, Any]:
    history = [{"epoch": e, "loss": 0.3 / e, "clean_accuracy": 0.97 + e / 1000, "stamped_accuracy": 0.8 + e / 20}
               for e in (1, 2, 3)]
    return {"round": k, "history": history, "reversed_l1": {"2": l1}}


def repair_report() -> dict[str, Any]:
    """A repair that found label 2 backdoored and unlearned it in three rounds."""
    return {
        "schema": "advaudit.report/1",
        "command": "advaudit repair bn101.pt --data mnist_a.npz --eval-data mnist_b.npz --report rep101.json",
        "seed": 0, "meta": dict(META), "kind": "repair",
        "model": {"path": "bn101.pt", "sha256": SHA, "format": "torchscript",
                  "gradient_source": "native TorchScript autograd", "gradients_note": None, "output_kind": "logits",
                  "num_classes": 10, "spec": {"range": [0.0, 1.0], "mean": [0.0], "std": [1.0], "layout": "nchw",
                                              "class_names": None, "input_shape": [1, 28, 28]}},
        "data": _data("mnist_a.npz"), "eval_data": _data("mnist_b.npz"),
        "scan": {"verdict": "backdoored", "suspected_targets": [2], "rule": "gap", "p_value": 0.00025, "alpha": 0.05,
                 "min_ratio": 2.0, "largest_norm_ratio": 13.3, "median_l1": 60.698, "mad": 25.097,
                 "max_anomaly_index": 2.2412, "anomaly_threshold": 2.0,
                 "labels": {"tested": 10, "optimised": list(range(10)), "references": list(range(10)),
                            "warmup": False}},
        "before": {"clean_accuracy": 0.969, "asr": {"2": 0.9445}, "max_asr": 0.9445},
        "after": {"clean_accuracy": 0.951, "asr": {"2": 0.0044}, "max_asr": 0.0044},
        "repaired": {"path": "bn101-repaired.pt", "sha256": SHA_REPAIRED, "format": "torchscript",
                     "export": {"format": "torchscript", "path": "bn101-repaired.pt", "check_n": 256,
                                "max_rel_diff": 0.0, "tolerance": 0.001,
                                "extra_files": ["advaudit-harden.json", "advaudit.json"]}},
        "config": {"method": "nc-unlearning", "rounds": 3, "epochs": 3, "lr": 0.0005, "ratio": 0.2, "batch_size": 64,
                   "distill": 1.0, "scan_n": 300},
        "rounds": [_round(1, 18.24), _round(2, 60.65), _round(3, 81.02)],
        "metrics": {"clean_accuracy_before": 0.969, "asr_before": 0.9445, "clean_accuracy_after": 0.951,
                    "asr_after": 0.0044},
        "gates": [], "passed": True,
    }


def nothing_to_repair() -> dict[str, Any]:
    """A repair whose scan found no backdoor: no rounds, no model written."""
    r = repair_report()
    r["scan"] = {**r["scan"], "verdict": "clean", "suspected_targets": [], "p_value": 0.6}
    r.update(before={"clean_accuracy": 0.969, "asr": {}, "max_asr": None}, after=None, repaired=None, rounds=[],
             metrics={"clean_accuracy_before": 0.969, "asr_before": None})
    return r


# ------------------------------------------------------------------------------------------- schema


def test_repair_reports_validate() -> None:
    for r in (repair_report(), nothing_to_repair()):
        assert report_errors(r) == []
        validate_report(r)


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r["after"].__setitem__("clean_accuracy", "high"), "after"),
    (lambda r: r["before"].pop("asr"), "before: 'asr' is a required property"),
    (lambda r: r["scan"].__setitem__("verdict", "maybe"), "scan.verdict: 'maybe' is not one of"),
    (lambda r: r["rounds"][0].pop("reversed_l1"), "rounds[0]: 'reversed_l1' is a required property"),
    (lambda r: r.__setitem__("after", None), "repaired"),  # a written model needs its after figures
    (lambda r: r["metrics"].__setitem__("asr_after", "low"), "metrics.asr_after: 'low' is not of type"),
    (lambda r: r.pop("eval_data"), "'eval_data' is a required property"),
])
def test_broken_repair_report_fails_naming_the_path(mutate: Any, where: str) -> None:
    r = repair_report()
    mutate(r)
    with pytest.raises(DataError) as exc:
        validate_report(r)
    assert where in str(exc.value)


# ------------------------------------------------------------------------------------------ normalize


def test_as_audit_makes_one_repair_step() -> None:
    r = repair_report()
    a = as_audit(r)
    assert a["kind"] == "audit" and a["source_kind"] == "repair" and a["gates"] == [] and a["verdict"] == "pass"
    (step,) = a["steps"]
    assert step["name"] == step["kind"] == "repair" and step["status"] == "done" and step["report"] is r
    assert step["metrics"] == r["metrics"] == repair_metrics(r)
    assert a["metrics"]["repair.asr_after"] == 0.0044 and step["time_s"] is None
    assert repair_metrics(nothing_to_repair()) == nothing_to_repair()["metrics"]


def test_an_audit_with_a_repair_step_validates() -> None:
    r = repair_report()
    step = {"name": "repair", "kind": "repair", "status": "done", "error": None, "time_s": 12.5,
            "metrics": repair_metrics(r), "artifacts": {"repaired": "artifacts/repair/repaired.pt"}, "report": r}
    audit = {
        "schema": "advaudit.report/1", "kind": "audit", "command": "advaudit audit bn101.pt --config a.yaml",
        "seed": 0, "meta": META, "model": r["model"],
        "environment": {**{k: META[k] for k in ("advaudit", "python", "torch", "numpy", "platform")},
                        "onnxruntime": None, "device": "cpu", "workers": 1},
        "config": {"steps": [{"kind": "repair"}]}, "config_sha256": hashlib.sha256(b"a").hexdigest(),
        "steps": [step], "metrics": {f"repair.{k}": v for k, v in step["metrics"].items()},
        "gates": [{"gate": "repair.asr_after <= 0.05", "metric": "repair.asr_after", "op": "<=", "threshold": 0.05,
                   "value": 0.0044, "passed": True, "baseline": None, "regressed": None, "reason": "0.0044 <= 0.05"}],
        "baseline": None, "warnings": [], "passed": True, "verdict": "pass",
    }
    assert report_errors(audit) == []
    bad = copy.deepcopy(audit)
    bad["steps"][0]["metrics"] = {"asr_after": 0.1}  # a repair step's metrics start with the before figures
    assert any("clean_accuracy_before" in e for e in report_errors(bad))
    assert headline(step) == ("asr_after", 0.0044)  # what a gate naming only the step reads
    assert "0.4%" in render_markdown(audit) and "repair.asr_after &lt;= 0.05" in render_html(audit, Path("."))


# ---------------------------------------------------------------------------------------- renderers


def test_markdown_shows_finding_before_after_rounds_and_file() -> None:
    md = render_markdown(repair_report())
    assert md.startswith("## ✅ advaudit repair: **PASS**")
    assert "### repair (repair)" in md
    assert "- scan verdict **BACKDOORED**; suspected target class(es): 2" in md
    assert "neural-cleanse: backdoored; p-value 0.00025" in md
    assert "| metric | before | after | change |" in md
    assert "| clean accuracy | 96.9% | 95.1% | -1.8 pts |" in md
    assert "| attack success, trigger of 2 | 94.5% | 0.4% | -94.0 pts |" in md
    assert "3 unlearning round(s) (at most 3, nc-unlearning)" in md
    assert "label 2: 81.02 (median label L1 60.7)" in md
    assert "- repaired model `bn101-repaired.pt` (torchscript)" in md
    assert "nothing to repair" not in md


def test_markdown_nothing_to_repair() -> None:
    md = render_markdown(nothing_to_repair())
    assert "- scan verdict **CLEAN**; suspected target class(es): none" in md
    assert "- nothing to repair: no model written (clean accuracy 96.9% on the evaluation data)" in md
    assert "| metric | before | after | change |" not in md and "repaired model" not in md


def test_html_shows_finding_before_after_rounds_and_file() -> None:
    html = render_html(repair_report(), Path("."))
    assert '<section class="card step" id="step-0"><h2>repair <span class="sub">repair</span>' in html
    assert 'Scan verdict <span class="pill backdoored">BACKDOORED</span>' in html
    assert "suspected target class(es): <b>2</b>" in html
    assert ('<tr><td class="l">clean accuracy</td><td>96.9%</td><td>95.1%</td><td>-1.8 pts</td></tr>' in html)
    assert ('<tr><td class="l">attack success, trigger of 2</td><td>94.5%</td><td>0.4%</td><td>-94.0 pts</td></tr>'
            in html)
    assert "3 unlearning round(s)" in html and f"<code>{SHA_REPAIRED}</code>" in html
    assert "repaired model <code>bn101-repaired.pt</code> (torchscript)" in html
    assert "No renderer for step reports" not in html and "could not be drawn" not in html


def test_html_nothing_to_repair_and_escaping() -> None:
    html = render_html(nothing_to_repair(), Path("."))
    assert 'Scan verdict <span class="pill clean">CLEAN</span>' in html
    assert "Nothing to repair: no model written (clean accuracy 96.9% on the evaluation data)." in html
    assert "<th>change</th>" not in html.split('id="step-0"')[1].split("</section>")[0]
    r = repair_report()
    r["repaired"]["path"] = "<script>alert(1)</script>.pt"
    html = render_html(r, Path("."))
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.pt" in html


@pytest.mark.parametrize("report", [repair_report(), nothing_to_repair()], ids=["repaired", "nothing"])
def test_junit_one_passing_step(report: dict[str, Any]) -> None:
    root = ET.fromstring(render_junit(report).split("\n", 1)[1])
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
    (case,) = suite.findall("testcase")
    assert case.get("classname") == "advaudit.steps" and case.get("name") == "repair"
    assert case.find("failure") is None and case.find("error") is None
    out = case.findtext("system-out") or ""
    assert "clean_accuracy_before = 96.9%" in out
    if report["after"] is not None:
        assert "asr_after = 0.4%" in out
    else:
        assert "asr_before = -" in out and "asr_after" not in out
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["report.kind"] == "repair" and props["verdict"] == "pass"


def test_table() -> None:
    text = render_table(repair_report())
    assert "neural-cleanse: backdoored; suspected target(s): 2" in text
    assert "attack success, trigger of 2" in text and "-94.0 pts" in text
    assert "wrote bn101-repaired.pt (torchscript)" in text
    text = render_table(nothing_to_repair())
    assert "nothing to repair: no model written" in text


@pytest.mark.parametrize("report", [repair_report(), nothing_to_repair()], ids=["repaired", "nothing"])
def test_every_format_renders(report: dict[str, Any]) -> None:
    for fmt in FORMATS:
        assert render(report, fmt).strip(), fmt


def test_report_command_renders_a_repair_report(tmp_path: Path) -> None:
    src = tmp_path / "rep.json"
    src.write_text(json.dumps(repair_report()))
    for fmt, needle in (("md", "| attack success, trigger of 2 |"), ("html", "trigger of 2"),
                        ("junit", 'name="repair"'), ("table", "trigger of 2")):
        out = tmp_path / f"r.{fmt}"
        assert main(["report", str(src), "--format", fmt, "--out", str(out), "-q"]) == 0
        assert needle in out.read_text(), fmt


# --------------------------------------------------------------------------------- kind: repair in audit


def _config(tmp_path: Path, step: str, gates: str = "") -> Any:
    from advaudit.audit import load_config

    (tmp_path / "eval.npz").write_bytes(b"")  # the config checks that it exists; the job is mocked
    return load_config(tmp_path / "audit.yaml", text=f"data: {DATA}\nn: 500\nseed: 3\nsteps:\n{step}{gates}")


def _run_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, step: dict[str, Any],
              repaired: bool = True) -> tuple[Any, Any]:
    """The step's options as the job got them, and the step's result."""
    from advaudit.audit import steps
    from advaudit.jobs.repair import RepairResult

    seen: list[Any] = []

    def fake(options: Any, ctx: Any) -> RepairResult:
        seen.append(options)
        r = repair_report() if repaired else nothing_to_repair()
        keys = ("model", "data", "eval_data", "scan", "before", "after", "repaired", "config", "rounds", "meta")
        return RepairResult(command=options.command, seed=options.seed, **{k: r[k] for k in keys})

    monkeypatch.setattr(steps, "repair", fake)
    model = SimpleNamespace(path=tmp_path / "bn.pt", device="cpu")
    ctx = steps.StepContext(model=model, seed=3, command="advaudit audit bn.pt", artifacts_dir=tmp_path / "out" /
                            "artifacts" / "repair", report_dir=tmp_path / "out")  # type: ignore[arg-type]
    result = steps.RUNNERS["repair"](ctx, step)
    return seen[0], result


def test_audit_repair_step_maps_to_repair_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from advaudit.jobs.base import DataOptions, ModelOptions
    from advaudit.jobs.repair import RepairOptions

    cfg = _config(tmp_path, "  - kind: repair\n    eval_data: eval.npz\n    eval_n: 200\n    scan_n: 150\n"
                            "    target_labels: [2, 7]\n    rounds: 2\n    epochs: 4\n    lr: 0.001\n    ratio: 0.3\n"
                            "    train_batch: 32\n", "gates:\n  - repair.asr_after <= 0.05\n  - repair >= 0\n")
    (step,) = cfg.steps
    assert step["name"] == "repair" and step["eval_data"] == str(tmp_path / "eval.npz")
    assert [g.metric for g in cfg.gates] == ["repair.asr_after", "repair.asr_after"]  # its headline: asr_after
    options, result = _run_step(monkeypatch, tmp_path, step)
    data = DataOptions(path=DATA, n=500, offset=0, seed=3)
    out = tmp_path / "out" / "artifacts" / "repair" / "repaired.pt"
    assert options == RepairOptions(
        model=ModelOptions(path=str(tmp_path / "bn.pt"), device="cpu"), data=data,
        eval=DataOptions(path=str(tmp_path / "eval.npz"), n=200, offset=0, seed=3), out=str(out), scan_n=150,
        target_labels=(2, 7), rounds=2, epochs=4, lr=0.001, ratio=0.3, train_batch=32, seed=3,
        command="advaudit audit bn.pt",
    )
    assert result.report["kind"] == "repair" and result.report["command"] == "advaudit audit bn.pt"
    assert result.metrics == repair_report()["metrics"]
    assert result.artifacts == {"repaired": "artifacts/repair/repaired.pt"}


def test_audit_repair_step_defaults_and_nothing_to_repair(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from advaudit.jobs.repair import RepairOptions

    cfg = _config(tmp_path, "  - kind: repair\n    name: fix\n    eval_data: eval.npz\n    out: fixed/model.pt\n")
    options, result = _run_step(monkeypatch, tmp_path, cfg.steps[0], repaired=False)
    assert options.eval.n is None and options.out == str(tmp_path / "fixed" / "model.pt")  # out: next to the config
    defaults = RepairOptions(model=options.model, data=options.data, eval=options.eval)
    for key in ("scan_n", "target_labels", "rounds", "epochs", "lr", "ratio", "train_batch"):
        assert getattr(options, key) == getattr(defaults, key), key
    assert result.artifacts == {} and result.report["after"] is None  # no model written: no artifact


def test_audit_repair_step_takes_the_labels_of_an_earlier_scan_step(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from advaudit.audit import steps
    from advaudit.audit.config import ConfigError

    scan = "  - kind: scan-backdoor\n    name: bd\n    method: mm-bd\n"
    cfg = _config(tmp_path, scan + "  - kind: repair\n    eval_data: eval.npz\n    scan: bd\n")
    step = cfg.steps[1]
    earlier = {"bd": {"report": {"kind": "scan-backdoor", "suspected_targets": [4, 1]}}}
    real = steps.StepContext
    monkeypatch.setattr(steps, "StepContext", lambda **kw: real(**{**kw, "earlier": earlier}))
    options, _ = _run_step(monkeypatch, tmp_path, step)
    assert options.targets == (4, 1) and options.target_labels is None
    with pytest.raises(ConfigError, match="'attack' is not an earlier scan-backdoor step"):
        _config(tmp_path, "  - kind: attack\n    attacks: [fgsm]\n    eps: 0.1\n"
                          "  - kind: repair\n    eval_data: eval.npz\n    scan: attack\n")
    with pytest.raises(ConfigError, match="drop 'target_labels'"):
        _config(tmp_path, scan + "  - kind: repair\n    eval_data: eval.npz\n    scan: bd\n    target_labels: [1]\n")


def test_audit_repair_step_refuses_to_overwrite_its_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - kind: repair\n    eval_data: eval.npz\n    out: bn.pt\n")
    with pytest.raises(UsageError, match="is also an input"):
        _run_step(monkeypatch, tmp_path, cfg.steps[0])


@pytest.mark.parametrize(("step", "message"), [
    ("  - kind: repair\n    rounds: 2\n", "'eval_data' is required"),
    ("  - kind: repair\n    eval_data: eval.npz\n    ratio: 1.5\n", "1.5 is greater than or equal to"),
    ("  - kind: repair\n    eval_data: eval.npz\n    eps: 0.1\n", "unknown key 'eps'"),
    ("  - kind: repair\n    eval_data: missing.npz\n", "missing.npz does not exist"),
])
def test_bad_repair_steps_are_config_errors(tmp_path: Path, step: str, message: str) -> None:
    from advaudit.audit.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, step)


def test_a_gate_on_a_metric_repair_does_not_measure_is_refused(tmp_path: Path) -> None:
    from advaudit.audit.config import ConfigError

    with pytest.raises(ConfigError, match="a repair step does not measure 'robust_accuracy'"):
        _config(tmp_path, "  - kind: repair\n    eval_data: eval.npz\n", "gates:\n  - repair.robust_accuracy >= 0\n")
