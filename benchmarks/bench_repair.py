"""Benchmark: ``advaudit repair`` on the BadNets models of ``bench_backdoor.py`` (its ``--cache``).

    OMP_NUM_THREADS=2 python benchmarks/bench_repair.py --dataset mnist --arch small --seeds 10 \\
        --cache .bench_cache

Each cached BadNets model (trained by ``bench_backdoor.py`` on MNIST test images 0-7999) is repaired
through the job API with the first 1,000 evaluation images (8000-8999) as the clean data and the
other 1,000 (9000-9999) as the evaluation data.  Printed per model: clean accuracy and the attack
success rate of the *real* trigger (the 4x4 checkerboard the model was poisoned with, unknown to
the repair) before and after, on the evaluation images, measured on the exported file; the rounds
run and the time.  The done-means of the mitigation: real-trigger attack success <= 5 % with clean
accuracy within 2 points.
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
from bench_backdoor import load_dataset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--dataset", choices=["mnist", "cifar10", "gtsrb"], default="mnist")
    ap.add_argument("--arch", default="small")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="the epochs the cached models were trained for (as bench_backdoor)")
    ap.add_argument("--cache", default=".bench_cache")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    (_, _, xte, yte), _ = load_dataset(args.dataset, Path(args.shared))
    epochs = args.epochs or (6 if args.dataset == "mnist" else 12)
    tmp = Path(tempfile.mkdtemp(prefix="bench_repair_"))
    half = len(xte) // 2
    np.savez(tmp / "clean.npz", x=xte[:half], y=yte[:half])
    np.savez(tmp / "eval.npz", x=xte[half:], y=yte[half:])
    xe, ye = xte[half:], yte[half:]
    trig = badnets_trigger(tuple(xte.shape[1:]))  # type: ignore[arg-type]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        path = Path(args.cache) / args.dataset / args.arch / f"badnets_{seed}_e{epochs}.pt"
        if not path.exists():
            print(f"{path} is not in the cache: run bench_backdoor.py first", file=sys.stderr)
            continue
        target = json.loads(path.with_suffix(".json").read_text())["target"]
        keep = ye != target

        def figures(p: str) -> tuple[float, float]:
            m = load_model(p)
            return (float((m.predict(xe).labels == ye).mean()),
                    float((m.predict(trig.apply(xe[keep])).labels == target).mean()))

        t0 = time.perf_counter()
        out = str(tmp / f"repaired_{seed}.pt")
        result = api.repair(api.RepairOptions(model=api.ModelOptions(path=str(path)),
                                              data=api.DataOptions(path=str(tmp / "clean.npz")),
                                              eval=api.DataOptions(path=str(tmp / "eval.npz")), out=out, seed=0))
        wall = time.perf_counter() - t0
        before = figures(str(path))
        after = figures(out) if result.repaired is not None else before
        row = {"seed": seed, "target": target, "found": result.scan["suspected_targets"], "rounds": len(result.rounds),
               "acc_before": before[0], "acc_after": after[0], "asr_before": before[1], "asr_after": after[1],
               "time_s": wall}
        rows.append(row)
        print(f"seed {seed}: target {target}, scan {row['found']}, {row['rounds']} round(s); clean accuracy "
              f"{before[0]:.3f} -> {after[0]:.3f} ({100 * (after[0] - before[0]):+.1f} pts); real-trigger ASR "
              f"{before[1]:.3f} -> {after[1]:.3f}; {wall:.0f} s", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    ok = [r for r in rows if r["asr_after"] <= 0.05 and r["acc_after"] >= r["acc_before"] - 0.02]
    print(f"\n{len(ok)} of {len(rows)} models: real-trigger ASR <= 5 % and clean accuracy within 2 points; "
          f"mean ASR after {np.mean([r['asr_after'] for r in rows]):.3f}, mean accuracy change "
          f"{100 * np.mean([r['acc_after'] - r['acc_before'] for r in rows]):+.2f} pts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
