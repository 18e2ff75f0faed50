"""Benchmark: advaudit attacks against torchattacks, same network, images and settings, one process.

    pip install -e ".[dev,bench]"
    python benchmarks/bench_attack.py                 # 1000 MNIST images, eps 0.3, everything
    python benchmarks/bench_attack.py --n 200 --skip-standard
    python benchmarks/bench_attack.py --n 200 --nets lenet5_advtrained --only-standard

Networks: the bundled ``sample_models/mnist_cnn`` (not robust) and the PGD-trained LeNet5 of
``../shared/data/models`` (robust).  Images: the bundled MNIST test subset (images 8000-8999, held
out from mnist_cnn's training).  For each network it prints wall time and robust accuracy of
PGD-40 (eps 0.3, step 0.01, random start) and of the standard suite (advaudit's APGD-CE ->
APGD-DLR-T -> Square cascade vs torchattacks' AutoAttack 'standard'), and the cost of attacking an
ONNX file through its onnx2torch twin relative to the same network in TorchScript.

advaudit's figures include what a user gets: verification of every example in the deployment
runtime.  torchattacks' robust accuracy is measured by the same network on its outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
TESTING_HELPERS = REPO / "plugins" / "advaudit-testing"
if str(TESTING_HELPERS) not in sys.path:  # advaudit_testing: test-only helpers, not installed with advaudit
    sys.path.insert(0, str(TESTING_HELPERS))

from advaudit.attacks.runner import run_attacks  # noqa: E402
from advaudit.attacks.suites import AttackChoice, get_suite  # noqa: E402
from advaudit.data import load_data, prepare  # noqa: E402
from advaudit.models import load_model  # noqa: E402
from advaudit_testing.zoo import load_lenet5_advertorch  # noqa: E402


def torchscript_file(net: torch.nn.Module, path: Path) -> Path:
    net = net.eval()
    traced = torch.jit.trace(net, torch.zeros(1, 1, 28, 28))
    extra = {"advaudit.json": json.dumps({"range": [0, 1], "layout": "nchw", "input_shape": [1, 28, 28]})}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def torchattacks_run(atk, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    def go() -> float:
        correct = 0
        for i in range(0, len(x), batch):
            adv = atk(x[i : i + batch], y[i : i + batch])
            with torch.no_grad():
                correct += int((net(adv).argmax(1) == y[i : i + batch]).sum())
        return correct / len(x)

    acc, t = timed(go)
    return acc, t


def advaudit_run(
    model, x: np.ndarray, y: np.ndarray, choices, eps: float, cascade: bool, batch: int
) -> tuple[float, float]:
    run, t = timed(lambda: run_attacks(model, x, y, choices, [eps], cascade=cascade, batch_size=batch, seed=0))
    return run.robust_accuracy, t


def main(argv: list[str] | None = None) -> int:
    import torchattacks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--skip-standard", action="store_true", help="skip the (slow) standard suite / AutoAttack")
    ap.add_argument("--nets", default="mnist_cnn,lenet5_advtrained", help="comma-separated networks to run")
    ap.add_argument("--equal-steps", action="store_true",
                    help="also run the standard suite with torchattacks' APGD step count (10 instead of AutoAttack's "
                         "100)")
    ap.add_argument("--only-standard", action="store_true", help="run only the standard suite / AutoAttack rows")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="advaudit's search precision (auto: bf16 where the CPU has native bf16)")
    ap.add_argument("--compare-fp32", action="store_true",
                    help="also run advaudit's rows with an fp32 search, to show what bf16 changes")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="advaudit-bench-"))

    nets = {"mnist_cnn": SAMPLES / "mnist_cnn.pt"}
    advtrained = args.shared / "models" / "mnist_lenet5_advertorch_advtrained.pt"
    if advtrained.exists():
        nets["lenet5_advtrained"] = torchscript_file(load_lenet5_advertorch(advtrained), tmp / "lenet5_adv.pt")
    else:
        print(f"note: {advtrained} not found; robust network skipped", file=sys.stderr)

    rows: list[tuple] = []
    eps, b = args.eps, args.batch_size

    def add(row: tuple) -> None:
        rows.append(row)
        name, what, a_acc, a_t, p_acc, p_t = row
        print(f"[{name}] {what}: advaudit {a_acc:.4f} in {a_t:.1f} s, peer {p_acc:.4f} in {p_t:.1f} s", flush=True)

    precisions: dict[str, str | None] = {}
    wanted = {n.strip() for n in args.nets.split(",") if n.strip()}
    nets = {k: v for k, v in nets.items() if k in wanted}
    for name, path in nets.items():
        model = load_model(path, input_shape=(1, 28, 28))  # TorchScript files do not declare it
        model.set_search_precision(args.precision)
        if args.compare_fp32:
            fp32_model = load_model(path, input_shape=(1, 28, 28))
            fp32_model.set_search_precision("fp32")
        data = prepare(load_data(SAMPLES / "data" / "mnist_test_1k.npz", n=args.n), model)
        net = torch.jit.load(str(path)).eval()
        xt, yt = torch.from_numpy(data.x), torch.from_numpy(data.y)
        # warm-up both code paths on a few images so lazy initialisation is not timed
        run_attacks(model, data.x[:8], data.y[:8], [AttackChoice("fgsm")], [eps])
        torchattacks.FGSM(net, eps=eps)(xt[:8], yt[:8])

        pgd = [AttackChoice("pgd", {"steps": 40, "rel_stepsize": 0.01 / eps})]
        if not args.only_standard:
            ta_pgd = torchattacks.PGD(net, eps=eps, alpha=0.01, steps=40, random_start=True)
            ta_acc, ta_t = torchattacks_run(ta_pgd, net, xt, yt, b)
            aa_acc, aa_t = advaudit_run(model, data.x, data.y, pgd, eps, False, b)
            add((name, "PGD-40 step 0.01 (both)", aa_acc, aa_t, ta_acc, ta_t))
            if args.compare_fp32:
                f_acc, f_t = advaudit_run(fp32_model, data.x, data.y, pgd, eps, False, b)
                add((name, "PGD-40 step 0.01, fp32 search", f_acc, f_t, ta_acc, ta_t))
            pgd_default = [AttackChoice("pgd", {"steps": 40})]
            d_acc, d_t = advaudit_run(model, data.x, data.y, pgd_default, eps, False, b)
            add((name, "PGD-40 advaudit default step", d_acc, d_t, ta_acc, ta_t))

        if not args.skip_standard:
            ta_auto = torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
            ta_acc, ta_t = torchattacks_run(ta_auto, net, xt, yt, b)
            suite = get_suite("standard")
            aa_acc, aa_t = advaudit_run(model, data.x, data.y, list(suite.attacks), eps, True, b)
            add((name, "standard / AutoAttack", aa_acc, aa_t, ta_acc, ta_t))
            if args.compare_fp32:
                f_acc, f_t = advaudit_run(fp32_model, data.x, data.y, list(suite.attacks), eps, True, b)
                add((name, "standard, fp32 search / AA", f_acc, f_t, ta_acc, ta_t))
            if args.equal_steps:  # torchattacks' AutoAttack runs its APGDs with 10 steps (its default)
                ten = [AttackChoice(c.name, {**c.params, "steps": 10}) if c.name.startswith("apgd") else c
                       for c in suite.attacks]
                e_acc, e_t = advaudit_run(model, data.x, data.y, ten, eps, True, b)
                add((name, "standard, APGD 10 steps / AA", e_acc, e_t, ta_acc, ta_t))

        precisions[name] = model.search_precision
        if name == "mnist_cnn" and not args.only_standard:
            onnx_model = load_model(SAMPLES / "mnist_cnn.onnx")
            on_acc, on_t = advaudit_run(onnx_model, data.x, data.y, pgd, eps, False, b)
            ts_acc, ts_t = advaudit_run(model, data.x, data.y, pgd, eps, False, b)
            add((name, "PGD-40 ONNX twin vs TorchScript", on_acc, on_t, ts_acc, ts_t))

    used = ", ".join(f"{k} {v}" for k, v in precisions.items())
    print(f"\nn={args.n} MNIST images, Linf eps={eps}, batch {b}, torch threads {torch.get_num_threads()}, CPU; "
          f"advaudit search precision: {used} (success decided and verified in float32)")
    head = (f"{'network':<18} {'attack':<32} {'advaudit acc':>12} {'time s':>8} {'peer acc':>9} {'time s':>8} "
            f"{'time ratio':>10}")
    print(head)
    print("-" * len(head))
    for name, what, a_acc, a_t, p_acc, p_t in rows:
        print(f"{name:<18} {what:<32} {a_acc:>12.4f} {a_t:>8.2f} {p_acc:>9.4f} {p_t:>8.2f} {a_t / p_t:>10.2f}")
    print("(peer = torchattacks; for the ONNX row, peer = the same network in TorchScript through advaudit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
