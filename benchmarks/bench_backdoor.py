"""Benchmark: backdoor scanners on implanted models of three datasets, each scanner's row and the
combined verdict.

    OMP_NUM_THREADS=2 python benchmarks/bench_backdoor.py --dataset mnist --arch small --seeds 10 \\
        --cache .bench_cache --out mnist_small.json
    python benchmarks/bench_backdoor.py --summarise mnist_small.json mnist_lenet.json ...

Per seed and kind it trains one model (cached under ``--cache``, so a re-run only scans) and scans it
through advaudit's public API with Neural Cleanse and MM-BD:

* datasets (there are no training sets in ../shared/data; models train on part of a test set):
  ``mnist`` (train on test images 0-7999, evaluate and scan on 8000-9999), ``cifar10`` (the 10,000
  JPEG-recovered test images: 0-7999 / 8000-9999), ``gtsrb`` (0-9999 / 10000-12629, 43 classes);
* architectures: ``small`` (``advaudit_testing.training.SmallCNN``, two conv + two dense layers) and
  a second one per dataset: ``lenet`` (MNIST, ``advaudit_testing.zoo.MnistCNN``: 5x5 convs 32/64,
  dense 128) or ``vgg`` (colour: six 3x3 convs 32-128, dense 256); and for CIFAR-10 ``resnet20``:
  the pretrained ResNet-20 of ``../shared/data/models`` (91.8 % on the real test set) fine-tuned for
  3 epochs at lr 5e-4 on the (poisoned) training split, so its models are well trained (CIFAR-10
  from scratch on 8,000 images stays near 55 %);
* kinds: ``clean``; ``badnets`` (4x4 checkerboard patch, bottom-right, 10% poisoned); ``blended``
  (Chen et al. 2017: random-noise key mixed in at alpha 0.15, 10% poisoned); ``recon`` and
  ``random`` (paper 003 Alg. 1 and Alg. 2, with noise augmentation of half of the other images).

The target label is drawn per seed.  Seeds 0-9 are the benchmark; the scanners' defaults were set
before it, and checked on seeds 100-104 (``--first-seed 100``), never on these.  Each row keeps
every scanner's own figures: Neural Cleanse's gap-rule p-value and verdict, the paper rule's
verdict, MM-BD's p-value; the summary prints each scanner's row and the combined verdicts
(Bonferroni at ``--alpha``, and the former "any scanner flags").  A backdoor row also keeps ``asr_clean``,
its trigger's success on the clean model of the same seed: paper 003's Alg. 1 trigger is that model's
own reconstructed one, so it says how much of ``asr`` the implant added.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "plugins" / "advaudit-testing"):  # the checkout's advaudit and advaudit_testing
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from advaudit.backdoor import MMBD, CombinedScan, NeuralCleanse, ScanResult  # noqa: E402
from advaudit.backdoor.freeeagle import FreeEagle  # noqa: E402
from advaudit.backdoor.mad import gap_test  # noqa: E402
from advaudit.backdoor.reference import ClassReference, fit_reference, reference_test  # noqa: E402
from advaudit.data import select  # noqa: E402
from advaudit.models import load_model  # noqa: E402
from advaudit_testing.implants import attack_success_rate, implant  # noqa: E402
from advaudit_testing.training import (  # noqa: E402
    SmallCNN, load_mnist_splits, onnx_copy, predict_labels, save_torchscript,
)
from advaudit_testing.zoo import MnistCNN, Normalize, load_resnet20_akamaster  # noqa: E402

KIND_ORDER = ("clean", "badnets", "blended", "recon", "random")
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def small_vgg(channels: int, classes: int) -> nn.Module:
    """Six 3x3 convs (32, 32 | 64, 64 | 128, each block max-pooled), dense 256, for 32x32 inputs."""
    def conv(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
    return nn.Sequential(
        *conv(channels, 32), *conv(32, 32), nn.MaxPool2d(2), *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
        *conv(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, classes),
    )


def load_dataset(name: str, shared: Path) -> tuple[Splits, int]:
    """(train x, train y, eval x, eval y) as float32 NCHW in [0, 1], and the class count."""
    if name == "mnist":
        return load_mnist_splits(str(shared)), 10
    if name == "cifar10":
        with np.load(shared / "cifar10" / "cifar10_test_10k_jpeg_q75.npz") as z:
            x, y = z["x"].astype(np.float32) / 255.0, z["y"].astype(np.int64)
        return (x[:8000], y[:8000], x[8000:], y[8000:]), 10
    with np.load(shared / "gtsrb" / "gtsrb_test_12630_32x32.npz") as z:
        x, y = z["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255.0, z["y"].astype(np.int64)
    return (x[:10000], y[:10000], x[10000:], y[10000:]), 43


def net_factory(dataset: str, arch: str, classes: int, shared: Path) -> Callable[[], nn.Module]:
    channels, side = (1, 28) if dataset == "mnist" else (3, 32)
    if arch == "resnet20" and dataset == "cifar10":
        weights = shared / "models" / "resnet20_cifar10_akamaster.th"
        return lambda: nn.Sequential(Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                     load_resnet20_akamaster(weights))
    if arch == "small":
        return lambda: SmallCNN(channels, side, classes)
    if arch == "lenet" and dataset == "mnist":
        return lambda: MnistCNN(classes)
    if arch == "vgg" and dataset != "mnist":
        return lambda: small_vgg(channels, classes)
    raise SystemExit(f"--arch {arch} is not defined for {dataset} (mnist: small, lenet; colour: small, vgg; "
                     "cifar10 also resnet20)")


def trained(args: argparse.Namespace, kind: str, seed: int, target: int, splits: Splits, classes: int,
            clean_net: nn.Module | None) -> tuple[str, dict[str, Any], nn.Module]:
    """The model file (trained now, or from the cache) and its figures."""
    xtr, ytr, xte, yte = splits
    folder = Path(args.cache) / args.dataset / args.arch
    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / f"{kind}_{seed}_e{args.epochs}.pt", folder / f"{kind}_{seed}_e{args.epochs}.json"
    if path.exists() and meta_path.exists():
        return str(path), json.loads(meta_path.read_text()), torch.jit.load(str(path)).eval()
    cached_clean = folder / f"clean_{seed}_e{args.epochs}.pt"
    if kind == "recon" and clean_net is None and cached_clean.exists():  # Alg. 1 step 1 on the cached clean model
        clean_net = torch.jit.load(str(cached_clean)).eval()
    t0 = time.perf_counter()
    imp = implant(kind, net_factory(args.dataset, args.arch, classes, Path(args.shared)), xtr, ytr, target=target,
                  seed=seed, epochs=args.epochs, clean_net=clean_net, noise_rate=args.noise_rate,
                  lr=5e-4 if args.arch == "resnet20" else 2e-3)
    meta: dict[str, Any] = {"target": imp.target, "train_s": time.perf_counter() - t0,
                            "clean_accuracy": float((predict_labels(imp.net, xte) == yte).mean()), "asr": None}
    if imp.trigger is not None:
        meta["asr"] = attack_success_rate(lambda a: predict_labels(imp.net, a), xte, yte, imp.trigger, target)
        meta["trigger"] = imp.trigger.describe()
        natural = clean_net  # the same trigger on the clean model of this seed: the part that is not implanted
        if natural is None and cached_clean.exists():
            natural = torch.jit.load(str(cached_clean)).eval()
        if natural is not None:
            meta["asr_clean"] = attack_success_rate(lambda a: predict_labels(natural, a), xte, yte, imp.trigger,
                                                    target)
    save_torchscript(imp.net, str(path), tuple(xtr.shape[1:]))  # type: ignore[arg-type]
    meta_path.write_text(json.dumps(meta))
    return str(path), meta, imp.net


def scan_freeeagle(path: str, shape: tuple[int, ...], alpha: float) -> dict[str, Any]:
    fe = FreeEagle(alpha=alpha).scan(load_model(onnx_copy(path, shape)), None, None, seed=0)
    return {"p_value": fe.evidence["p_value"], "flagged": fe.backdoored, "suspects": fe.suspected_targets,
            "metric": fe.evidence["anomaly_metric"], "top_tendency": fe.evidence["top_tendency"],
            "top_class": fe.evidence["top_class"], "time_s": fe.time_s,
            "tendencies": [c.extra["tendency"] for c in fe.classes]}


def scan(path: str, xs: np.ndarray, ys: np.ndarray, alpha: float, scanners: list[str]) -> dict[str, Any]:
    """Neural Cleanse (gap rule; the paper rule read from the same search), MM-BD and FreeEagle on one model."""
    out: dict[str, Any] = {}
    if "freeeagle" in scanners:
        out["fe"] = scan_freeeagle(path, tuple(xs.shape[1:]), alpha)
    if "nc" not in scanners:
        return out
    model = load_model(path)
    nc = NeuralCleanse(alpha=alpha).scan(model, xs, ys, seed=0)
    mm = MMBD(alpha=alpha).scan(model, xs, ys, seed=0)
    paper = [c.label for c in nc.classes if c.anomaly_index is not None and c.anomaly_index > 2
             and c.mask_l1 is not None and c.mask_l1 < nc.evidence["median_l1"]]
    return {
        **out,
        "nc": {"p_value": nc.evidence["p_value"], "flagged": nc.backdoored, "suspects": nc.suspected_targets,
               "paper_suspects": paper, "max_anomaly_index": nc.evidence["max_anomaly_index"],
               "largest_norm_ratio": nc.evidence["largest_norm_ratio"], "time_s": nc.time_s,
               "l1": [c.mask_l1 for c in nc.classes], "labels": nc.evidence["labels"]},
        "mmbd": {"p_value": mm.evidence["p_value"], "flagged": mm.backdoored, "suspects": mm.suspected_targets,
                 "p_value_gamma": mm.evidence["p_value_gamma"], "time_s": mm.time_s,
                 "margins": [c.extra["max_margin"] for c in mm.classes]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--dataset", choices=["mnist", "cifar10", "gtsrb"], default="mnist")
    ap.add_argument("--arch", default="small", help="small; lenet (mnist) or vgg (cifar10, gtsrb); resnet20 "
                                                     "(cifar10, fine-tuned from the pretrained weights)")
    ap.add_argument("--seeds", type=int, default=10, help="models per kind")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KIND_ORDER))
    ap.add_argument("--epochs", type=int, help="training epochs (default 6 for MNIST, 12 for the colour sets, "
                                                "3 of fine-tuning for resnet20)")
    ap.add_argument("--noise-rate", type=float, default=0.5,
                    help="share of the non-poisoned images given the noise augmentation (recon, random)")
    ap.add_argument("--n", type=int, help="clean images given to the scanners (default 300; GTSRB all 2,630 "
                                          "evaluation images, whose rarer classes need them for 5 per class)")
    ap.add_argument("--alpha", type=float, default=0.05, help="false-alarm rate of the verdicts")
    ap.add_argument("--scanners", default="nc,freeeagle",
                    help="nc (Neural Cleanse and MM-BD, on the TorchScript file) and/or freeeagle (on its ONNX copy)")
    ap.add_argument("--cache", default=".bench_cache", help="trained models are kept here between runs")
    ap.add_argument("--out", help="write every row as JSON here (rewritten after each model)")
    ap.add_argument("--summarise", nargs="+", metavar="JSON", help="only print the matrix of earlier --out files")
    ap.add_argument("--min-ratio", type=float, nargs="*", metavar="R",
                    help="with --summarise: re-decide Neural Cleanse's gap rule from the stored norms with each of "
                         "these floors (and print the clean models' largest ratios)")
    ap.add_argument("--reference", nargs="+", metavar="JSON",
                    help="with --summarise: also decide Neural Cleanse, MM-BD and FreeEagle (rows with its "
                         "tendencies) by their reference tests "
                         "(scan-backdoor --reference), each dataset and architecture against the clean rows of "
                         "these files (calibration seeds, never the benchmark's)")
    args = ap.parse_args(argv)
    if args.summarise:
        rows = [r for f in args.summarise for r in json.loads(Path(f).read_text())]
        print_matrix(rows, args.alpha)
        if args.reference:
            refs = reference_models([r for f in args.reference for r in json.loads(Path(f).read_text())])
            print("\n--- scanners against clean references (" + "; ".join(
                f"{d}/{a}: {v['nc'].models} models, prior df "
                + ", ".join(f"{k} {r.prior_df:.1f}" for k, r in v.items()) for (d, a), v in refs.items()) + ")")
            print_matrix([versus_reference(r, refs, args.alpha) for r in rows if (r["dataset"], r["arch"]) in refs],
                         args.alpha)
        for floor in args.min_ratio or []:
            print(f"\n--- Neural Cleanse gap rule re-decided with min_ratio {floor}")
            print_matrix([redecide(r, floor, args.alpha) for r in rows], args.alpha)
        if args.min_ratio is not None:
            print_clean_ratios(rows)
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    splits, classes = load_dataset(args.dataset, Path(args.shared))
    args.epochs = args.epochs or default_epochs(args.dataset, args.arch)
    args.n = args.n or (len(splits[2]) if args.dataset == "gtsrb" else 300)
    _, _, xte, yte = splits
    pick = select(len(xte), yte, args.n, 0, 1234)
    xs, ys = xte[pick], yte[pick]
    kinds = [k for k in args.kinds.split(",") if k]
    rows: list[dict[str, Any]] = []
    print(f"{args.dataset}/{args.arch}: torch threads {torch.get_num_threads()}; {args.seeds} seeds x {kinds}; "
          f"scan on {len(xs)} clean images", flush=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        target = int(np.random.default_rng(1000 + seed).integers(0, classes))
        clean_net = None
        for kind in kinds:
            path, meta, net = trained(args, kind, seed, target, splits, classes, clean_net)
            if kind == "clean":
                clean_net = net
            row = {"dataset": args.dataset, "arch": args.arch, "kind": kind, "seed": seed, **meta,
                   **scan(path, xs, ys, args.alpha, args.scanners.split(","))}
            if "nc" in row:
                row["combined"] = combine(row, args.alpha)
            rows.append(row)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
            if "fe" in row:
                fe = row["fe"]
                print(f"{kind:8} {seed:4d} tgt {str(meta['target']):>4} | FreeEagle M {fe['metric']:.2f} top "
                      f"{fe['top_class']} p {fe['p_value']:.3g} {fe['suspects']} {fe['time_s']:.0f}s", flush=True)
            if "nc" not in row:
                continue
            nc, mm, c = row["nc"], row["mmbd"], row["combined"]
            print(f"{kind:8} {seed:4d} tgt {str(meta['target']):>4} acc {meta['clean_accuracy']:.3f} asr "
                  f"{'-' if meta['asr'] is None else format(meta['asr'], '.3f')} | NC p {nc['p_value']:.3g} "
                  f"{nc['suspects']} ratio {nc['largest_norm_ratio']:.2f} paper {nc['paper_suspects']} "
                  f"{nc['time_s']:.0f}s | MM p {mm['p_value']:.3g} {mm['suspects']} {mm['time_s']:.0f}s | "
                  f"combined {c['flagged']} {c['suspects']}", flush=True)
    print_matrix(rows, args.alpha)
    return 0


def default_epochs(dataset: str, arch: str) -> int:
    """Training epochs of the cached models: 6 for MNIST, 3 of fine-tuning for resnet20, else 12."""
    return 6 if dataset == "mnist" else 3 if arch == "resnet20" else 12


def row_top(row: dict[str, Any], key: str) -> int:
    """The class a scanner pointed at in a stored row (its ``top_class`` evidence): Neural Cleanse's
    smallest optimised norm, MM-BD's largest margin, FreeEagle's top tendency."""
    if key in ("nc", "mmbd") and "top_class" in row[key]:
        return int(row[key]["top_class"])
    if key == "nc":
        optimised = row["nc"]["labels"]["optimised"]
        return int(min(optimised, key=lambda t: row["nc"]["l1"][t]))
    if key == "mmbd":
        return int(np.argmax(row["mmbd"]["margins"]))
    return int(row["fe"]["top_class"])


def combine(row: dict[str, Any], alpha: float, rule: str = "bonferroni") -> dict[str, Any]:
    """The scan's combined verdict, as ``scan-backdoor --method all --combine RULE`` decides it
    (:class:`CombinedScan` over the scanners' stored verdicts, targets, p-values and pointed classes)."""
    results = [ScanResult(method, "backdoored" if row[key]["flagged"] else "clean", row[key]["suspects"], [], {},
                          evidence={"p_value": row[key]["p_value"], "top_class": row_top(row, key)})
               for key, method in (("nc", "neural-cleanse"), ("mmbd", "mm-bd"), ("fe", "freeeagle")) if key in row]
    scan = CombinedScan(results, alpha=alpha, combine=rule)
    return {"flagged": scan.verdict == "backdoored", "suspects": scan.suspected_targets, "p_value": scan.p_value}


def combined_verdict(row: dict[str, Any], alpha: float, rule: str) -> tuple[bool, list[int]]:
    c = combine(row, alpha, rule)
    return c["flagged"], c["suspects"]


def redecide(row: dict[str, Any], min_ratio: float, alpha: float) -> dict[str, Any]:
    """The row with Neural Cleanse's gap verdict decided again from its stored norms (the scan's own
    :func:`~advaudit.backdoor.mad.gap_test`, references and label count) with another ``min_ratio``."""
    nc, plan = row["nc"], row["nc"]["labels"]
    optimised = np.asarray(plan["optimised"])
    gap = gap_test(np.asarray([nc["l1"][t] for t in optimised]), reference=np.isin(optimised, plan["references"]),
                   labels=plan["tested"], alpha=alpha, min_ratio=min_ratio)
    flagged = optimised[gap.flagged]
    return {**row, "nc": {**nc, "p_value": gap.p_value, "flagged": bool(flagged.size),
                          "suspects": [int(t) for t in flagged]}}  # print_matrix combines the verdicts itself


STATISTICS = {"nc": ("l1", "low"), "mmbd": ("margins", "high"), "fe": ("tendencies", "high")}
"""Each stored scanner's per-class statistic and its suspicious side (as the scanners declare them)."""


def reference_models(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, ClassReference]]:
    """Per dataset and architecture, the references of its clean rows with a full Neural Cleanse search."""
    out = {}
    for dataset, arch in sorted({(r["dataset"], r["arch"]) for r in rows}):
        clean = [r for r in rows if (r["dataset"], r["arch"], r["kind"]) == (dataset, arch, "clean")
                 and "nc" in r and all(v is not None for v in r["nc"]["l1"])]
        if len(clean) >= 5:
            out[(dataset, arch)] = {key: fit_reference(np.asarray([r[key][field] for r in clean]), side)
                                    for key, (field, side) in STATISTICS.items()
                                    if all(field in r.get(key, {}) for r in clean)}
    return out


def versus_reference(row: dict[str, Any], refs: dict[tuple[str, str], dict[str, ClassReference]],
                     alpha: float) -> dict[str, Any]:
    """The row with every scanner that has a reference and a stored statistic decided by its reference
    test (``scan-backdoor --reference``: :func:`~advaudit.backdoor.reference.reference_test`); the others
    keep their own verdicts; a row without a full search has no Neural Cleanse verdict (p = 1)."""
    out = dict(row)
    for key, (field, _) in STATISTICS.items():
        if key not in refs[(row["dataset"], row["arch"])] or field not in row.get(key, {}):
            continue  # no reference (or no stored statistic): the scanner's own verdict
        values = row[key][field]
        if any(v is None for v in values):
            out[key] = {**row[key], "p_value": 1.0, "flagged": False, "suspects": []}
            continue
        test = reference_test(np.asarray(values), refs[(row["dataset"], row["arch"])][key], alpha)
        flagged = test.p_value < alpha
        suspects = [int(t) for t in np.argsort(test.p_values, kind="stable") if test.flagged[t]]
        out[key] = {**row[key], "p_value": test.p_value, "flagged": bool(flagged),
                    "suspects": suspects if key == "nc" else [test.top] if flagged else [],
                    "top_class": test.top}
    return out


def print_clean_ratios(rows: list[dict[str, Any]]) -> None:
    """Per dataset and architecture: the clean models' largest median/norm ratio (what a floor must clear)."""
    print("\nclean models: largest ratio of the median norm to a label's norm (Neural Cleanse's full search)")
    for dataset, arch in sorted({(r["dataset"], r["arch"]) for r in rows}):
        ratios = sorted(r["nc"]["largest_norm_ratio"] for r in rows
                        if (r["dataset"], r["arch"], r["kind"]) == (dataset, arch, "clean"))
        if ratios:
            print(f"{dataset:8} {arch:6} n={len(ratios):2d}: " + " ".join(f"{v:.2f}" for v in ratios))


def print_matrix(rows: list[dict[str, Any]], alpha: float) -> None:
    """Per dataset, architecture and kind: flagged rate and right-target rate of every verdict."""
    verdicts: dict[str, Callable[[dict[str, Any]], tuple[bool, list[int]]]] = {
        "NC gap": lambda r: (r["nc"]["flagged"], r["nc"]["suspects"]),
        "NC paper": lambda r: (bool(r["nc"]["paper_suspects"]), r["nc"]["paper_suspects"]),
        "MM-BD": lambda r: (r["mmbd"]["flagged"], r["mmbd"]["suspects"]),
        "MM-BD gamma": lambda r: (r["mmbd"].get("p_value_gamma", 1.0) < alpha,  # rows of earlier versions: no
                                  [int(np.argmax(r["mmbd"].get("margins", [0])))]),
        "FreeEagle": lambda r: (r["fe"]["flagged"], r["fe"]["suspects"]),
        "combined": lambda r: combined_verdict(r, alpha, "bonferroni"),
        "fisher": lambda r: combined_verdict(r, alpha, "fisher"),
        "any": lambda r: (r["nc"]["flagged"] or r["mmbd"]["flagged"], r["nc"]["suspects"] + r["mmbd"]["suspects"]),
    }
    print(f"\nflagged / right target per verdict (clean rows: flagged = false alarms); alpha {alpha}; asr0: the "
          "same trigger's success on the clean model of the same seed (the part the implant did not add)")
    head = f"{'dataset':8} {'arch':6} {'kind':8} {'n':>3} {'acc':>6} {'asr':>6} {'asr0':>6} | " + " | ".join(
        f"{v:>13}" for v in verdicts) + " | s/scan"
    needs = {"FreeEagle": ("fe",)}  # the other verdicts read the NC and MM-BD rows
    print(head)
    groups = sorted({(r["dataset"], r["arch"], r["kind"]) for r in rows},
                    key=lambda g: (g[0], g[1], KIND_ORDER.index(g[2])))
    for dataset, arch, kind in groups:
        rs = [r for r in rows if (r["dataset"], r["arch"], r["kind"]) == (dataset, arch, kind)]
        acc = np.mean([r["clean_accuracy"] for r in rs])
        asr = np.mean([r["asr"] for r in rs]) if rs[0]["asr"] is not None else float("nan")
        natural = np.mean([r["asr_clean"] for r in rs]) if all("asr_clean" in r for r in rs) else float("nan")
        cells = []
        for name, fn in verdicts.items():
            if not all(k in r for r in rs for k in needs.get(name, ("nc", "mmbd"))):
                cells.append("-")
                continue
            out = [fn(r) for r in rs]
            flagged = sum(f for f, _ in out)
            right = sum(r["target"] in s for r, (f, s) in zip(rs, out) if f) if kind != "clean" else None
            cells.append(f"{flagged:>2}/{len(rs)}" + ("" if right is None else f" ({right:>2} rt)"))
        secs = np.mean([sum(r[k]["time_s"] for k in ("nc", "mmbd", "fe") if k in r) for r in rs])
        print(f"{dataset:8} {arch:6} {kind:8} {len(rs):3d} {acc:6.3f} {asr:6.3f} {natural:6.3f} | "
              + " | ".join(f"{c:>13}" for c in cells) + f" | {secs:6.1f}")


if __name__ == "__main__":
    sys.exit(main())
