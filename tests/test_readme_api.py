"""The README's Python API section runs as written (its snippets are the documentation users copy)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _run(code: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    cwd = os.getcwd()
    os.chdir(ROOT)  # the snippets name the bundled files relative to the repository root
    try:
        namespace: dict[str, Any] = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace, capsys.readouterr().out


def test_readme_has_the_job_api_snippets() -> None:
    snippets = _snippets()
    assert len(snippets) == 2
    assert "api.attack(" in snippets[0] and "from advaudit import api" in snippets[0]


def test_job_api_snippet_runs_and_matches_the_cli_report(capsys: pytest.CaptureFixture[str]) -> None:
    ns, out = _run(_snippets()[0], capsys)
    m = ns["metrics"]
    assert 0.9 <= m["clean_accuracy"] <= 1.0  # the bundled MNIST CNN is ~99% accurate
    assert 0.0 <= m["robust_accuracy@0.3"] <= m["robust_accuracy@0.1"] <= m["clean_accuracy"]
    assert m["robust_accuracy"] == m["robust_accuracy@0.3"]
    assert out.startswith("clean ") and f"{m['clean_accuracy']:.2f}" in out
    report = ns["report"]
    assert report["kind"] == "attack" and report["data"]["n"] == 100
    assert report["robust_accuracy"] == m["robust_accuracy"]


def test_algorithm_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    ns, _ = _run(_snippets()[1], capsys)
    x, adv = ns["x"], ns["out"].x_adv
    assert adv.shape == x.shape
    assert float((adv - x).abs().max()) <= 0.3 + 1e-6  # inside the budget
    assert ns["fooled"].mean() > 0.5  # PGD-40 at eps 0.3 fools the undefended MNIST CNN
