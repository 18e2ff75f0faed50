"""``advaudit audit``: config validation, gates and ratchet, end-to-end run, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advaudit.audit import comparable, evaluate_gates, load_config, starter
from advaudit.audit.config import ConfigError, HEADLINE
from advaudit.audit.gates import parse_gate
from advaudit.audit.steps import RUNNERS
from advaudit.cli import main

from .conftest import SAMPLE_MODELS

MODEL = str(SAMPLE_MODELS / "mnist_cnn.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")

TINY = f"""\
data: {DATA}
n: 40
seed: 1
steps:
  - kind: attack
    suite: quick
    eps: [0.1, 0.3]
  - kind: scan-backdoor
    method: mm-bd
    steps: 30
  - kind: detect
    lcr_mutations: 40
    max_mutations: 60
gates:
  - clean_accuracy >= 0.98
  - robust_accuracy@0.10 >= 0.5
  - backdoor == clean
  - detect.auroc >= 0.5
"""


def _write(tmp_path: Path, text: str, name: str = "audit.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- configuration ---------------------------------------------------------------------------

def test_config_resolves_names_paths_and_gates(tmp_path):
    cfg = load_config(_write(tmp_path, TINY))
    assert [s["name"] for s in cfg.steps] == ["attack", "backdoor", "detect"]
    assert cfg.steps[2]["adversarial"] == "attack"  # default: the first attack step
    assert [g.metric for g in cfg.gates] == [
        "attack.clean_accuracy", "attack.robust_accuracy@0.1", "backdoor.verdict", "detect.auroc",
    ]
    assert cfg.gates[2].threshold == "clean"


def test_relative_data_paths_follow_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    os.symlink(DATA, tmp_path / "sub" / "d.npz")
    cfg = load_config(_write(tmp_path / "sub", "data: d.npz\nsteps:\n  - kind: attack\n"))
    assert cfg.steps[0]["data"] == str((tmp_path / "sub" / "d.npz").resolve())


def test_scan_step_reference_paths_follow_the_config_file(tmp_path):
    """``reference`` (one path or a list) is resolved like ``data`` and selects the reference rule."""
    from advaudit.audit.steps import _paths

    (tmp_path / "sub").mkdir()
    os.symlink(DATA, tmp_path / "sub" / "d.npz")
    text = "data: d.npz\nsteps:\n  - kind: scan-backdoor\n    reference: [refs, /abs/r.json]\n"
    cfg = load_config(_write(tmp_path / "sub", text))
    assert cfg.steps[0]["reference"] == [str((tmp_path / "sub" / "refs").resolve()), "/abs/r.json"]
    one = load_config(_write(tmp_path / "sub", text.replace("[refs, /abs/r.json]", "refs")))
    assert _paths(one.steps[0]["reference"]) == (str((tmp_path / "sub" / "refs").resolve()),)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps:\n  - kind: attack\n    epss: [0.1]\n", ":3: steps[0].epss: unknown key 'epss'"),
        ("steps:\n  - kind: attak\n", ":2: steps[0].kind:"),
        ("steps:\n  - kind: attack\n    suite: quick\n    attacks: [fgsm]\n", "give 'suite' or 'attacks', not both"),
        ("steps:\n  - kind: attack\n    eps: [-1]\n", "steps[0].eps"),
        ("steps: []\n", "steps: [] should be non-empty"),
        ("gates: [x]\nsteps:\n  - kind: attack\n", "gates[0]: 'x' is not a gate"),
        ("steps:\n  - kind: attack\n    norm: l3\n", ":3: steps[0].norm"),
        ("steps:\n  - kind: attack\n   bad indent\n", "not valid YAML"),
        ("seed: -1\nsteps:\n  - kind: attack\n", ":1: seed"),
    ],
)
def test_config_errors_name_the_key_and_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text + f"data: {DATA}\n"))
    assert expected in str(exc.value)


@pytest.mark.parametrize(
    "gate, expected",
    [
        ("auroc >= 0.9", "no step measures 'auroc'"),
        ("attack.auroc >= 0.9", "does not measure 'auroc'"),
        ("robust_accuracy@0.2 >= 0.5", "does not attack at eps 0.2"),
        ("clean_accuracy >= high", "not a number"),
        ("backdoor >= 1", "no step measures 'backdoor'"),
    ],
)
def test_gates_are_checked_against_the_steps(tmp_path, gate, expected):
    text = f"data: {DATA}\nsteps:\n  - kind: attack\n    eps: [0.1]\ngates:\n  - {gate}\n"
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    assert expected in str(exc.value) and ":6: gates[0]" in str(exc.value)


def test_detect_step_needs_an_earlier_attack(tmp_path):
    with pytest.raises(ConfigError, match="needs adversarial examples"):
        load_config(_write(tmp_path, f"data: {DATA}\nsteps:\n  - kind: detect\n"))
    with pytest.raises(ConfigError, match="keeps no adversarial examples"):
        load_config(_write(tmp_path,
                           f"data: {DATA}\nsteps:\n  - kind: attack\n    save_adversarial: false\n  - kind: detect\n"))


def test_starter_file_is_valid(tmp_path):
    cfg = load_config(_write(tmp_path, starter(DATA)))
    assert {s["kind"] for s in cfg.steps} == {"attack", "scan-backdoor", "detect"}
    assert len(cfg.gates) == 4


def test_init_writes_the_starter_and_never_overwrites(tmp_path, capsys):
    path = tmp_path / "audit.yaml"
    assert main(["audit", "--init", "--config", str(path)]) == 0
    assert "kind: attack" in path.read_text()
    assert main(["audit", "--init", "--config", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err


# --- gates and the ratchet -------------------------------------------------------------------

def _gates(*texts):
    steps = [{"name": "attack", "kind": "attack", "eps": [0.1]}, {"name": "backdoor", "kind": "scan-backdoor"}]
    return [parse_gate(t, steps, HEADLINE) for t in texts]


def test_gates_pass_fail_and_missing_metrics():
    gates = _gates("robust_accuracy@0.1 >= 0.6", "backdoor == clean", "clean_accuracy > 0.99")
    res = evaluate_gates(gates, {"attack.robust_accuracy@0.1": 0.6, "backdoor.verdict": "backdoored"})
    assert [r["passed"] for r in res] == [True, False, False]
    assert res[2]["reason"] == "attack.clean_accuracy was not measured"


def test_baseline_ratchet_fails_a_regression_above_the_gate():
    gates = _gates("robust_accuracy@0.1 >= 0.5")
    base = {"attack.robust_accuracy@0.1": 0.70}
    assert evaluate_gates(gates, {"attack.robust_accuracy@0.1": 0.695}, base, 0.01)[0]["passed"]
    res = evaluate_gates(gates, {"attack.robust_accuracy@0.1": 0.65}, base, 0.01)[0]
    assert not res["passed"] and res["regressed"] and "regressed from 0.7000 to 0.6500" in res["reason"]
    assert evaluate_gates(gates, {"attack.robust_accuracy@0.1": 0.80}, base, 0.01)[0]["regressed"] is False
    # a lower-is-better gate regresses upwards
    g = [parse_gate("detect.sprt_false_positive_rate <= 0.2", [{"name": "detect", "kind": "detect"}], HEADLINE)]
    assert not evaluate_gates(g, {"detect.sprt_false_positive_rate": 0.15}, {"detect.sprt_false_positive_rate": 0.05},
                              0.01)[0]["passed"]


# --- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted audit of the sample model (module-scoped: the slow part)."""
    d = tmp_path_factory.mktemp("audit")
    cfg = _write(d, TINY)
    rc = main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(d / "out"), "-q"])
    return rc, d, cfg, json.loads((d / "out" / "report.json").read_text())


def test_audit_runs_every_step_and_gates(tiny_run):
    rc, d, _, report = tiny_run
    assert rc == 0 and report["kind"] == "audit" and report["verdict"] == "pass"
    assert [s["name"] for s in report["steps"]] == ["attack", "backdoor", "detect"]
    assert [s["report"]["kind"] for s in report["steps"]] == ["attack", "scan-backdoor", "detect-evaluate"]
    attack = report["steps"][0]
    assert report["metrics"]["attack.robust_accuracy@0.1"] == attack["report"]["robust_accuracy_by_eps"]["0.1"]
    assert report["metrics"]["backdoor.verdict"] == "clean"
    assert 0.5 <= report["metrics"]["detect.auroc"] <= 1.0
    for step in report["steps"]:
        for rel in step["artifacts"].values():
            assert (d / "out" / rel).exists(), rel
    assert len(report["steps"][2]["report"]["roc"]["fpr"]) <= 200
    assert report["environment"]["onnxruntime"] and report["model"]["sha256"]


def test_failed_gate_exits_1_and_baseline_regression_too(tiny_run, tmp_path):
    _, d, cfg, report = tiny_run
    strict = _write(tmp_path, TINY.replace("robust_accuracy@0.10 >= 0.5", "robust_accuracy@0.3 >= 0.9"))
    out = tmp_path / "strict"
    # --resume reuses the finished steps (same fingerprint) even from another config file
    (out).mkdir()
    import shutil

    shutil.copytree(d / "out" / "steps", out / "steps")
    shutil.copytree(d / "out" / "artifacts", out / "artifacts")
    assert main(["audit", MODEL, "--config", str(strict), "--report-dir", str(out), "--resume", "-q"]) == 1
    failed = json.loads((out / "report.json").read_text())
    assert failed["verdict"] == "fail" and failed["meta"]["resumed_steps"] == ["attack", "backdoor", "detect"]
    assert [g["passed"] for g in failed["gates"]] == [True, False, True, True]

    # The same audit against a baseline that measured more: the ratchet fails it.
    base = json.loads((d / "out" / "report.json").read_text())
    base["metrics"]["attack.robust_accuracy@0.1"] = report["metrics"]["attack.robust_accuracy@0.1"] + 0.05
    (tmp_path / "base.json").write_text(json.dumps(base))
    rc = main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "--resume", "-q",
               "--baseline", str(tmp_path / "base.json")])
    ratchet = json.loads((out / "report.json").read_text())
    assert rc == 1 and ratchet["gates"][1]["regressed"] is True and ratchet["gates"][1]["value"] >= 0.5
    assert main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "--resume", "-q",
                 "--baseline", str(tmp_path / "base.json"), "--tolerance", "0.06"]) == 0


def test_bad_baseline_is_an_input_error(tiny_run, tmp_path, capsys):
    _, d, cfg, _ = tiny_run
    (tmp_path / "b.json").write_text('{"schema": "advaudit.report/1", "kind": "attack"}')
    assert main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(tmp_path / "o"), "--baseline",
                 str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "is not an advaudit audit report" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_interrupted_audit_resumes_to_the_same_report(tiny_run, tmp_path, monkeypatch, capsys):
    _, _, cfg, _ = tiny_run
    out = tmp_path / "out"
    args = ["audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "-q"]
    assert main(args) == 0
    uninterrupted = json.loads((out / "report.json").read_text())
    import shutil

    shutil.rmtree(out)

    def interrupt(ctx, step):
        raise KeyboardInterrupt

    monkeypatch.setitem(RUNNERS, "detect", interrupt)
    assert main(args) == 130
    assert "run the same command with --resume" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["attack.json", "backdoor.json"]
    assert not (out / "report.json").exists()
    monkeypatch.undo()

    def must_not_rerun(ctx, step):
        raise AssertionError("a finished step ran again")

    monkeypatch.setitem(RUNNERS, "attack", must_not_rerun)
    monkeypatch.setitem(RUNNERS, "scan-backdoor", must_not_rerun)
    assert main([*args, "--resume"]) == 0
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["meta"]["resumed_steps"] == ["attack", "backdoor"]
    assert comparable(resumed) == comparable(uninterrupted)


def test_changed_step_is_not_reused(tiny_run, tmp_path):
    _, d, _, _ = tiny_run
    import shutil

    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    changed = _write(tmp_path, TINY.replace("steps: 30", "steps: 31"))
    calls = []
    original = RUNNERS["scan-backdoor"]

    def spy(ctx, step):
        calls.append(step["name"])
        return original(ctx, step)

    RUNNERS["scan-backdoor"] = spy
    try:
        assert main(["audit", MODEL, "--config", str(changed), "--report-dir", str(out), "--resume", "-q"]) == 0
    finally:
        RUNNERS["scan-backdoor"] = original
    assert calls == ["backdoor"]
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["resumed_steps"] == ["attack", "detect"]


def test_sigterm_keeps_finished_steps(tmp_path):
    text = TINY.replace("method: mm-bd\n    steps: 30", "method: neural-cleanse\n    n: 300")  # a long second step
    cfg = _write(tmp_path, text)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "advaudit", "audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = out / "steps" / "attack.json"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted; 1 finished step(s) kept" in err and "Traceback" not in err
    assert json.loads(first.read_text())["status"] == "done"
    assert not (out / "report.json").exists()


def test_step_error_names_the_step_and_keeps_finished_ones(tmp_path, capsys):
    text = TINY.replace("method: mm-bd\n    steps: 30", "method: neural-cleanse")  # 40 images: too few for NC
    cfg = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("advaudit: error: step backdoor: neural-cleanse needs at least 5 clean images")
    assert "run again with --resume" in err and len(err.splitlines()) == 1
    assert (out / "steps" / "attack.json").is_file()


def test_config_schema_is_valid_json_schema():
    import jsonschema

    from advaudit.audit.config import load_schema

    jsonschema.Draft202012Validator.check_schema(load_schema("audit-config"))


def test_sharded_audit_equals_the_single_process_one(tiny_run, tmp_path):
    """--workers 2: the attack and detect steps shard their data; the report is the same."""
    _, _, cfg, single = tiny_run
    out = tmp_path / "out"
    assert main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(out), "--workers", "2", "-q"]) == 0
    sharded = json.loads((out / "report.json").read_text())
    assert sharded["environment"]["workers"] == 2

    def strip(r):
        r = comparable(r)
        r.pop("environment")
        for s in [r, *(s["report"] for s in r["steps"])]:
            s.pop("command")
        return r

    assert strip(sharded) == strip(single)


def test_audit_renders_formats_and_validates(tiny_run, tmp_path):
    import shutil
    import xml.etree.ElementTree as ET

    from advaudit.report.schema import validate_report

    _, d, cfg, report = tiny_run
    validate_report(report)
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    strict = _write(tmp_path, TINY.replace("detect.auroc >= 0.5", "detect.auroc >= 1.01"))
    rc = main(["audit", MODEL, "--config", str(strict), "--report-dir", str(out), "--resume", "-q",
               "--format", "html", "--format", "md", "--format", "junit"])
    assert rc == 1
    html = (out / "report.html").read_text()
    assert "FAIL" in html and "data:image/png;base64," in html
    assert "detect.auroc" in (out / "report.md").read_text()
    suite = ET.parse(out / "report.junit.xml").getroot()
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert any("detect.auroc" in f for f in failures) and len(failures) == 1


def test_bad_model_or_report_dir_creates_nothing(tmp_path, capsys):
    cfg = _write(tmp_path, TINY)
    assert main(["audit", str(tmp_path / "nope.onnx"), "--config", str(cfg), "--report-dir", str(tmp_path / "o")]) == 2
    assert "model file not found" in capsys.readouterr().err and not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["audit", MODEL, "--config", str(cfg), "--report-dir", str(tmp_path / "afile" / "o")]) == 2
    assert "afile is not a folder" in capsys.readouterr().err
