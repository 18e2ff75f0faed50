"""Report schema, renderers (HTML, Markdown, JUnit) and ``advaudit report`` on real command reports.

The reports come from the real commands run through the CLI on the bundled MNIST models with tiny
sizes; the audit report is assembled from them as the contract (kind "audit") describes.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from advaudit.cli import main
from advaudit.errors import DataError
from advaudit.report.html import render_html
from advaudit.report.junit import render_junit
from advaudit.report.markdown import render_markdown
from advaudit.report.normalize import as_audit, attack_metrics, detect_evaluate_metrics, scan_metrics
from advaudit.report.roc import downsample_roc
from advaudit.report.schema import load_schema, report_errors, validate_report

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
BADNETS = str(SAMPLE_MODELS / "mnist_badnets.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
KINDS = ("attack", "defense", "scan-backdoor", "detect-evaluate", "detect", "harden")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command's --report output (tiny sizes), plus the examples grid and trigger images."""
    d = tmp_path_factory.mktemp("reports")
    p = {k: d / f"{k}.json" for k in KINDS}
    rc = main(["attack", MNIST, "--data", DATA, "--n", "16", "--suite", "quick", "--eps", "0.05", "--eps", "0.2",
               "--fail-under", "robust_accuracy@0.2=0.9", "--fail-under", "clean_accuracy=0.5",
               "--report", str(p["attack"]), "--examples", str(d / "ex.png"), "--save-adv", str(d / "adv.npz"), "-q"])
    assert rc == 1  # robust accuracy at eps 0.2 is far below 0.9 on the undefended sample model
    assert main(["attack", MNIST, "--data", DATA, "--n", "8", "--attack", "fgsm", "--eps", "0.1",
                 "--defense", "bit-depth:bits=2", "--report", str(p["defense"]), "-q"]) == 0
    rc = main(["scan-backdoor", BADNETS, "--data", DATA, "--n", "60", "--seed", "0", "--steps", "10", "--method", "all",
               "--triggers-dir", str(d / "trig"), "--report", str(p["scan-backdoor"]), "--fail-on-backdoor", "-q"])
    assert rc in (0, 1)
    assert main(["detect", "evaluate", MNIST, "--clean", DATA, "--adversarial", str(d / "adv.npz"), "--n", "20",
                 "--lcr-mutations", "20", "--max-mutations", "30", "--report", str(p["detect-evaluate"]), "-q"]) == 0
    assert main(["detect", "calibrate", MNIST, "--data", DATA, "--n", "10", "--mutations", "10", "--out",
                 str(d / "cal.json"), "-q"]) == 0
    assert main(["detect", MNIST, "--inputs", str(d / "adv.npz"), "--calibration", str(d / "cal.json"),
                 "--max-mutations", "20",
                 "--report", str(p["detect"]), "-q"]) == 0
    assert main(["harden", MNIST, "--data", DATA, "--n", "32", "--eval-data", DATA, "--eval-offset", "500", "--eval-n",
                 "8",
                 "--eval-suite", "quick", "--eps", "0.3", "--epochs", "1", "--steps", "1", "--out", str(d / "h.onnx"),
                 "--report", str(p["harden"]), "-q"]) == 0
    reports = {k: json.loads(v.read_text()) for k, v in p.items()}
    return d, p, reports


def _gate(text, metric, op, threshold, value, passed, reason, baseline=None, regressed=None):
    return {"gate": text, "metric": metric, "op": op, "threshold": threshold, "value": value, "passed": passed,
            "baseline": baseline, "regressed": regressed, "reason": reason}


def make_audit(runs, folder: Path) -> dict:
    """An audit report per the contract, embedding the real step reports; artifacts under ``folder``."""
    d, _, r = runs
    (folder / "artifacts" / "attack").mkdir(parents=True, exist_ok=True)
    shutil.copy(d / "ex.png", folder / "artifacts" / "attack" / "examples.png")
    shutil.copytree(d / "trig", folder / "artifacts" / "backdoor" / "triggers", dirs_exist_ok=True)
    steps = [
        {"name": "attack", "kind": "attack", "status": "done", "error": None, "time_s": 2.5,
         "metrics": attack_metrics(r["attack"]),
         "artifacts": {"examples": "artifacts/attack/examples.png", "adversarial": "artifacts/attack/adversarial.npz"},
         "report": r["attack"]},
        {"name": "defense", "kind": "defense", "status": "done", "error": None, "time_s": 1.0,
         "metrics": attack_metrics(r["defense"]),
         "artifacts": {}, "report": r["defense"]},
        {"name": "backdoor", "kind": "scan-backdoor", "status": "done", "error": None, "time_s": 3.0,
         "metrics": scan_metrics(r["scan-backdoor"]),
         "artifacts": {"triggers_dir": "artifacts/backdoor/triggers",
                       "triggers_overview": "artifacts/backdoor/triggers/overview.png"},
         "report": r["scan-backdoor"]},
        {"name": "detect", "kind": "detect", "status": "done", "error": None, "time_s": 2.0,
         "metrics": detect_evaluate_metrics(r["detect-evaluate"]), "artifacts": {}, "report": r["detect-evaluate"]},
        {"name": "attack-l2", "kind": "attack", "status": "failed", "error": "eps 9 is outside the value range",
         "time_s": 0.1,
         "metrics": {}, "artifacts": {}, "report": None},
    ]
    metrics = {f"{s['name']}.{k}": v for s in steps for k, v in s["metrics"].items()}
    clean = metrics["attack.clean_accuracy"]
    gates = [
        _gate("clean_accuracy >= 0.5", "attack.clean_accuracy", ">=", 0.5, clean, True, f"{clean:.4f} >= 0.5", 0.9,
              False),
        _gate("robust_accuracy@0.2 >= 0.9", "attack.robust_accuracy@0.2", ">=", 0.9,
              metrics["attack.robust_accuracy@0.2"], False,
              f"{metrics['attack.robust_accuracy@0.2']:.4f} < 0.9"),
        _gate("detect.auroc >= 0.5", "detect.auroc", ">=", 0.5, metrics["detect.auroc"], metrics["detect.auroc"] >= 0.5,
              "auroc"),
    ]
    meta = r["attack"]["meta"]
    return {
        "schema": "advaudit.report/1", "kind": "audit", "command": "advaudit audit mnist_cnn.onnx --config audit.yaml",
        "seed": 0,
        "meta": meta, "model": r["attack"]["model"],
        "environment": {**{k: meta[k] for k in ("advaudit", "python", "torch", "numpy", "platform")},
                        "onnxruntime": "1.0",
                        "device": "cpu", "workers": 1},
        "config": {"steps": [{"kind": s["kind"], "name": s["name"]} for s in steps]},
        "config_sha256": hashlib.sha256(b"audit.yaml").hexdigest(), "steps": steps, "metrics": metrics, "gates": gates,
        "baseline": {"path": "previous.json", "tolerance": 0.01, "sha256_match": True},
        "warnings": ["attack: <script>alert('x')</script> & friends"], "passed": False, "verdict": "fail",
    }


@pytest.fixture(scope="module")
def audit(runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    report = make_audit(runs, folder)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    return folder, report


# ------------------------------------------------------------------------------------------- schema


def test_schema_is_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    kinds = {"envelope", "attack", "scan-backdoor", "detect", "detect-evaluate", "harden", "audit", "step",
             "audit_gate"}
    assert kinds <= set(schema["$defs"])


def test_every_command_report_validates(runs):
    _, _, reports = runs
    for kind, r in reports.items():
        assert report_errors(r) == [], kind
        validate_report(r)
    assert "defense" in reports["defense"] and reports["detect-evaluate"]["kind"] == "detect-evaluate"


def test_detect_evaluate_report_has_roc_points(runs):
    roc = runs[2]["detect-evaluate"]["roc"]
    f, t = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert 2 <= len(f) == len(t) <= 200
    assert (f[0], t[0]) == (0.0, 0.0) and (f[-1], t[-1]) == (1.0, 1.0)
    assert (np.diff(f) >= 0).all() and (np.diff(t) >= 0).all()


def test_downsample_roc_keeps_ends_and_area():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)
    thr = np.unique(np.concatenate([neg, pos]))[::-1]
    fpr = np.concatenate([[0], (neg[None, :] >= thr[:, None]).mean(1)])
    tpr = np.concatenate([[0], (pos[None, :] >= thr[:, None]).mean(1)])
    small = downsample_roc(fpr, tpr)
    f, t = np.array(small["fpr"]), np.array(small["tpr"])
    assert len(f) <= 200 < len(fpr)
    assert (f[0], t[0], f[-1], t[-1]) == (0.0, 0.0, 1.0, 1.0)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert abs(trapezoid(t, f) - trapezoid(tpr, fpr)) < 2e-3
    # a short curve passes through unchanged
    assert downsample_roc([0, 0.5, 1], [0, 0.8, 1]) == {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]}


def test_audit_report_validates(audit):
    _, report = audit
    assert report_errors(report) == []


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r["steps"][3]["metrics"].__setitem__("auroc", "x"),
     "steps[3].metrics.auroc: 'x' is not of type 'number'"),
    (lambda r: r["gates"][1].pop("reason"), "gates[1]: 'reason' is a required property"),
    (lambda r: r["steps"][0]["report"].__setitem__("clean_accuracy", "high"),
     "steps[0].report.clean_accuracy: 'high' is not of type 'number'"),
    (lambda r: r["steps"][2]["metrics"].__setitem__("verdict", "maybe"),
     "steps[2].metrics.verdict: 'maybe' is not one of"),
    (lambda r: r.__setitem__("verdict", "ok"), "verdict: 'ok' is not one of"),
    (lambda r: r["steps"][1].__setitem__("status", "running"), "steps[1].status: 'running' is not one of"),
])
def test_broken_audit_fails_naming_the_path(audit, mutate, where):
    report = copy.deepcopy(audit[1])
    mutate(report)
    with pytest.raises(DataError) as exc:
        validate_report(report)
    assert where in str(exc.value)


def test_not_an_advaudit_report():
    with pytest.raises(DataError, match="not an advaudit report"):
        validate_report({"schema": "something/2", "kind": "audit"})
    with pytest.raises(DataError, match="not an advaudit report"):
        validate_report([1, 2])


def test_real_audit_report_validates_and_renders(tmp_path):
    """``advaudit audit`` (tiny steps) writes a report the schema accepts and the renderers draw."""
    config = tmp_path / "audit.yaml"
    config.write_text(
        f"version: 1\ndata: {DATA}\nn: 20\nseed: 0\nsteps:\n"
        "  - {kind: attack, attacks: [fgsm], eps: [0.1, 0.2]}\n"
        "  - {kind: detect, adversarial: attack, n: 40, lcr_mutations: 20, max_mutations: 30}\n"
        "  - {kind: defense, defenses: ['bit-depth:bits=2'], attacks: [fgsm], eps: [0.1], n: 8}\n"
        "gates:\n  - clean_accuracy >= 0.5\n  - robust_accuracy@0.2 >= 0.99\n  - detect.auroc >= 0.5\n"
    )
    out = tmp_path / "out"
    assert main(["audit", MNIST, "--config", str(config), "--report-dir", str(out), "-q"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report_errors(report) == []
    assert [s["kind"] for s in report["steps"]] == ["attack", "detect", "defense"]
    html = render_html(report, out)
    assert html.count("data:image/png;base64,") >= 1 and html.count("<svg") == 3
    cases = _cases(render_junit(report))
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == [g["gate"] for g in report["gates"] if not g["passed"]] == ["robust_accuracy@0.2 >= 0.99"]


# ------------------------------------------------------------------------------------------- renderers


def _single_reports(runs):
    d, p, reports = runs
    return [(k, reports[k], d) for k in KINDS]


def test_html_renders_every_kind_self_contained(runs, audit):
    cases = _single_reports(runs) + [("audit", audit[1], audit[0])]
    for kind, report, base in cases:
        html = render_html(report, base)
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>"), kind
        assert not re.search(r"https?://", html), kind
        assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html)), kind
        assert "<script" not in html.lower(), kind
        assert report["model"]["sha256"] in html, kind


def test_html_audit_content(audit, runs):
    folder, report = audit
    html = render_html(report, folder)
    # both images embedded: the adversarial examples grid and the reconstructed triggers overview
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 2
    assert (folder / "artifacts/attack/examples.png").read_bytes() in {base64.b64decode(u) for u in uris}
    assert 'class="banner fail"' in html and "FAIL" in html
    passed = sum(g["passed"] for g in report["gates"])
    assert f"{passed} of 3 passed" in html
    for g in report["gates"]:
        assert g["gate"].replace(">", "&gt;") in html
    assert html.count("<svg") == 3  # attack curve, defence curve, ROC
    assert "eps 9 is outside the value range" in html  # the failed step
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; friends" in html
    flagged = [c for c in runs[2]["scan-backdoor"]["classes"] if c["flagged"]]
    assert html.count('<tr class="flagged">') == len(flagged)


def test_html_missing_artifact_is_a_note(audit, tmp_path):
    report = copy.deepcopy(audit[1])
    report["steps"][0]["artifacts"]["examples"] = "artifacts/attack/gone.png"
    html = render_html(report, audit[0])
    assert "not found" in html and "artifacts/attack/gone.png" in html
    # a non-image file is not embedded
    (tmp_path / "x.png").write_text("not a png")
    report["steps"][0]["artifacts"]["examples"] = "x.png"
    assert "is not a PNG" in render_html(report, tmp_path)


def test_html_escapes_untrusted_strings(runs):
    report = copy.deepcopy(runs[2]["scan-backdoor"])
    report["model"]["path"] = '/m/<img src=x onerror=alert(1)>".onnx'
    report["model"]["spec"]["class_names"] = ["<b>zero</b>"] + report["model"]["spec"]["class_names"][1:]
    html = render_html(report, runs[0])
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;&quot;.onnx" in html
    assert "<b>zero</b>" not in html and "&lt;b&gt;zero&lt;/b&gt;" in html
    # render_html does not validate: even a value of the wrong type ends up escaped
    attack = copy.deepcopy(runs[2]["attack"])
    attack["results"][0].update({"attack": "<i>pgd</i>", "mean_queries": "<u>1</u>", "robust_accuracy": "<s>x</s>"})
    attack["warnings"] = ["<em>w</em>"]
    html = render_html(attack, runs[0])
    assert not re.search(r"<(i|u|s|em)>", html)


def test_markdown_every_kind(runs, audit):
    for kind, report, _ in _single_reports(runs) + [("audit", audit[1], audit[0])]:
        md = render_markdown(report)
        assert len(md) < 65_536 and "advaudit" in md.splitlines()[0], kind
        assert "data:image" not in md and "<script" not in md, kind
    md = render_markdown(audit[1])
    assert md.startswith("## ❌") and "**FAIL**" in md
    assert "| robust_accuracy@0.2 >= 0.9 |" in md and "Step failed: eps 9 is outside the value range" in md


def test_markdown_truncates_long_reports(audit):
    report = copy.deepcopy(audit[1])
    row = report["steps"][0]["report"]["results"][0]
    report["steps"][0]["report"]["results"] = [dict(row, attack=f"attack{i}") for i in range(3000)]
    report["warnings"] = [f"warning {i} " + "x" * 250 for i in range(2000)]
    md = render_markdown(report)
    assert len(md) < 65_536
    assert "more rows not shown" in md and "more warnings not shown" in md


def _cases(xml: str) -> list[ET.Element]:
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "advaudit"
    return suites[0].findall("testcase")


def test_junit_audit(audit):
    report = audit[1]
    xml = render_junit(report)
    cases = _cases(xml)
    gates = [c for c in cases if c.get("classname") == "advaudit.gates"]
    steps = [c for c in cases if c.get("classname") == "advaudit.steps"]
    assert len(gates) == len(report["gates"]) and len(steps) == len(report["steps"])
    for case, g in zip(gates, report["gates"]):
        assert case.get("name") == g["gate"]
        fail = case.find("failure")
        assert (fail is None) == g["passed"]
        if fail is not None:
            assert fail.get("message") == g["reason"]
    errs = {c.get("name"): c.find("error") for c in steps}
    assert errs["attack-l2"] is not None and errs["attack-l2"].get("message") == "eps 9 is outside the value range"
    assert all(e is None for n, e in errs.items() if n != "attack-l2")
    suite = ET.fromstring(xml).find("testsuite")
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "1" and suite.get("errors") == "1"
    assert float(suite.get("time")) == pytest.approx(sum(s["time_s"] for s in report["steps"]), abs=1e-3)
    assert float(steps[0].get("time")) == pytest.approx(2.5)


def test_junit_single_commands(runs):
    _, _, r = runs
    for kind in KINDS:
        _cases(render_junit(r[kind]))
    gates = [c for c in _cases(render_junit(r["attack"])) if c.get("classname") == "advaudit.gates"]
    assert [c.get("name") for c in gates] == ["robust_accuracy@0.2 >= 0.9", "clean_accuracy >= 0.5"]
    assert gates[0].find("failure") is not None and gates[1].find("failure") is None
    scan = [c for c in _cases(render_junit(r["scan-backdoor"])) if c.get("classname") == "advaudit.gates"]
    assert len(scan) == 1 and (scan[0].find("failure") is None) == (r["scan-backdoor"]["verdict"] == "clean")


def test_junit_strips_characters_xml_forbids(audit):
    report = copy.deepcopy(audit[1])
    report["steps"][4]["error"] = "bad \x00\x07 byte"
    ET.fromstring(render_junit(report))


def test_renderers_do_not_import_torch():
    code = ("import sys, advaudit.report.html, advaudit.report.markdown, advaudit.report.junit, "
            "advaudit.report.schema; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_as_audit_single_reports(runs):
    _, _, r = runs
    a = as_audit(r["attack"])
    assert a["kind"] == "audit" and a["source_kind"] == "attack" and len(a["steps"]) == 1
    assert a["verdict"] == "fail" and a["metrics"]["attack.clean_accuracy"] == r["attack"]["clean_accuracy"]
    assert as_audit(r["defense"])["steps"][0]["kind"] == "defense"
    assert as_audit(r["detect-evaluate"])["metrics"]["detect.auroc"] == r["detect-evaluate"]["auroc_all"]
    scan = as_audit(r["scan-backdoor"])
    assert scan["steps"][0]["artifacts"]["triggers_overview"].endswith("overview.png")
    assert scan["passed"] == (r["scan-backdoor"]["verdict"] == "clean")


# ------------------------------------------------------------------------------------------- CLI


def test_report_cli_formats(audit, tmp_path, capsys):
    folder, report = audit
    src = str(folder / "report.json")
    for fmt in ("html", "md", "junit", "json"):
        out = tmp_path / f"r.{fmt}"
        assert main(["report", src, "--format", fmt, "--out", str(out), "-q"]) == 0
        assert out.stat().st_size > 0
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    assert json.loads((tmp_path / "r.json").read_text()) == report
    ET.fromstring((tmp_path / "r.junit").read_text())
    capsys.readouterr()
    assert main(["report", src, "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("## ❌ advaudit audit")


def test_report_cli_bad_input(tmp_path, audit, capsys):
    out = tmp_path / "keep.html"
    out.write_text("previous")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    broken = copy.deepcopy(audit[1])
    broken["steps"][3]["metrics"]["auroc"] = "x"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    cases = {
        str(tmp_path / "missing.json"): "does not exist",
        str(tmp_path / "bad.json"): "is not JSON (line 1",
        str(tmp_path / "other.json"): "not an advaudit report",
        str(tmp_path / "broken.json"): "steps[3].metrics.auroc: 'x' is not of type 'number'",
    }
    for path, message in cases.items():
        capsys.readouterr()
        assert main(["report", path, "--format", "html", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert out.read_text() == "previous"  # nothing already written lost


# ------------------------------------------------------------------------------------------- browser


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt install chromium)")


def test_html_in_headless_chromium(audit, tmp_path):
    from PIL import Image

    browser = _browser()
    folder, report = audit
    page = tmp_path / "report.html"
    page.write_text(render_html(report, folder), encoding="utf-8")
    shot = tmp_path / "shot.png"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert img.shape == (1600, 1200, 3)
    assert img.std() > 20  # not blank
    top = img[8:60, 40:1160].reshape(-1, 3).mean(axis=0)  # the verdict banner: red for a failing audit
    assert top[0] > 150 and top[1] < 80 and top[2] < 80, top
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True).stdout
    gate_rows = re.findall(r"<tr(?: class=\"bad\")?><td class=\"l\"><code>([^<]*)</code>", dom)
    assert gate_rows == [g["gate"].replace(">", "&gt;") for g in report["gates"]]
    assert dom.count('<tr class="bad">') == sum(not g["passed"] for g in report["gates"])
