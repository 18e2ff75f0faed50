"""Crash-safe single commands: ``attack``, ``scan-backdoor`` and ``detect evaluate`` keep every finished
unit in ``<report>.partial/``; a run killed (SIGINT, SIGKILL) and continued with ``--resume`` writes the
report an uninterrupted run writes, byte for byte once the timing fields are stripped.

The kill tests start ``python -m advaudit`` with ``ADVAUDIT_CHECKPOINT_HOLD`` set, so the process
waits right after a given save; the test polls the checkpoint's manifest, then signals the process.
The only time limit is :data:`HANG_GUARD_S` on waiting for a subprocess (a guard against a hung CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from advaudit.attacks.runner import AttackRun, run_attacks
from advaudit.attacks.suites import AttackChoice
from advaudit.backdoor.neural_cleanse import NCConfig, reconstruct_triggers
from advaudit.checkpoint import (
    HOLD_ENV, MANIFEST, AttackUnits, Checkpoint, ChunkUnits, checkpoint_dir, comparable, make_inputs,
)
from advaudit.cli import main
from advaudit.data import load_data, prepare
from advaudit.detect.lcr import CHUNK, Mutation, calibrate
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
BADNETS = str(SAMPLE_MODELS / "mnist_badnets.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
HANG_GUARD_S = 900
"""Longest wait for a subprocess: only a guard against a hang, never part of what is tested."""

ATTACK = [
    "attack", MNIST, "--data", DATA, "--attack", "fgsm", "--attack", "pgd:steps=10", "--eps", "0.05", "--eps", "0.1",
    "--eps", "0.3", "--n", "48", "--seed", "0", "--batch-size", "16", "--report", "r.json", "--save-adv", "adv.npz",
    "-q", "--format", "json",
]
SCAN = [
    "scan-backdoor", BADNETS, "--data", DATA, "--method", "all", "--n", "100", "--seed", "0", "--steps", "120",
    "--batch-size", "8", "--report", "r.json", "-q", "--format", "json",
]


def _detect_args(adv: Path) -> list[str]:
    return [
        "detect", "evaluate", MNIST, "--clean", DATA, "--n", "256", "--seed", "0", "--adversarial", str(adv),
        "--lcr-mutations", "10", "--max-mutations", "40", "--report", "r.json", "-q", "--format", "json",
    ]


@pytest.fixture(scope="module")
def adversarial_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in 'adversarial' inputs in two groups (noisy test images), enough for several chunks."""
    with np.load(DATA) as f:
        x = f["x"][900:960].astype(np.float32) / 255
    noisy = np.clip(x + np.random.default_rng(0).choice([-0.3, 0.3], size=x.shape), 0, 1).astype(np.float32)
    path = tmp_path_factory.mktemp("adv") / "adv.npz"
    np.savez(path, x=noisy, attack=np.array(["noise-a"] * 30 + ["noise-b"] * 30))
    return path


# --- helpers ---------------------------------------------------------------------------------------


def _in_process(monkeypatch: pytest.MonkeyPatch, cwd: Path, args: list[str]) -> int:
    """``advaudit ARGS`` in this process, in ``cwd``, with the argv a subprocess would have."""
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["advaudit", *args])
    return main(args)


def _default_sigint() -> None:  # a shell may start the test runner with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cwd: Path, args: list[str], hold: str) -> tuple[subprocess.Popen, Path]:
    """``python -m advaudit ARGS`` in ``cwd``, holding after the save ``hold`` names; stderr to a file."""
    cwd.mkdir(parents=True, exist_ok=True)
    err = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "advaudit", *args], cwd=cwd, env={**os.environ, HOLD_ENV: hold},
            stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=_default_sigint,
        )
    return proc, err


def _units(folder: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((folder / MANIFEST).read_text())["units"]
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet (writes are atomic: never half)
        return []


def _kill_when_held(proc: subprocess.Popen, err: Path, folder: Path, ready: Any, sig: signal.Signals) -> str:
    """Poll the manifest until ``ready(units)``, then send ``sig``; returns the process's stderr."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not ready(_units(folder)):
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"no checkpoint after {HANG_GUARD_S} s")
            continue
        pytest.fail(f"the command ended (exit {proc.returncode}) before it was killed:\n{err.read_text()}")
    proc.send_signal(sig)
    proc.wait(timeout=HANG_GUARD_S)
    return err.read_text()


def _run(cwd: Path, args: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "advaudit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    return proc.returncode, proc.stderr


def _canonical(report_path: Path) -> str:
    """The report without its timing fields, as text (what must match byte for byte)."""
    return json.dumps(comparable(json.loads(report_path.read_text())), indent=2) + "\n"


def _check_interrupted(err: str, kept: int, args: list[str]) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith(f"advaudit: interrupted; {kept} finished unit(s) kept in "), err
    assert lines[-1].endswith(" --resume") and f"--report {args[args.index('--report') + 1]}" in lines[-1], err


def _kill_resume_kill_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
    first: tuple[str, signal.Signals, Any], second: tuple[str, signal.Signals, Any], last: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """Uninterrupted run in ``ref/``; in ``run/``: kill, resume and kill again, resume to the end
    (with the options ``last`` added).  Returns both reports.

    The reference run is a fresh ``python -m advaudit`` process like the others: run inside the test
    process, it would inherit global state that earlier tests left behind (thread counts, converter
    caches), and its floats could differ from a fresh process's in the last bit."""
    (tmp_path / "ref").mkdir()
    rc, err = _run(tmp_path / "ref", args)
    assert rc in (0, 1), err
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    folder = checkpoint_dir(run / "r.json")
    resumed = [*args, "--resume"]
    for step_args, (hold, sig, ready) in ((args, first), (resumed, second)):
        before = len(_units(folder))
        proc, err = _start(run, step_args, hold)
        text = _kill_when_held(proc, err, folder, ready, sig)
        kept = _units(folder)
        assert len(kept) > before, "the killed run saved nothing"
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 130, text
            _check_interrupted(text, sum(u["count"] for u in kept), step_args)
        assert not (run / "r.json").exists()
    rc, err = _run(run, [*resumed, *last])
    assert rc in (0, 1), err
    assert not folder.exists(), "a successful run removes its checkpoint"
    report = json.loads((run / "r.json").read_text())
    assert report["meta"]["resumed_units"] == sum(u["count"] for u in kept)
    return tmp_path / "ref" / "r.json", run / "r.json"


# --- kill tests, one per command ---------------------------------------------------------------------


def test_attack_killed_twice_resumes_to_the_uninterrupted_report(tmp_path, monkeypatch):
    ref, resumed = _kill_resume_kill_resume(
        tmp_path, monkeypatch, ATTACK,
        ("2", signal.SIGINT, lambda u: len(u) >= 2),  # fgsm at 0.05 and 0.1 kept
        ("2", signal.SIGKILL, lambda u: len(u) >= 4),  # then fgsm 0.3 and pgd 0.05
        ("--workers", "1"),  # the explicit one-process path (--workers is left out of the report's command)
    )
    assert _canonical(resumed) == _canonical(ref)
    report = json.loads(resumed.read_text())
    assert "--resume" not in report["command"] and len(report["results"]) == 6
    # the adversarial examples of units made by the killed runs are the uninterrupted run's, bit for bit
    with np.load(ref.with_name("adv.npz")) as a, np.load(resumed.with_name("adv.npz")) as b:
        assert a.files == b.files and len(a["x"]) > 0
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_scan_backdoor_killed_twice_resumes_to_the_uninterrupted_report(tmp_path, monkeypatch):
    ref, resumed = _kill_resume_kill_resume(
        tmp_path, monkeypatch, SCAN,
        # inside Neural Cleanse, once its first label has finished (its whole search state is kept)
        ("1", signal.SIGKILL, lambda u: any(x["key"] == "neural-cleanse/search" for x in u)),
        # after Neural Cleanse (continued from that state) finished, before MM-BD ran
        ("neural-cleanse/result", signal.SIGINT, lambda u: any(x["key"] == "neural-cleanse/result" for x in u)),
    )
    assert _canonical(resumed) == _canonical(ref)
    report = json.loads(resumed.read_text())
    assert report["methods"] == ["neural-cleanse", "mm-bd", "freeeagle"]
    assert any(c["steps"] < 120 for c in report["evidence"]["neural-cleanse"]["classes"])  # labels did stop early


def test_detect_evaluate_killed_twice_resumes_to_the_uninterrupted_report(tmp_path, monkeypatch, adversarial_npz):
    args = _detect_args(adversarial_npz)
    ref, resumed = _kill_resume_kill_resume(
        tmp_path, monkeypatch, args,
        ("1", signal.SIGINT, lambda u: len(u) >= 1),  # the calibration's chunk
        ("2", signal.SIGKILL, lambda u: len(u) >= 3),  # then the normal inputs' LCR and a group's
        ("--workers", "1"),
    )
    assert _canonical(resumed) == _canonical(ref)
    assert {"noise-a", "noise-b"} <= set(json.loads(resumed.read_text())["n_adversarial"])


# --- fingerprint, usage, leftovers --------------------------------------------------------------------


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """In this process: raise KeyboardInterrupt (as Ctrl-C would) right after the ``saves``-th save."""
    original = Checkpoint._hold

    def hold(self: Checkpoint, key: str) -> None:
        original(self, key)
        if self.saves >= saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "_hold", hold)


def test_mismatched_fingerprint_is_refused_and_leftovers_are_ignored(tmp_path, monkeypatch, capsys):
    small = ["attack", MNIST, "--data", DATA, "--attack", "fgsm", "--eps", "0.05", "--eps", "0.1", "--eps", "0.3",
             "--n", "16", "--seed", "0", "--report", "r.json", "-q", "--format", "json"]
    assert _in_process(monkeypatch, tmp_path / "ref", small) == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        assert _in_process(m, tmp_path / "run", small) == 130
    err = capsys.readouterr().err
    assert "advaudit: interrupted; 1 finished unit(s) kept in r.json.partial" in err
    folder = tmp_path / "run" / "r.json.partial"
    for changed in (["--eps", "0.2"], ["--seed", "1"]):
        args = [*small, *changed, "--resume"]
        assert _in_process(monkeypatch, tmp_path / "run", args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("advaudit: error: the checkpoint in r.json.partial was made by a run with other inputs")
        assert "changed: " in err and ("eps" in err if "--eps" in changed else "seed" in err)
    assert len(_units(folder)) == 1  # refused: nothing touched
    # what a kill in the middle of a write leaves behind is ignored, then swept
    (folder / ".u-000007.npz.x.tmp").write_bytes(b"half")
    (folder / "u-000008.npz").write_bytes(b"never listed")
    assert _in_process(monkeypatch, tmp_path / "run", [*small, "--resume"]) == 0
    assert not folder.exists()
    assert _canonical(tmp_path / "run" / "r.json") == _canonical(tmp_path / "ref" / "r.json")


def test_changed_data_or_model_is_refused(tmp_path, monkeypatch, capsys):
    args = ["attack", MNIST, "--data", DATA, "--attack", "fgsm", "--eps", "0.1", "--eps", "0.3", "--n", "16",
            "--report", "r.json", "-q", "--format", "json"]
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        assert _in_process(m, tmp_path, args) == 130
    capsys.readouterr()
    assert _in_process(monkeypatch, tmp_path, [*args, "--offset", "5", "--resume"]) == 2
    assert "changed: data.sha256, options.offset" in capsys.readouterr().err
    other = [BADNETS if a == MNIST else a for a in args]
    assert _in_process(monkeypatch, tmp_path, [*other, "--resume"]) == 2
    assert "changed: model.sha256" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["attack", MNIST, "--data", DATA],
    ["scan-backdoor", BADNETS, "--data", DATA],
    ["detect", "evaluate", MNIST, "--clean", DATA, "--adversarial", DATA],
])
def test_resume_needs_report(command, capsys):
    assert main([*command, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("advaudit: error: --resume needs --report; give the --report of the interrupted run: "
                   "its checkpoint is beside it")


def test_resume_without_checkpoint_runs_from_scratch(tmp_path, monkeypatch, capsys):
    args = ["attack", MNIST, "--data", DATA, "--attack", "fgsm", "--eps", "0.1", "--n", "16", "--report", "r.json",
            "--format", "json", "--resume"]
    assert _in_process(monkeypatch, tmp_path, args) == 0
    assert "no checkpoint at r.json.partial: running from scratch" in capsys.readouterr().err
    assert (tmp_path / "r.json").is_file() and not (tmp_path / "r.json.partial").exists()


def test_a_plain_run_discards_an_old_checkpoint(tmp_path, monkeypatch, capsys):
    args = ["attack", MNIST, "--data", DATA, "--attack", "fgsm", "--eps", "0.1", "--eps", "0.3", "--n", "16",
            "--report", "r.json", "--format", "json"]
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        assert _in_process(m, tmp_path, args) == 130
    capsys.readouterr()
    saved: list[str] = []
    original = AttackUnits.save

    def spy(self: AttackUnits, key: str, unit: Any, x: np.ndarray) -> None:
        saved.append(key)
        original(self, key, unit, x)

    monkeypatch.setattr(AttackUnits, "save", spy)
    assert _in_process(monkeypatch, tmp_path, args) == 0
    assert "discarding the checkpoint of an earlier run" in capsys.readouterr().err
    assert saved == ["0/fgsm/0.1", "0/fgsm/0.3"]  # everything ran again
    assert not (tmp_path / "r.json.partial").exists()


# --- the runner's and Neural Cleanse's resume, exactly -----------------------------------------------


class _Interrupt(Exception):
    pass


def _same_run(a: AttackRun, b: AttackRun) -> None:
    assert comparable(a.results()) == comparable(b.results())
    assert a.robust_by_eps == b.robust_by_eps and a.warnings == b.warnings
    for e in a.eps:
        for name in ("adv", "adv_by", "adv_labels", "adv_probs"):
            assert np.array_equal(getattr(a, name)[e], getattr(b, name)[e]), (name, e)


def _open(path: Path, inputs: dict[str, Any], resume: bool) -> Checkpoint:
    return Checkpoint.open(path, "attack", inputs, resume=resume)


@pytest.mark.parametrize("stop_after", [1, 3])
def test_cascade_resumes_exactly(tmp_path, mnist_sample, stop_after):
    """A cascade (later attacks run only where earlier ones failed) with a minimum-norm attack, cut
    after ``stop_after`` units and resumed: the run equals the uninterrupted one, arrays included."""
    model, data = mnist_sample
    x, y = data.x[:40], data.y[:40]
    choices = [AttackChoice("fgsm"), AttackChoice("deepfool", {"steps": 10}), AttackChoice("square", {"queries": 30})]
    kw = dict(cascade=True, batch_size=8, seed=5)
    whole = run_attacks(model, x, y, choices, [0.15, 0.3], **kw)
    inputs = {"test": "cascade"}
    units = AttackUnits(_open(tmp_path / "r.json", inputs, resume=False))
    original = units.save

    def save_then_stop(key: str, unit: Any, xs: np.ndarray) -> None:
        original(key, unit, xs)
        if units.checkpoint.saves >= stop_after:
            raise _Interrupt

    units.save = save_then_stop  # type: ignore[method-assign]
    with pytest.raises(_Interrupt):
        run_attacks(model, x, y, choices, [0.15, 0.3], units=units, **kw)
    ran: list[str] = []
    resumed_units = AttackUnits(_open(tmp_path / "r.json", inputs, resume=True))
    plain_save = resumed_units.save

    def spy(key: str, unit: Any, xs: np.ndarray) -> None:
        ran.append(key)
        plain_save(key, unit, xs)

    resumed_units.save = spy  # type: ignore[method-assign]
    resumed = run_attacks(model, x, y, choices, [0.15, 0.3], units=resumed_units, **kw)
    assert len(ran) == 5 - stop_after  # fgsm x2, deepfool (all eps at once), square x2
    assert resumed.rows[0].attacked > resumed.rows[-1].attacked  # the cascade did narrow the set
    _same_run(whole, resumed)


def test_neural_cleanse_resumes_from_each_finished_label():
    model = load_model(BADNETS)
    data = prepare(load_data(DATA, n=60), model)
    x = torch.from_numpy(data.x)
    cfg = NCConfig(steps=120, batch_size=8, early_stop_patience=5)

    class Store:
        def __init__(self, saved: dict[str, np.ndarray] | None = None) -> None:
            self.saved, self.snapshots = saved, []

        def load(self) -> dict[str, np.ndarray] | None:
            return self.saved

        def save(self, arrays: dict[str, np.ndarray], finished: int, total: int) -> None:
            self.snapshots.append(({k: np.array(v, copy=True) for k, v in arrays.items()}, finished))

    def search(store: Store) -> Any:
        return reconstruct_triggers(model.logits, x, list(range(10)), config=cfg,
                                    generator=torch.Generator().manual_seed(3), state=store)

    first = Store()
    whole = search(first)
    finished = [f for _, f in first.snapshots]
    assert len(finished) >= 2 and finished == sorted(finished) and finished[-1] <= 10
    for snapshot, _ in (first.snapshots[0], first.snapshots[-1]):
        again = search(Store(snapshot))
        for name in ("masks", "patterns", "l1", "reached", "steps_run", "final_cost"):
            assert np.array_equal(getattr(whole, name), getattr(again, name)), name


def test_detect_chunks_resume_exactly(tmp_path, mnist_sample):
    model, data = mnist_sample
    x, y = data.x[: CHUNK + 40], data.y[: CHUNK + 40]
    whole = calibrate(model, x, y, Mutation(), n_mutations=10, seed=2)
    inputs = make_inputs("test", model, {}, 2)
    ckpt = Checkpoint.open(tmp_path / "r.json", "detect-evaluate", inputs, resume=False)
    calibrate(model, x, y, Mutation(), n_mutations=10, seed=2, units=ChunkUnits(ckpt))
    assert [u["key"] for u in _units(ckpt.folder)] == ['["calibrate", 0]', '["calibrate", 128]']
    ckpt.drop('["calibrate", 128]')  # as if killed before the second chunk was saved
    again = Checkpoint.open(tmp_path / "r.json", "detect-evaluate", inputs, resume=True)
    resumed = calibrate(model, x, y, Mutation(), n_mutations=10, seed=2, units=ChunkUnits(again))
    assert again.reused == {'["calibrate", 0]'} and resumed == whole


def test_sharded_resume_of_a_one_process_checkpoint(tmp_path, monkeypatch, capsys):
    """The checkpoint does not depend on the worker count: two workers continue a one-process run
    (every rank skips the same units, rank 0 alone writes) and give the uninterrupted report."""
    args = ["attack", MNIST, "--data", DATA, "--attack", "fgsm", "--attack", "pgd:steps=5", "--eps", "0.1", "--eps",
            "0.3", "--n", "24", "--batch-size", "8", "--seed", "0", "--report", "r.json", "-q", "--format", "json"]
    assert _in_process(monkeypatch, tmp_path / "ref", args) == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        assert _in_process(m, tmp_path / "run", args) == 130
    manifest = tmp_path / "run" / "r.json.partial" / MANIFEST
    doc = json.loads(manifest.read_text())
    assert len(doc["units"]) == 2
    for unit in doc["units"]:  # a mark that shows in the report only if the saved unit is replayed
        unit["meta"]["time_s"] = 1234.5
    manifest.write_text(json.dumps(doc))
    assert _in_process(monkeypatch, tmp_path / "run", [*args, "--resume", "--workers", "2"]) == 0
    assert not (tmp_path / "run" / "r.json.partial").exists()
    assert _canonical(tmp_path / "run" / "r.json") == _canonical(tmp_path / "ref" / "r.json")
    times = [r["time_s"] for r in json.loads((tmp_path / "run" / "r.json").read_text())["results"]]
    assert times[:2] == [1234.5, 1234.5] and 1234.5 not in times[2:]
