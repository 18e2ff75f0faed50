"""Benchmark: Neural Cleanse on a 1000-class model, with label selection against the full per-label scan.

    OMP_NUM_THREADS=2 python benchmarks/bench_many_labels.py --cache .bench_cache [--full]

There is no 1000-class data set here, so the model learns a synthetic one: each class is a fixed
random low-frequency colour template (8x8 noise upsampled to 32x32), each image its class template
plus Gaussian noise (sd 0.15) and a random brightness shift, clipped to [0, 1]; 24 images per class
for training, 5 per class for the scan (what Neural Cleanse asks for).  The network is a compact
CNN (three 3x3 conv blocks 32-64-128, global average pooling, dense 1000).  A BadNets trigger (4x4
checkerboard, bottom-right) sends 10 % of the training images to the target label.  The script
prints the model's clean accuracy and attack success, then scans it with the default schedule
(warm-up of every label, then the candidates and random references in full;
:mod:`advaudit.backdoor.labels`) and, with ``--full``, with every label searched with the full
schedule (64 labels per batch) and the gap test on all 1000 norms: wall time, labels optimised,
verdict, target found.  ``--full-batches N`` runs only the first N batches of the full scan and
prints the measured time per label and its extrapolation to all 1000 labels (labelled as such).
``--checkpoint DIR`` keeps each finished batch (norms, wall time) so a killed full scan resumes, and
two runs on one folder (one thread each) share the batches; the wall time is then the sum of the
batches' own times.
``--scanners freeeagle`` (or ``nc,freeeagle``, the default) also runs the data-free FreeEagle scanner
on an ONNX copy of the model: wall time, verdict, top class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "plugins" / "advaudit-testing"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from advaudit.backdoor import NeuralCleanse  # noqa: E402
from advaudit.backdoor.freeeagle import FreeEagle  # noqa: E402
from advaudit.backdoor.mad import gap_test  # noqa: E402
from advaudit.backdoor.neural_cleanse import reconstruct_triggers  # noqa: E402
from advaudit.models import load_model  # noqa: E402
from advaudit_testing.implants import attack_success_rate, badnets_trigger, poison  # noqa: E402
from advaudit_testing.training import onnx_copy, predict_labels, save_torchscript, train_classifier  # noqa: E402

CLASSES, SIDE, TARGET = 1000, 32, 123


def synthetic(per_class: int, seed: int, templates: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(CLASSES).repeat_interleave(per_class)
    x = templates[y] + 0.15 * torch.randn((len(y), 3, SIDE, SIDE), generator=gen)
    x = x + 0.1 * (torch.rand((len(y), 1, 1, 1), generator=gen) - 0.5)
    return x.clamp(0, 1).numpy().astype(np.float32), y.numpy()


def net() -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, CLASSES))


def build(cache: Path, epochs: int) -> tuple[str, np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(0)
    templates = F.interpolate(torch.rand((CLASSES, 3, 8, 8), generator=gen), size=SIDE, mode="bilinear",
                              align_corners=False)
    xtr, ytr = synthetic(24, 1, templates)
    xte, yte = synthetic(5, 2, templates)  # Neural Cleanse asks for 5 clean images of every class
    path, meta = cache / f"synthetic1000_badnets_e{epochs}.pt", cache / f"synthetic1000_badnets_e{epochs}.json"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        trig = badnets_trigger((3, SIDE, SIDE), size=4)
        ps = poison(xtr, ytr, trig, TARGET, poison_rate=0.1, seed=0)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = train_classifier(net(), ps.x, ps.y, epochs=epochs, batch_size=128, lr=3e-3, seed=0)
        acc = float((predict_labels(model, xte) == yte).mean())
        asr = attack_success_rate(lambda a: predict_labels(model, a), xte, yte, trig, TARGET)
        save_torchscript(model, str(path), (3, SIDE, SIDE))
        meta.write_text(json.dumps({"clean_accuracy": acc, "asr": asr, "train_s": time.perf_counter() - t0}))
    print(f"model: {json.loads(meta.read_text())}", flush=True)
    return str(path), xte, yte


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=".bench_cache")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--full", action="store_true", help="also run the full per-label scan")
    ap.add_argument("--full-batches", type=int, help="with --full: only the first N batches of 64 labels, and "
                                                     "the measured time per label extrapolated to all labels")
    ap.add_argument("--checkpoint", help="with --full: a folder that keeps each finished batch's norms and wall "
                                         "time; a rerun skips them, and runs sharing the folder share the batches")
    ap.add_argument("--scanners", default="nc,freeeagle", help="nc (selection scan) and/or freeeagle")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    path, xs, ys = build(Path(args.cache), args.epochs)
    scanners = args.scanners.split(",")
    if "freeeagle" in scanners:
        fe = FreeEagle().scan(load_model(onnx_copy(path, (3, SIDE, SIDE))), None, None, seed=0)
        ev = fe.evidence
        print(f"freeeagle: {fe.time_s:.0f} s wall, verdict {fe.verdict}, top class {ev['top_class']} (implanted "
              f"{TARGET}), metric {ev['anomaly_metric']:.2f}, p {ev['p_value']:.3g}, cut {ev['cut']}", flush=True)
    if "nc" in scanners:
        selection(path, xs, ys)
    if args.full:
        full(path, xs, args.full_batches, args.checkpoint)
    return 0


def selection(path: str, xs: np.ndarray, ys: np.ndarray) -> None:
    model = load_model(path)
    t0 = time.perf_counter()
    r = NeuralCleanse().scan(model, xs, ys, seed=0)
    ev = r.evidence
    print(f"selection: {time.perf_counter() - t0:.0f} s wall, {len(ev['labels']['optimised'])} labels optimised in "
          f"full after a warm-up of all {CLASSES}; verdict {r.verdict}, suspects {r.suspected_targets} (implanted "
          f"{TARGET}), p {ev['p_value']:.3g}, smallest mask {ev['largest_norm_ratio']:.1f}x below the median",
          flush=True)


def _claim(folder: Path, start: int) -> bool:
    """Take batch ``start`` for this process (a lock file with our pid); a dead process's lock is taken over."""
    lock = folder / f"batch_{start}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or "0"), 0)
                return False  # another live run is on it
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def full(path: str, xs: np.ndarray, batches: int | None, checkpoint: str | None = None) -> None:
    """Every label searched with the full schedule, 64 labels per batch (bounded memory).

    With ``checkpoint`` (a folder), each finished batch's norms and wall time are kept there as
    ``batch_START.json`` and a rerun skips them; several runs on one folder share the batches (each
    claims one with a lock file). The reported wall time is the sum of the batches' own times."""
    model = load_model(path)
    xt = torch.from_numpy(xs)
    folder = Path(checkpoint) if checkpoint else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        owner = folder / "model.txt"  # the batches of one model only
        if owner.exists() and owner.read_text() != Path(path).name:
            raise SystemExit(f"{folder} holds batches of {owner.read_text()}, not {Path(path).name}: "
                             "use another --checkpoint folder")
        owner.write_text(Path(path).name)
    done: dict[int, dict[str, Any]] = {}
    starts = list(range(0, CLASSES, 64))[:batches]
    for start in starts:
        out = None
        if folder is not None:
            out = folder / f"batch_{start}.json"
            if out.exists() or not _claim(folder, start):
                continue
        t0 = time.perf_counter()
        rec = reconstruct_triggers(model.logits, xt, list(range(start, min(start + 64, CLASSES))),
                                   generator=torch.Generator().manual_seed(start))
        done[start] = {"l1": [float(v) for v in rec.l1], "wall_s": time.perf_counter() - t0}
        if out is not None:  # written whole or not at all: a kill mid-write must not leave a batch to skip
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(done[start]))
            tmp.replace(out)
            out.with_suffix(".lock").unlink(missing_ok=True)
        print(f"  full: labels {start}-{start + len(rec.l1) - 1} done in {done[start]['wall_s']:.0f} s", flush=True)
    if folder is not None:
        done = {s: json.loads((folder / f"batch_{s}.json").read_text()) for s in starts
                if (folder / f"batch_{s}.json").exists()}
        if len(done) < len(starts):
            print(f"full: {len(done)} of {len(starts)} batches in {folder}; the others are still running elsewhere "
                  "or were cut off (rerun to finish them)", flush=True)
            return
    l1 = np.concatenate([np.asarray(done[s]["l1"]) for s in starts])
    wall = float(sum(float(done[s]["wall_s"]) for s in starts))
    if len(l1) < CLASSES:
        print(f"full (first {len(l1)} labels only): {wall:.0f} s wall, {wall / len(l1):.1f} s per label; "
              f"extrapolated to {CLASSES} labels: {wall / len(l1) * CLASSES:.0f} s (not measured)", flush=True)
        return
    gap = gap_test(l1)
    print(f"full: {wall:.0f} s wall (sum of {len(starts)} batches), {CLASSES} labels optimised; smallest norm label "
          f"{int(np.argmin(l1))} (implanted {TARGET}), flagged {np.flatnonzero(gap.flagged).tolist()}, "
          f"p {gap.p_value:.3g}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
