"""Benchmark: ``advaudit repair`` on the BadNets models of ``bench_backdoor.py`` (its ``--cache``).

    OMP_NUM_THREADS=2 python benchmarks/bench_repair.py --dataset mnist --arch small --seeds 10 \\
        --cache .bench_cache

Each cached BadNets model (trained by ``bench_backdoor.py`` on MNIST test images 0-7999) is repaired
through the job API with the first 1,000 evaluation images (8000-8999) as the clean data and the
other 1,000 (9000-9999) as the evaluation data (GTSRB: :func:`clean_split`).  ``--fit-train N``
instead repairs on the first N clean training images, as Neural Cleanse does (10 % of the training
data), and evaluates on the whole evaluation split; GTSRB needs it (about 30 images per class cost
1-4 accuracy points; 3,000, about 70 per class, keep it within 2 on the calibration models):

    python benchmarks/bench_repair.py --dataset gtsrb --arch small --fit-train 3000 --cache .bench_cache

Printed per model:
clean accuracy and the attack success rate of the *real* trigger (the 4x4 checkerboard the model
was poisoned with, unknown to the repair) before and after, on the evaluation images, measured on
the exported file; after repair, the share of the same non-target images the model puts in the target
class *without* the trigger (``natural_after``: that part of the attack success rate is the model's
own confusion, which no repair of the trigger removes); the rounds run and the time.  The done-means
of the mitigation: real-trigger attack success <= 5 % with clean accuracy within 2 points.

``--implanted-targets`` repairs each model's implanted label, as if a scan had named exactly it: the
repair measured alone (the scanners' own rows are ``bench_backdoor.py``'s).

Where Neural Cleanse's own outlier test misses the backdoor (CIFAR-10's ResNet-20: its natural
classes are as easy to reach as a 4x4 patch's target), the repair takes the labels from the scan
with clean references, as ``advaudit repair --scan REPORT`` does: ``--scan-rows`` gives
``bench_backdoor.py`` rows of these models and ``--reference`` its clean reference rows, and each
model is repaired for the labels of its combined verdict against them.

    python benchmarks/bench_repair.py --dataset cifar10 --arch resnet20 --cache .bench_cache \
        --scan-rows resnet20_badnets_*.json --reference resnet20_clean_1??.json
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
for _path in (REPO, REPO / "plugins" / "advaudit-testing", REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from advaudit import api  # noqa: E402
from advaudit.models import load_model  # noqa: E402
from advaudit_testing.implants import badnets_trigger  # noqa: E402
from bench_backdoor import (  # noqa: E402
    combine, default_epochs, load_dataset, reference_models, versus_reference,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--dataset", choices=["mnist", "cifar10", "gtsrb"], default="mnist")
    ap.add_argument("--arch", default="small")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="the epochs the cached models were trained for (as bench_backdoor)")
    ap.add_argument("--cache", default=".bench_cache")
    ap.add_argument("--fit-train", type=int, metavar="N", help="repair on the first N clean training images (the "
                    "models' own training split, unstamped; Neural Cleanse's protocol: a share of the training data) "
                    "and evaluate on the whole evaluation split, instead of splitting the evaluation images")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--scan-rows", nargs="+", metavar="JSON", help="bench_backdoor.py rows of these models: repair "
                    "the labels of their combined verdict against --reference (as repair --scan REPORT)")
    ap.add_argument("--reference", nargs="+", metavar="JSON", help="with --scan-rows: clean reference rows")
    ap.add_argument("--implanted-targets", action="store_true", help="repair each model's implanted label (what a "
                    "correct scan names: measures the repair alone, without scanning every label first)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    (xtr, ytr, xte, yte), _ = load_dataset(args.dataset, Path(args.shared))
    epochs = args.epochs or default_epochs(args.dataset, args.arch)
    if args.scan_rows and args.implanted_targets:
        raise SystemExit("give --scan-rows or --implanted-targets, not both")
    found_by = scanned_targets(args) if args.scan_rows else {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_repair_"))
    if args.fit_train:
        xf, yf, xe, ye = xtr[: args.fit_train], ytr[: args.fit_train], xte, yte
    else:
        fit = clean_split(yte, args.dataset)
        xf, yf, xe, ye = xte[fit], yte[fit], xte[~fit], yte[~fit]
    np.savez(tmp / "clean.npz", x=xf, y=yf)
    np.savez(tmp / "eval.npz", x=xe, y=ye)
    scan_n = len(xf) if args.dataset == "gtsrb" else api.RepairOptions.scan_n
    trig = badnets_trigger(tuple(xte.shape[1:]))  # type: ignore[arg-type]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        path = Path(args.cache) / args.dataset / args.arch / f"badnets_{seed}_e{epochs}.pt"
        if not path.exists():
            print(f"{path} is not in the cache: run bench_backdoor.py first", file=sys.stderr)
            continue
        target = json.loads(path.with_suffix(".json").read_text())["target"]
        keep = ye != target

        def figures(p: str) -> tuple[float, float, float]:
            """Clean accuracy, real-trigger ASR, and the share of the same non-target images the model
            puts in the target class without the trigger (part of the ASR no repair removes)."""
            m = load_model(p)
            pred = m.predict(xe).labels
            return (float((pred == ye).mean()),
                    float((m.predict(trig.apply(xe[keep])).labels == target).mean()),
                    float((pred[keep] == target).mean()))

        t0 = time.perf_counter()
        out = str(tmp / f"repaired_{seed}.pt")
        if args.scan_rows and seed not in found_by:
            print(f"seed {seed}: no BadNets row in --scan-rows", file=sys.stderr)
            continue
        targets = (int(target),) if args.implanted_targets else found_by.get(seed)
        result = api.repair(api.RepairOptions(model=api.ModelOptions(path=str(path)),
                                              data=api.DataOptions(path=str(tmp / "clean.npz")),
                                              eval=api.DataOptions(path=str(tmp / "eval.npz")), out=out, seed=0,
                                              scan_n=scan_n,
                                              targets=targets))
        wall = time.perf_counter() - t0
        before = figures(str(path))
        after = figures(out) if result.repaired is not None else before
        found = list(targets) if targets is not None else result.scan["suspected_targets"]
        row = {"seed": seed, "target": target, "found": found, "rounds": len(result.rounds),
               "acc_before": before[0], "acc_after": after[0], "asr_before": before[1], "asr_after": after[1],
               "natural_before": before[2], "natural_after": after[2], "time_s": wall}
        rows.append(row)
        print(f"seed {seed}: target {target}, scan {row['found']}, {row['rounds']} round(s); clean accuracy "
              f"{before[0]:.3f} -> {after[0]:.3f} ({100 * (after[0] - before[0]):+.1f} pts); real-trigger ASR "
              f"{before[1]:.3f} -> {after[1]:.3f} (without the trigger {after[2]:.3f}); {wall:.0f} s", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    ok = [r for r in rows if r["asr_after"] <= 0.05 and r["acc_after"] >= r["acc_before"] - 0.02]
    print(f"\n{len(ok)} of {len(rows)} models: real-trigger ASR <= 5 % and clean accuracy within 2 points; "
          f"mean ASR after {np.mean([r['asr_after'] for r in rows]):.3f}, mean accuracy change "
          f"{100 * np.mean([r['acc_after'] - r['acc_before'] for r in rows]):+.2f} pts")
    return 0


def clean_split(y: np.ndarray, dataset: str) -> np.ndarray:
    """Which evaluation images repair fits on (the others measure it): the first half; on GTSRB, whose
    rarest class has 7 evaluation images, the first half of each class but at least 5 (Neural Cleanse
    reads every fitting image there: 5 per class)."""
    if dataset != "gtsrb":
        return np.arange(len(y)) < len(y) // 2
    fit = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fit[idx[: max(5, (len(idx) + 1) // 2)]] = True
    return fit


def scanned_targets(args: argparse.Namespace) -> dict[int, tuple[int, ...]]:
    """Per seed, the labels of the BadNets rows' combined verdict against the clean reference rows."""
    rows = [r for f in args.scan_rows for r in json.loads(Path(f).read_text())
            if (r["dataset"], r["arch"], r["kind"]) == (args.dataset, args.arch, "badnets")]
    refs = reference_models([r for f in args.reference or [] for r in json.loads(Path(f).read_text())])
    if (args.dataset, args.arch) not in refs:
        raise SystemExit(f"--reference has no clean {args.dataset}/{args.arch} rows (at least 5)")
    out = {}
    for r in rows:
        verdict = combine(versus_reference(r, refs, 0.05), 0.05)
        out[int(r["seed"])] = tuple(int(t) for t in verdict["suspects"]) if verdict["flagged"] else ()
    return out


if __name__ == "__main__":
    sys.exit(main())
