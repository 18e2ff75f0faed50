"""Sharding over processes (advaudit.distributed): 2 CPU worker processes give the single-process result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advaudit.attacks.runner import AttackRun, run_attacks
from advaudit.attacks.suites import AttackChoice
from advaudit.cli.sharding import recorded_command
from advaudit.data import load_data, prepare
from advaudit.detect.evaluate import evaluate
from advaudit.detect.lcr import CHUNK, Mutation, calibrate
from advaudit.cli import main
from advaudit.distributed import Shard, run_sharded
from advaudit.errors import DataError, UsageError
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
TIMING = {"time_s", "ms_per_input", "ms_per_input_adversarial", "ms_per_input_normal", "created", "command"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudit", *args], capture_output=True, text=True, cwd=cwd)


def _untimed(d):
    if isinstance(d, dict):
        return {k: _untimed(v) for k, v in d.items() if k not in TIMING}
    if isinstance(d, list):
        return [_untimed(v) for v in d]
    return d


def test_shard_deals_chunks_round_robin():
    assert Shard.single().mine(3) == [0, 1, 2] and Shard.single().is_main
    assert Shard(1, 3).mine(8) == [1, 4, 7] and not Shard(1, 3).is_main
    assert Shard(2, 3).mine(2) == []
    chunks = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 10)]
    assert Shard(0, 2).rows(chunks).tolist() == [0, 1, 2, 3, 8, 9]
    assert Shard(1, 2).rows(chunks).tolist() == [4, 5, 6, 7]
    assert Shard.single().map(lambda v: v * 2, [1, 2]) == [2, 4]
    assert Shard(1, 2, 1).device("cpu") == "cpu" and Shard.single().device("cuda") == "cuda"
    assert recorded_command(["attack", "m.onnx", "--workers", "2", "--workers=3", "-q"]) == ["attack", "m.onnx", "-q"]


def _audit_step(n_attack: int, n_detect: int, *, shard: Shard) -> tuple:
    """Attacks (plain and cascade, a minimum-norm one, a black-box one) and detection, one shard."""
    model = load_model(MNIST)
    data = prepare(load_data(MNIST_DATA, n=n_attack + n_detect), model)
    x, y = data.x[:n_attack], data.y[:n_attack]
    plain = run_attacks(
        model, x, y, [AttackChoice("fgsm"), AttackChoice("pgd", {"steps": 5})], [0.1, 0.2],
        batch_size=8, seed=5, shard=shard,
    )
    cascade = run_attacks(
        model, x, y,
        [AttackChoice("fgsm"), AttackChoice("deepfool", {"steps": 10}), AttackChoice("square", {"queries": 30})],
        [0.15, 0.3], cascade=True, batch_size=8, seed=5, shard=shard,
    )
    cx, cy = data.x[n_attack:], data.y[n_attack:]
    half = len(cx) // 2
    cal = calibrate(model, cx[:half], cy[:half], Mutation(), n_mutations=10, seed=2, shard=shard)
    e = max(plain.eps)
    ok = plain.adv_by[e] >= 0
    ev = evaluate(
        model, cx[half:], cy[half:], plain.adv[e][ok], np.array(["fgsm", "pgd"])[plain.adv_by[e][ok]], cal,
        n_lcr=10, seed=2, max_mutations=32, shard=shard,
    )
    return plain, cascade, cal.kappa_nor, ev.figures, ev.fpr, ev.tpr


def _same_run(a: AttackRun, b: AttackRun) -> None:
    assert _untimed(a.results()) == _untimed(b.results())
    assert a.robust_by_eps == b.robust_by_eps and a.warnings == b.warnings
    assert np.array_equal(a.clean_probs, b.clean_probs)
    for e in a.eps:
        for name in ("adv", "adv_by", "adv_labels", "adv_probs"):
            assert np.array_equal(getattr(a, name)[e], getattr(b, name)[e]), (name, e)


def test_two_workers_give_the_single_process_results():
    # 38 images in batches of 8: 5 attack batches (the last partial, rank 0 owns 3), 5 verify blocks;
    # detection: 2 LCR chunks per clean half
    n_detect = 2 * (CHUNK + 6)
    one = run_sharded(_audit_step, 1, 38, n_detect)
    two = run_sharded(_audit_step, 2, 38, n_detect)
    assert one is not None and two is not None
    _same_run(one[0], two[0])
    _same_run(one[1], two[1])
    assert one[1].rows[0].attacked > one[1].rows[-1].attacked  # the cascade did narrow the set
    assert one[2] == two[2]  # kappa_nor
    assert _untimed(one[3]) == _untimed(two[3])
    assert one[3]["n_normal"] > CHUNK and sum(one[3]["n_adversarial"].values()) > 0
    assert np.array_equal(one[4], two[4]) and np.array_equal(one[5], two[5])


def test_attack_cli_workers_report_is_identical(tmp_path):
    def args(d: Path) -> list[str]:
        return [MNIST, "--data", MNIST_DATA, "--n", "30", "--batch-size", "8", "--suite", "quick", "--eps", "0.15",
                "--report", str(d / "report.json"), "--save-adv", str(d / "adv.npz"), "--seed", "4", "-q"]

    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    assert main(["attack", *args(tmp_path / "1")]) == 0  # the CLI in this process
    assert main(["attack", *args(tmp_path / "2"), "--workers", "2"]) == 0
    reports = [json.loads((tmp_path / w / "report.json").read_text()) for w in ("1", "2")]
    assert _untimed(reports[0]) == _untimed(reports[1])
    with np.load(tmp_path / "1" / "adv.npz") as a, np.load(tmp_path / "2" / "adv.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_error_inside_workers_is_one_line_exit_2(tmp_path):
    adv = tmp_path / "adv.npz"
    np.savez(adv, x=np.zeros((4, 1, 28, 28), np.float32), attack=np.array(["fgsm"] * 4))
    # the bad --radius is only checked where the calibration runs: inside the workers
    r = cli("detect", "evaluate", MNIST, "--clean", MNIST_DATA, "--n", "40", "--adversarial", str(adv),
            "--mutation", "brightness", "--radius", "2", "--workers", "2")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("advaudit: error: --radius must be in (0, 1]")
    assert "Traceback" not in r.stderr and len([ln for ln in lines if "error" in ln]) == 1


def _fails_on_rank_1(*, shard: Shard) -> int:
    if shard.rank == 1:
        raise DataError("shard 1 cannot read its images", "check the file")
    return sum(shard.map(lambda v: v, [1, 2, 3]))  # rank 0 waits here for rank 1, which is gone


def test_an_error_in_one_worker_stops_the_others():
    with pytest.raises(DataError) as exc:
        run_sharded(_fails_on_rank_1, 2)
    assert str(exc.value) == "shard 1 cannot read its images; check the file"
    with pytest.raises(UsageError):
        run_sharded(_fails_on_rank_1, 0)
