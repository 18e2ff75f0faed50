"""Benchmark: the STRIP detector on the backdoored sample models (and a clean one as a control).

    python benchmarks/bench_strip.py
    python benchmarks/bench_strip.py --n 200 --overlays 32

For each model: STRIP is built on clean images 0..n-1 (the overlay pool and the entropy threshold at
a 1% false rejection rate); then images n..2n-1 are tested clean and stamped with the model's trigger
(``sample_models/data/<model>_trigger.npz``: mask, pattern, target; images of the target class are
left out of the stamped set).  Prints the trigger's attack success rate, AUROC of the (negated)
entropy, the false rejection rate on clean inputs, the false acceptance rate on trojaned inputs and
the time per input.  On the clean control model the trigger does nothing, so STRIP should flag about
as many stamped inputs as clean ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from advaudit.data import load_data, prepare
from advaudit.detect.lcr import auroc
from advaudit.detect.strip import STRIPDetector
from advaudit.models import load_model

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
MODELS = {
    # model file, data file, trigger file
    "mnist_badnets": ("mnist_badnets.onnx", "mnist_test_1k.npz", "mnist_badnets_trigger.npz"),
    "mnist_concealed_recon": ("mnist_concealed_recon.onnx", "mnist_test_1k.npz", "mnist_concealed_recon_trigger.npz"),
    "mnist_concealed_random": (
        "mnist_concealed_random.onnx", "mnist_test_1k.npz", "mnist_concealed_random_trigger.npz"),
    "gtsrb_badnets": ("gtsrb_badnets.onnx", "gtsrb_test_1k.npz", "gtsrb_badnets_trigger.npz"),
    "mnist_cnn (clean control)": ("mnist_cnn.onnx", "mnist_test_1k.npz", "mnist_badnets_trigger.npz"),
}


def stamp(x: np.ndarray, trigger: dict) -> np.ndarray:
    mask, pattern = trigger["mask"], trigger["pattern"]
    return (x * (1 - mask) + pattern * mask).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images for building STRIP, and again for testing")
    ap.add_argument("--overlays", type=int, default=64)
    ap.add_argument("--frr", type=float, default=0.01)
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    args = ap.parse_args(argv)
    head = f"{'model':<28} {'target':>6} {'ASR':>6} {'AUROC':>7} {'FRR':>6} {'FAR':>6} {'ms/input':>9}"
    rows = []
    for name, (model_file, data_file, trigger_file) in MODELS.items():
        path = args.samples / model_file
        if not path.exists():
            print(f"note: {path} not found; skipped", file=sys.stderr)
            continue
        model = load_model(path)
        data = prepare(load_data(args.samples / "data" / data_file, n=2 * args.n), model)
        with np.load(args.samples / "data" / trigger_file) as z:
            trigger = {k: z[k] for k in z.files}
        target = int(trigger["target"])
        build, test_x, test_y = data.x[: args.n], data.x[args.n :], data.y[args.n :]
        strip = STRIPDetector(overlays=args.overlays, frr=args.frr)
        cal = strip.calibrate(model, build, None, seed=0)
        trojan = stamp(test_x[test_y != target], trigger)
        asr = float((model.predict(trojan).labels == target).mean())
        clean_r, troj_r = strip.decide(model, cal, test_x), strip.decide(model, cal, trojan)
        ms = 1000 * (clean_r.time_s + troj_r.time_s) / (len(test_x) + len(trojan))
        rows.append(
            f"{name:<28} {target:>6} {asr:>6.3f} {auroc(clean_r.score, troj_r.score):>7.4f} "
            f"{clean_r.flagged.mean():>6.3f} {1 - troj_r.flagged.mean():>6.3f} {ms:>9.2f}"
        )
        print(rows[-1], flush=True)
    print(f"\nSTRIP, {args.overlays} overlays, threshold at FRR {args.frr:g} on {args.n} clean images; "
          f"tested on {args.n} clean and the stamped non-target ones")
    print(head)
    print("-" * len(head))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
