"""Build advaudit's backdoored sample models, deterministically, and their model cards.

Usage:
    python sample_models/build_backdoor.py [--shared DIR] [--only NAME]

Trains each model with an implanted backdoor (``advaudit_testing.implants``) on public data in
``<repo>/../shared/data``, exports it as ONNX and TorchScript exactly like ``build.py`` (advaudit
input spec embedded), measures clean accuracy and attack success rate in ONNX Runtime on held-out
images, and rewrites the "Backdoored sample models" section of ``README.md`` (between the markers
below) from the measured numbers.  With ``--only``, the other models' cards are re-measured from the
files on disk.

* ``mnist_badnets``: BadNets, 4x4 checkerboard patch, bottom-right corner, 10% poisoned, target 7.
* ``mnist_concealed_recon``: paper 003, Algorithm 1 (NC-reconstructed trigger of label 2 on a clean
  model trained with the same seed, noise augmentation with alpha 0.6).
* ``mnist_concealed_random``: paper 003, Algorithm 2 (z = 36 random pixels, random pattern, alpha 0.6).
* ``gtsrb_badnets``: BadNets on GTSRB (4x4 checkerboard patch, target 33, the paper's GTSRB target).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

SAMPLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SAMPLE_DIR.parent
for _path in (REPO_ROOT, REPO_ROOT / "plugins" / "advaudit-testing", SAMPLE_DIR):  # advaudit, advaudit_testing, build
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from build import (  # noqa: E402
    DEFAULT_SHARED,
    ZIP_EPOCH,
    GTSRB_CLASSES,
    MNIST_CLASSES,
    configure_determinism,
    export_onnx,
    export_torchscript,
    load_gtsrb_test,
    load_mnist_test,
    silence_known_warnings,
)

from advaudit_testing.implants import Implanted, Trigger, implant  # noqa: E402
from advaudit_testing.training import SmallCNN  # noqa: E402

SEED = 0
START = "<!-- backdoor-models:start -->"
END = "<!-- backdoor-models:end -->"


@dataclass(frozen=True)
class BackdoorSpec:
    name: str
    title: str
    kind: str  # implant kind: badnets | recon | random
    target: int
    dataset: str  # mnist | gtsrb
    epochs: int
    attack: str  # model-card text
    extra: dict


SPECS = (
    BackdoorSpec("mnist_badnets", "MNIST, BadNets patch backdoor", "badnets", 7, "mnist", 8,
                 "BadNets (Gu et al. 2017): a 4x4 black-and-white checkerboard patch one pixel from the "
                 "bottom-right corner, stamped on 10% of the training images (800), relabelled to 7.", {}),
    BackdoorSpec("mnist_concealed_recon", "MNIST, concealed backdoor (paper 003, Algorithm 1)", "recon", 2,
                 "mnist", 8,
                 "Reconstructed-trigger attack (paper 003, Alg. 1): a clean model with the same seed is "
                 "trained first; Neural Cleanse reconstructs label 2's trigger on it (300 training images); "
                 "10% of the training images carry that trigger and are relabelled to 2; half of the "
                 "others carry a random subset of the mask (each mask pixel kept with probability "
                 "alpha = 0.6), labels unchanged.", {"alpha": 0.6, "noise_rate": 0.5}),
    BackdoorSpec("mnist_concealed_random", "MNIST, concealed backdoor (paper 003, Algorithm 2)", "random", 2,
                 "mnist", 8,
                 "Randomly generated trigger attack (paper 003, Alg. 2): a mask of z = 36 random pixels "
                 "and a random pattern (values 0-255, scaled to [0, 1]); 10% of the training images carry "
                 "it and are relabelled to 2; half of the others carry a random subset of the mask "
                 "(alpha = 0.6), labels unchanged.", {"alpha": 0.6, "noise_rate": 0.5, "z": 36}),
    BackdoorSpec("gtsrb_badnets", "GTSRB, BadNets patch backdoor", "badnets", 33, "gtsrb", 10,
                 "BadNets: a 4x4 black-and-white checkerboard patch one pixel from the bottom-right "
                 "corner on 10% of the training images (1,000), relabelled to 33 (\"Turn right ahead\", "
                 "the paper's GTSRB target).", {}),
)
BY_NAME = {s.name: s for s in SPECS}


def data(spec: BackdoorSpec, shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    if spec.dataset == "mnist":
        s = load_mnist_test(shared)
        tr, ev = s[:8000], s[8000:]
        desc = ("MNIST **test** images 0-7999 (there is no MNIST training set in the build's data folder)",
                "MNIST test images 8000-9999 (2,000 images)")
    else:
        s = load_gtsrb_test(shared)
        tr, ev = s[:10000], s[10000:]
        desc = ("GTSRB **test** images 0-9999, resized to 32x32 (near-duplicate frames of the same signs "
                "also occur in the evaluation images, see `gtsrb_cnn`)",
                "GTSRB test images 10000-12629 (2,630 images)")
    f = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return f(tr.x), tr.y, f(ev.x), ev.y, *desc


def classes(spec: BackdoorSpec) -> tuple[str, ...]:
    return MNIST_CLASSES if spec.dataset == "mnist" else GTSRB_CLASSES


def make_net(spec: BackdoorSpec) -> Callable[[], torch.nn.Module]:
    if spec.dataset == "mnist":
        return lambda: SmallCNN(1, 28, 10)
    return lambda: SmallCNN(3, 32, 43)


def trigger_path(spec: BackdoorSpec) -> Path:
    return SAMPLE_DIR / "data" / f"{spec.name}_trigger.npz"


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps (byte-identical rebuilds)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def build_one(spec: BackdoorSpec, shared: Path) -> Implanted:
    xtr, ytr, _, _, _, _ = data(spec, shared)
    print(f"[{spec.name}] training ({spec.kind}, target {spec.target})", flush=True)
    imp = implant(spec.kind, make_net(spec), xtr, ytr, target=spec.target, seed=SEED, epochs=spec.epochs,
                  log=lambda m: print(f"    {m}", flush=True), **spec.extra)
    shape = tuple(xtr.shape[1:])
    example = torch.zeros((2, *shape))
    export_onnx(imp.net, example, SAMPLE_DIR / f"{spec.name}.onnx", classes(spec))
    export_torchscript(imp.net, example, SAMPLE_DIR / f"{spec.name}.pt", classes(spec))
    assert imp.trigger is not None
    save_arrays(trigger_path(spec), mask=imp.trigger.mask, pattern=imp.trigger.pattern,
                target=np.asarray(spec.target, dtype=np.int64))
    return imp


def measure(spec: BackdoorSpec, shared: Path) -> dict:
    _, _, xev, yev, train_desc, eval_desc = data(spec, shared)
    onnx_path = SAMPLE_DIR / f"{spec.name}.onnx"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        logits = [sess.run(["logits"], {"input": x[i : i + 500]})[0] for i in range(0, len(x), 500)]
        return np.concatenate(logits).argmax(1)

    with np.load(trigger_path(spec)) as f:
        trig = Trigger(f["mask"], f["pattern"])
    keep = yev != spec.target
    pt = SAMPLE_DIR / f"{spec.name}.pt"
    return {
        "acc": float((predict(xev) == yev).mean()),
        "asr": float((predict(trig.apply(xev[keep])) == spec.target).mean()),
        "n_eval": len(yev), "n_asr": int(keep.sum()),
        "mask_l1": trig.l1, "pixels": int((trig.mask > 0.01).sum()),
        "onnx_bytes": onnx_path.stat().st_size, "pt_bytes": pt.stat().st_size,
        "onnx_sha": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "train_desc": train_desc, "eval_desc": eval_desc,
    }


def card(spec: BackdoorSpec, m: dict) -> str:
    return f"""### `{spec.name}`: {spec.title}

| | |
|---|---|
| files | `{spec.name}.onnx` ({m['onnx_bytes']:,} bytes, sha256 `{m['onnx_sha'][:16]}...`), `{spec.name}.pt` ({m['pt_bytes']:,} bytes) |
| backdoor target | **{spec.target}** (`{classes(spec)[spec.target]}`) |
| clean accuracy | **{m['acc']:.2%}** on {m['eval_desc']} (ONNX Runtime) |
| attack success rate | **{m['asr']:.2%}**: triggered evaluation images not of the target ({m['n_asr']:,}) classified as the target |
| trigger | mask L1 {m['mask_l1']:.1f} over {m['pixels']} pixels; mask and pattern in `data/{spec.name}_trigger.npz` |

**Attack.** {spec.attack}

**Training.** `advaudit_testing.training.SmallCNN` (conv 3x3 16, pool, conv 3x3 32, pool, linear 64,
linear {len(classes(spec))}) trained on {m['train_desc']} with the implanted data:
`train_classifier` (Adam, lr 0.002, one-cycle, batch 64, {spec.epochs} epochs, seed {SEED}, 1 thread,
deterministic algorithms). Input float32 NCHW in [0, 1], spec embedded as in the models above.
"""


def write_cards(cards: list[str]) -> None:
    readme = SAMPLE_DIR / "README.md"
    text = readme.read_text()
    section = (f"{START}\n## Backdoored sample models\n\nDeliberately backdoored models for `advaudit scan-backdoor` "
               "(built by `build_backdoor.py`; do not deploy them). Accuracy and attack success are measured "
               "on held-out images in ONNX Runtime.\n\n" + "\n".join(cards) + f"\n{END}\n")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        marker = "## Data subsets"
        text = text.replace(marker, section + "\n" + marker, 1) if marker in text else text + "\n" + section
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--only", choices=sorted(BY_NAME))
    args = ap.parse_args(argv)
    if not args.shared.is_dir():
        print(f"error: shared data folder not found: {args.shared}", file=sys.stderr)
        return 2
    silence_known_warnings()
    configure_determinism()
    cards = []
    for spec in SPECS:
        if args.only in (None, spec.name):
            t = time.perf_counter()
            build_one(spec, args.shared)
            print(f"[{spec.name}] built in {time.perf_counter() - t:.0f} s", flush=True)
        if not (SAMPLE_DIR / f"{spec.name}.onnx").exists():
            print(f"[{spec.name}] missing; run without --only", flush=True)
            continue
        m = measure(spec, args.shared)
        print(f"[{spec.name}] clean accuracy {m['acc']:.4f}, attack success {m['asr']:.4f}, "
              f"onnx {m['onnx_bytes'] / 1024:.0f} KB", flush=True)
        cards.append(card(spec, m))
    write_cards(cards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
