"""Benchmark: backdoor scanners (Neural Cleanse alone, and ``all`` = NC + MM-BD) on implanted MNIST models.

    OMP_NUM_THREADS=1 python benchmarks/bench_backdoor.py --seeds 5 --out bench_backdoor.json

Per seed, trains one model of each kind on MNIST test images 0-7999 (there is no MNIST training set
in ../shared/data), a compact CNN (`advaudit_testing.training.SmallCNN`):

* clean;
* BadNets: 4x4 checkerboard patch in the bottom-right corner, 10% poisoned;
* Alg. 1 of paper 003 (recon): the NC trigger of the target reconstructed on that seed's clean
  model, 10% poisoned, noise augmentation of half of the other images (--noise-rate) with a random alpha = 0.6 subset of
  the mask;
* Alg. 2 of paper 003 (random): z = 36 random pixels, random pattern, same augmentation.

The target label is drawn per seed.  Clean accuracy and attack success rate are measured on MNIST
test images 8000-9999; each model is saved as TorchScript and scanned through advaudit's public API
on 300 clean images from 8000-9999 (stratified, seeded).  ``--dataset gtsrb`` does the same on GTSRB
(train on test images 0-9999, 43 classes; evaluate and scan on all of 10000-12629).  Prints one row per model as it
finishes and then the detection matrix: flagged rate, right-target rate (the implanted target among the
suspected targets), false-positive rate on clean models, mean time per scan.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "plugins" / "advaudit-testing"):  # the checkout's advaudit and advaudit_testing
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from advaudit.backdoor import MMBD, NeuralCleanse  # noqa: E402
from advaudit.data import select  # noqa: E402
from advaudit.models import load_model  # noqa: E402
from advaudit_testing.implants import attack_success_rate, implant  # noqa: E402
from advaudit_testing.training import SmallCNN, load_mnist_splits, predict_labels, save_torchscript  # noqa: E402

KIND_ORDER = ("clean", "badnets", "recon", "random")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--seeds", type=int, default=5, help="models per kind")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KIND_ORDER))
    ap.add_argument("--dataset", choices=["mnist", "gtsrb"], default="mnist",
                    help="gtsrb: GTSRB test images 0-9999 to train (43 classes, 32x32), 10000-12629 to evaluate and "
                         "scan")
    ap.add_argument("--epochs", type=int, help="training epochs (default 6 for MNIST, 10 for GTSRB)")
    ap.add_argument("--noise-rate", type=float, default=0.5,
                    help="share of the non-poisoned images given the noise augmentation")
    ap.add_argument("--n", type=int,
                    help="clean images given to the scanners (default 300 for MNIST; all 2,630 evaluation images for "
                         "GTSRB, whose rarer classes need them)")
    ap.add_argument("--out", help="write every row as JSON here")
    ap.add_argument("--summarise", nargs="+", metavar="JSON", help="only print the matrix of earlier --out files")
    args = ap.parse_args(argv)
    if args.summarise:
        print_matrix([retest(r) for f in args.summarise for r in json.loads(Path(f).read_text())])
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.dataset == "mnist":
        xtr, ytr, xte, yte = load_mnist_splits(args.shared)
        make_net, n_classes, side, channels = SmallCNN, 10, 28, 1
    else:
        from sample_models.build import load_gtsrb_test

        g = load_gtsrb_test(Path(args.shared))
        xf = g.x.astype(np.float32) / 255.0
        xtr, ytr, xte, yte = xf[:10000], g.y[:10000], xf[10000:], g.y[10000:]
        n_classes, side, channels = 43, 32, 3
        make_net = lambda: SmallCNN(3, 32, 43)  # noqa: E731
    args.epochs = args.epochs or (6 if args.dataset == "mnist" else 10)
    args.n = args.n or (300 if args.dataset == "mnist" else len(xte))
    pick = select(len(xte), yte, args.n, 0, 1234)
    xs, ys = xte[pick], yte[pick]
    kinds = [k for k in args.kinds.split(",") if k]
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_backdoor_"))
    print(f"torch threads {torch.get_num_threads()}; {args.seeds} seeds x {kinds}; scan on {len(xs)} clean images",
          flush=True)
    hdr = (f"{'kind':8} {'seed':>4} {'tgt':>3} {'acc':>6} {'asr':>6} | {'NC':>5} {'NC sus':>8} {'AImin':>6} "
           f"{'NC s':>6} | {'MMBD':>5} {'p':>8} {'MM s':>5} | all")
    print(hdr, flush=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(1000 + seed)
        target = int(rng.integers(0, n_classes))
        clean_net = None
        for kind in kinds:
            t0 = time.perf_counter()
            imp = implant(kind, make_net, xtr, ytr, target=target, seed=seed, epochs=args.epochs, clean_net=clean_net,
                          noise_rate=args.noise_rate)
            train_s = time.perf_counter() - t0
            if kind == "clean":
                clean_net = imp.net
            acc = float((predict_labels(imp.net, xte) == yte).mean())
            asr = None
            if imp.trigger is not None:
                asr = attack_success_rate(lambda a: predict_labels(imp.net, a), xte, yte, imp.trigger, target)
            path = save_torchscript(imp.net, str(tmp / f"{kind}_{seed}.pt"), (channels, side, side))
            model = load_model(path)
            nc = NeuralCleanse().scan(model, xs, ys, seed=0)
            mm = MMBD().scan(model, xs, ys, seed=0)
            flagged_all = nc.backdoored or mm.backdoored
            sus_all = sorted(set(nc.suspected_targets) | set(mm.suspected_targets))
            row = {
                "kind": kind, "seed": seed, "target": imp.target, "clean_accuracy": acc, "asr": asr,
                "train_s": train_s,
                "nc": {"flagged": nc.backdoored, "suspects": nc.suspected_targets, "time_s": nc.time_s,
                       "max_anomaly_index": nc.evidence["max_anomaly_index"],
                       "l1": [c.mask_l1 for c in nc.classes], "anomaly_index": [c.anomaly_index for c in nc.classes]},
                "mmbd": {"flagged": mm.backdoored, "suspects": mm.suspected_targets, "time_s": mm.time_s,
                         "p_value": mm.evidence["p_value"], "top_class": mm.evidence["top_class"],
                         "margins": [c.extra["max_margin"] for c in mm.classes]},
                "all": {"flagged": flagged_all, "suspects": sus_all, "time_s": nc.time_s + mm.time_s},
            }
            row["noise_rate"] = args.noise_rate if kind in ("recon", "random") else None
            rows.append(row)
            print(
                f"{kind:8} {seed:4d} {imp.target if imp.target is not None else '-':>3} {acc:6.3f} "
                f"{'' if asr is None else f'{asr:6.3f}':>6} | {str(nc.backdoored):>5} {str(nc.suspected_targets):>8} "
                f"{nc.evidence['max_anomaly_index']:6.2f} {nc.time_s:6.1f} | {str(mm.backdoored):>5} "
                f"{mm.evidence['p_value']:8.2g} {mm.time_s:5.1f} | {flagged_all} {sus_all}",
                flush=True,
            )
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    print_matrix(rows)
    return 0


def retest(row: dict) -> dict:
    """Re-apply MM-BD's current test to the stored per-class margins (the statistics do not depend
    on the test), so a summary of earlier runs reflects the code as it is now."""
    from advaudit.backdoor.mmbd import max_margin_pvalue

    top, p, _ = max_margin_pvalue(np.array(row["mmbd"]["margins"]))
    flagged = p < 0.05
    row["mmbd"].update({"flagged": flagged, "suspects": [top] if flagged else [], "p_value": p})
    row["all"]["flagged"] = row["nc"]["flagged"] or flagged
    row["all"]["suspects"] = sorted(set(row["nc"]["suspects"]) | set(row["mmbd"]["suspects"]))
    return row


def print_matrix(rows: list[dict]) -> None:
    print("\nDetection matrix (flagged = verdict 'backdoored'; right target = implanted target among the suspects)")
    print(f"{'kind':8} {'n':>2} {'acc':>6} {'asr':>6} | {'NC flagged':>10} {'NC right':>8} {'NC s/scan':>9} | "
          f"{'all flagged':>11} {'all right':>9} {'all s/scan':>10}")
    for kind in KIND_ORDER:
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        acc = np.mean([r["clean_accuracy"] for r in rs])
        asr = np.mean([r["asr"] for r in rs]) if rs[0]["asr"] is not None else float("nan")
        cells = []
        for m in ("nc", "all"):
            fl = np.mean([r[m]["flagged"] for r in rs])
            right = np.mean([r["target"] in r[m]["suspects"] for r in rs]) if kind != "clean" else float("nan")
            t = np.mean([r[m]["time_s"] for r in rs])
            cells.append((fl, right, t))
        (f1, r1, t1), (f2, r2, t2) = cells
        label = "FPR" if kind == "clean" else ""
        print(f"{kind:8} {len(rs):2d} {acc:6.3f} {asr:6.3f} | {f1:10.0%} {r1:8.0%} {t1:9.1f} | {f2:11.0%} {r2:9.0%} "
              f"{t2:10.1f} {label}")
    print("(clean rows: 'flagged' is the false-positive rate)")


if __name__ == "__main__":
    sys.exit(main())
