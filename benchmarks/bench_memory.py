"""Benchmark: peak memory (RSS) of ``advaudit attack`` and ``advaudit detect`` against the data size.

    python benchmarks/bench_memory.py                          # attack at N = 1000 / 5000 / 10000, detect at 1k / 10k
    python benchmarks/bench_memory.py --n 1000 --n 10000 --skip-detect
    python benchmarks/bench_memory.py --json out/memory.json   # also write the figures

Each command runs as its own process (``nice -n 10`` unless ``--no-nice``); its peak resident set
size is the ``ru_maxrss`` that ``os.wait4`` reports for that child alone.  Commands:

* attack: ``advaudit attack sample_models/cifar10_resnet20.onnx --data DATA --suite quick --eps 0.0314
  --n N --format json`` (DATA: ``../shared/data/cifar10/cifar10_test_10k_jpeg_q75.npz``, uint8
  10000x3x32x32 in a compressed .npz), for every ``--n``; the JSON report goes to
  ``OUT/attack_N.stdout.json`` (``--out``), and with ``--report`` also to ``OUT/attack_N.json``;
* detection: ``advaudit detect calibrate`` on 200 images (not measured), then ``advaudit detect MODEL
  --inputs DATA --calibration calib.json --n N --max-mutations M`` for N = the smallest and largest
  ``--n`` (``--detect-max-mutations``, default 16, keeps the 10k run to a few minutes on two cores:
  each input still gets the full SPRT unless it needs more mutations than that).

Printed: one row per command (N, peak RSS in MiB, wall seconds) and the growth ratio peak(largest N) /
peak(smallest N).  The goal of issue 18 is a ratio of at most 1.2 for the attack: memory follows the
batch size, not the data size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "cifar10_resnet20.onnx"
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_test_10k_jpeg_q75.npz"


def peak_rss(cmd: list[str], nice: bool, stdout: Path | None = None) -> tuple[float, float, int]:
    """Run ``cmd`` (its stdout to ``stdout``, if given); return (peak RSS of that process in MiB, wall
    seconds, exit code)."""
    full = (["nice", "-n", "10"] if nice else []) + cmd
    start = time.perf_counter()
    with open(stdout or os.devnull, "wb") as sink:
        proc = subprocess.Popen(full, stdout=sink, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return usage.ru_maxrss / 1024.0, elapsed, proc.returncode  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, action="append", help="Data sizes (repeatable; default 1000, 5000, 10000).")
    ap.add_argument("--eps", default="0.0314")
    ap.add_argument("--skip-attack", action="store_true")
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--detect-max-mutations", type=int, default=16)
    ap.add_argument("--report", action="store_true",
                    help="Also give the attack --report (which keeps a --resume checkpoint beside it).")
    ap.add_argument("--no-nice", action="store_true")
    ap.add_argument("--json", help="Also write the figures to this file.")
    ap.add_argument("--out", help="Folder for reports (default: a temporary folder).")
    args = ap.parse_args(argv)
    sizes = sorted(args.n or [1000, 5000, 10000])
    exe = [sys.executable, "-m", "advaudit"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not args.skip_attack:
            for n in sizes:
                cmd = [*exe, "-q", "attack", args.model, "--data", args.data, "--suite", "quick", "--eps", args.eps,
                       "--n", str(n), "--format", "json", *(["--report", str(out / f"attack_{n}.json")] * args.report)]
                rss, wall, rc = peak_rss(cmd, not args.no_nice, out / f"attack_{n}.stdout.json")
                rows.append({"what": "attack", "n": n, "peak_rss_mib": rss, "wall_s": wall, "exit": rc})
                print(f"attack  n={n:>6}  peak RSS {rss:8.1f} MiB  {wall:7.1f} s  exit {rc}", flush=True)
        if not args.skip_detect:
            calib = out / "calib.json"
            subprocess.run([*exe, "-q", "detect", "calibrate", args.model, "--data", args.data, "--n", "200",
                            "--out", str(calib)], check=True, stdout=subprocess.DEVNULL)
            for n in sorted({sizes[0], sizes[-1]}):
                cmd = [*exe, "-q", "detect", args.model, "--inputs", args.data, "--calibration", str(calib),
                       "--n", str(n), "--max-mutations", str(args.detect_max_mutations),
                       "--report", str(out / f"detect_{n}.json"), "--format", "json"]
                rss, wall, rc = peak_rss(cmd, not args.no_nice)
                rows.append({"what": "detect", "n": n, "peak_rss_mib": rss, "wall_s": wall, "exit": rc})
                print(f"detect  n={n:>6}  peak RSS {rss:8.1f} MiB  {wall:7.1f} s  exit {rc}", flush=True)
    ratios = {}
    for what in ("attack", "detect"):
        mine = [r for r in rows if r["what"] == what]
        if len(mine) >= 2:
            ratios[what] = mine[-1]["peak_rss_mib"] / mine[0]["peak_rss_mib"]
            print(f"{what}: growth {mine[-1]['n']}/{mine[0]['n']} = {ratios[what]:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "growth": ratios}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
