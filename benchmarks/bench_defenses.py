"""Benchmark: the CS229 paper's (004) defence table, evaluated honestly, and TVM against ART.

    pip install -e ".[dev,bench]"
    OMP_NUM_THREADS=1 python benchmarks/bench_defenses.py table --dataset mnist --n 100
    OMP_NUM_THREADS=1 python benchmarks/bench_defenses.py table --dataset cifar10 --n 50
    OMP_NUM_THREADS=1 python benchmarks/bench_defenses.py tvm --n 1000

``table``: rows = defences (the paper's five with its hyperparameters, VQ-VAE when a trained file
is given), one row per attack (FGSM, PGD, C&W L2, DeepFool); columns = clean accuracy with the
defence, and robust accuracy under ``blind`` (the paper's setting: adversarials made on the
undefended model, then purified), ``bpda`` and ``bpda+eot``.  Every figure is measured by
:func:`advaudit.defenses.evaluate.evaluate_defense` (verification through the real defence, then ONNX
Runtime); randomised defences are reported as the expected accuracy over seeded draws.

Deviations from the paper, stated: the paper's classifiers and its 1,000 random test images are
replaced by the bundled sample models and the first N images of the bundled test subsets; Foolbox's
attacks (which search the smallest eps up to 0.3) by advaudit's fixed-budget FGSM/PGD and
minimum-norm C&W L2 and L2 DeepFool projected into an L2 ball; FGSM/PGD use linf eps 0.3 on MNIST
(the paper's maximum) and 8/255 on CIFAR-10 (0.3 destroys CIFAR images), C&W/DeepFool L2 eps 2.0
(MNIST) and 0.5 (CIFAR-10).

``tvm``: advaudit's batched TVM and ART's ``TotalVarMin`` (one image and channel at a time, SciPy
L-BFGS-B) on the same CIFAR-10 images with the *same* dropout masks, at ART's defaults (keep
probability 0.3, lambda 0.5, norm 2, 10 L-BFGS iterations); prints wall time, the objective both
minimise, and the reconstruction error (MSE to the original image).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from advaudit.attacks.suites import AttackChoice
from advaudit.data import load_data, prepare
from advaudit.defenses import build_stack
from advaudit.defenses.evaluate import evaluate_defense
from advaudit.models import load_model

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"

DATASETS = {  # model, data, linf eps (FGSM, PGD), l2 eps (C&W L2, DeepFool), k-means colours
    "mnist": ("mnist_cnn.onnx", "mnist_test_1k.npz", 0.3, 2.0, 16),
    "cifar10": ("cifar10_resnet20.onnx", "cifar10_test_1k.npz", 8 / 255, 0.5, 50),
}
LINF_ATTACKS = [AttackChoice("fgsm"), AttackChoice("pgd", {"steps": 20})]


def l2_attacks(cw_binary: int, cw_steps: int) -> list[AttackChoice]:
    return [AttackChoice("cw-l2", {"binary_search_steps": cw_binary, "steps": cw_steps}),
            AttackChoice("deepfool", {"steps": 20})]


def paper_defences(k: int, tvm_iters: int, kmeans_iters: int = 20) -> list[str]:
    """The paper's five transformations at its hyperparameters (VQ-VAE added separately)."""
    return [
        "jpeg:quality=90",
        "gaussian:sigma_x=0,sigma_y=0.3",
        f"kmeans:k={k},iters={kmeans_iters}",
        f"tvm:drop=0.5,weight=0.03,iters={tvm_iters}",
    ]


def table(args: argparse.Namespace) -> None:
    model_file, data_file, eps, eps2, k = DATASETS[args.dataset]
    model = load_model(SAMPLES / model_file)
    data = prepare(load_data(SAMPLES / "data" / data_file, n=args.n), model)
    assert data.y is not None
    specs = args.defenses or paper_defences(k, args.tvm_iters, args.kmeans_iters)
    l2_set = l2_attacks(args.cw_binary, args.cw_steps)
    if args.vqvae:
        specs = [*specs, f"vqvae:path={args.vqvae}"]
    print(f"# {args.dataset}: {model_file}, first {len(data)} images of {data_file}, linf eps {eps:g} "
          f"(FGSM, PGD), l2 eps {eps2:g} (C&W, DeepFool), "
          f"EOT {args.eot} draws, {args.eval_draws} verification draws for randomised defences", flush=True)
    print(f"{'defence':40s} {'attack':34s} {'clean':>7s} {'undef.':>7s} {'blind':>7s} {'bpda':>7s} {'bpda+eot':>8s} "
          f"{'time s':>7s}", flush=True)
    for spec in specs:
        t0 = time.perf_counter()
        stack = build_stack([spec])
        evs = [
            evaluate_defense(
                model, data.x, data.y, stack, attacks, [e], norm=norm, modes=("blind", "bpda", "bpda+eot"),
                eot=args.eot, eval_draws=args.eval_draws, batch_size=args.batch_size, seed=0,
            )
            for attacks, e, norm in ((LINF_ATTACKS, eps, "linf"), (l2_set, eps2, "l2"))
        ]
        worst = {m: 1.0 for m in ("undefended", "blind", "bpda", "bpda+eot")}
        for ev, attacks in zip(evs, (LINF_ATTACKS, l2_set)):
            d = ev.to_dict()
            by = {m: {r["attack"]: r for r in v["results"]} for m, v in d["modes"].items()}
            for a in attacks:
                name = str(a)
                vals = {"undefended": by["blind"][name]["robust_accuracy_undefended"],
                        **{m: by[m][name]["robust_accuracy"] for m in ("blind", "bpda", "bpda+eot")}}
                print(f"{spec:40s} {name + ' (' + ev.norm + ' ' + format(ev.eps[0], '.3g') + ')':34s} "
                      f"{100 * ev.clean_accuracy:6.1f}% "
                      + " ".join(f"{100 * vals[m]:6.1f}%" for m in ("undefended", "blind", "bpda"))
                      + f" {100 * vals['bpda+eot']:7.1f}%", flush=True)
            worst = {m: min(worst[m], ev.undefended_robust_by_eps[ev.eps[0]] if m == "undefended"
                            else d["modes"][m]["robust_accuracy"]) for m in worst}
            for w in ev.warnings:
                print(f"  warning ({ev.norm}): {w}", flush=True)
        undefended = f"(clean accuracy undefended: {100 * evs[0].clean_accuracy_undefended:.1f}%)"
        print(f"{spec:40s} {undefended:34s}",
              flush=True)
        print(f"{spec:40s} {'worst case over the four attacks':34s} {100 * evs[0].clean_accuracy:6.1f}% "
              + " ".join(f"{100 * worst[m]:6.1f}%" for m in ("undefended", "blind", "bpda"))
              + f" {100 * worst['bpda+eot']:7.1f}% {time.perf_counter() - t0:7.0f}", flush=True)


def tvm(args: argparse.Namespace) -> None:
    from art.defences.preprocessor import TotalVarMin

    from advaudit.defenses.tvm import tv_objective, tv_reconstruct

    torch.set_num_threads(1)
    ds = load_data(SAMPLES / "data" / "cifar10_test_1k.npz", n=args.n)
    x = ds.x.astype(np.float32) / 255.0  # (N, 3, 32, 32)
    keep, lamb = args.keep, args.lamb
    print(f"# TVM on {len(x)} CIFAR-10 images, 1 thread; keep probability {keep}, lambda {lamb}, norm 2 "
          f"(same masks for both)", flush=True)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.random.seed(0)
    art = TotalVarMin(prob=keep, norm=2, lamb=lamb, max_iter=args.art_iters)
    t0 = time.perf_counter()
    art_out, _ = art(nhwc)
    t_art = time.perf_counter() - t0
    np.random.seed(0)  # ART draws one mask per image, in order: redraw the same masks
    masks = np.stack([(np.random.rand(*nhwc[i].shape) < keep) for i in range(len(x))]).astype(np.float32)
    xt = torch.from_numpy(x)
    mt = torch.from_numpy(np.ascontiguousarray(masks.transpose(0, 3, 1, 2)))
    at = torch.from_numpy(np.ascontiguousarray(art_out.transpose(0, 3, 1, 2)))
    f_x = tv_objective(xt, xt, mt, lamb).mean().item()
    print(f"{'method':34s} {'time s':>8s} {'objective':>10s} {'MSE':>10s} {'speed-up':>9s}")
    print(f"{'input itself (no reconstruction)':34s} {'':8s} {f_x:10.4f} {0.0:10.2e}")
    print(f"{f'ART TotalVarMin max_iter={args.art_iters}':34s} {t_art:8.2f} "
          f"{tv_objective(at, xt, mt, lamb).mean().item():10.4f} "
          f"{((at - xt) ** 2).mean().item():10.2e} {1.0:8.1f}x", flush=True)
    for iters in args.iters:
        t0 = time.perf_counter()
        z = tv_reconstruct(xt, mt, lamb, 2, iters).clamp(0, 1)
        t = time.perf_counter() - t0
        print(f"{f'advaudit tvm iters={iters}':34s} {t:8.2f} {tv_objective(z, xt, mt, lamb).mean().item():10.4f} "
              f"{((z - xt) ** 2).mean().item():10.2e} {t_art / t:8.1f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    t = sub.add_parser("table")
    t.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    t.add_argument("--n", type=int, default=100)
    t.add_argument("--eot", type=int, default=5)
    t.add_argument("--eval-draws", type=int, default=3)
    t.add_argument("--tvm-iters", type=int, default=30)
    t.add_argument("--kmeans-iters", type=int, default=20)
    t.add_argument("--cw-binary", type=int, default=4, help="C&W binary-search steps")
    t.add_argument("--cw-steps", type=int, default=100, help="C&W Adam steps per binary-search step")
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--defenses", nargs="*", help="defence specs (default: the paper's)")
    t.add_argument("--vqvae", help="a VQ-VAE file for an extra vqvae row")
    v = sub.add_parser("tvm")
    v.add_argument("--n", type=int, default=1000)
    v.add_argument("--keep", type=float, default=0.3)
    v.add_argument("--lamb", type=float, default=0.5)
    v.add_argument("--art-iters", type=int, default=10)
    v.add_argument("--iters", type=int, nargs="*", default=[10, 20, 50])
    args = p.parse_args(argv)
    table(args) if args.part == "table" else tvm(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
