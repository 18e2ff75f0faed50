"""Backdoor repair by unlearning the reconstructed trigger (Neural Cleanse, Sec. VII-C).

Wang et al. 2019 mitigate a detected backdoor by fine-tuning the model on clean images of which a
share (20 % in the paper) carry the *reversed* trigger of the infected label while keeping their
true labels: the network learns that the trigger means nothing, and the attack success rate of the
real trigger falls (below 2 % on most of their models, one epoch on 10 % of the training data) with
clean accuracy within a point or two.  Here:

* every flagged label's reversed trigger is used; each stamped image gets one of them at random;
* ``ratio`` (0.2, the paper's) of each mini-batch is stamped, freshly drawn every epoch (seeded).
  A larger share lowered attack success on two CIFAR-10 calibration models (30 %: 2.9 % and 3.3 %,
  50 %: 1.9 % and 2.3 %, against 4-5 %) but cost clean accuracy: on the benchmark 50 % took GTSRB
  seed 0 and CIFAR-10 seed 7 2.2 points down and still left CIFAR-10 seed 6 at 5.7 %;
* Adam, ``lr`` 5e-4 by default, for ``epochs`` (8) passes over the clean images given; the network
  is kept in eval mode (batch-norm statistics and dropout frozen), so a small clean set does not
  shift the normalisation statistics; every row is also distilled towards the original model's
  output on its *unstamped* image (``distill``, weight 1): the clean rows keep clean accuracy, and
  the stamped rows learn not only the true label but the original's whole clean-image distribution,
  which leaves the target class no higher on a stamped image than on the clean one.  (Distilling only
  the unstamped rows, the previous rule, left CIFAR-10 calibration models 101 and 102 at about 4-5 %
  attack success; distilling every row, 2.7 % and 2.4 %.)
* Rounds (:mod:`advaudit.jobs.repair`): the trigger of every label is reversed from ``reversals``
  random starts (default 5: the scan's own and four more), since one reversed trigger covers only
  part of the real one; after each fine-tune they are reversed again on the repaired network, and
  those still smaller than ``keep_below`` (0.5) times the median label's mask norm join the set
  (larger ones are the label's natural features: unlearning them cost four GTSRB calibration models
  1.0-2.0 accuracy points, against 0.1-0.3 without them); at least ``min_rounds`` (2) run, and later ones
  only while the smallest re-reversed trigger is still smaller than the median label's (at most
  ``rounds``, 3).  One round left 12-58 % attack success on our MNIST BadNets models, the second
  brought it under 3 %; on the GTSRB and CIFAR-10 calibration models one reversal per round left
  4.8-8.7 % where three left 0-4.2 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..harden.train import trainable_copy
from ..progress import Progress, tick


@dataclass(frozen=True)
class UnlearnConfig:
    """The unlearning fine-tune's settings."""

    epochs: int = 8
    lr: float = 5e-4
    batch_size: int = 64
    ratio: float = 0.2
    distill: float = 1.0

    def check(self) -> UnlearnConfig:
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("repair: epochs and batch size must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"repair: lr must be positive, got {self.lr:g}")
        if not 0 < self.ratio < 1:
            raise UsageError(f"repair: the stamped share must be in (0, 1), got {self.ratio:g}")
        return self


@dataclass
class Unlearned:
    """The fine-tuned module and its per-epoch training loss and clean / stamped accuracy."""

    module: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)


def unlearn(
    module: torch.nn.Module,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    patterns: np.ndarray,
    *,
    config: UnlearnConfig | None = None,
    teacher: torch.nn.Module | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Unlearned:
    """Fine-tune a copy of ``module`` on ``(x, y)`` with the triggers ``(masks[i], patterns[i])``
    stamped on ``config.ratio`` of each batch, labels unchanged.  ``forward(module, x)`` maps
    canonical inputs to logits (:func:`advaudit.harden.api.model_forward`).  With ``config.distill``
    > 0 every row is also pulled towards ``teacher``'s output distribution on its unstamped image
    (default teacher: ``module``; a departure from the paper that holds clean accuracy on the small
    clean sets users have and unlearns the trigger's pull towards the target)."""
    cfg = (config or UnlearnConfig()).check()
    if len(masks) == 0:
        raise UsageError("repair: no trigger to unlearn")
    net = trainable_copy(module).eval()
    teacher = (teacher if teacher is not None else module).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    mt, pt = torch.from_numpy(np.asarray(masks, np.float32)), torch.from_numpy(np.asarray(patterns, np.float32))
    n, history = len(xt), []
    steps = cfg.epochs * (-(-n // cfg.batch_size))
    done = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        stamp_it = torch.rand(n, generator=gen) < cfg.ratio
        which = torch.randint(len(mt), (n,), generator=gen)
        total = correct = stamped_right = stamped_n = 0.0
        for start in range(0, n, cfg.batch_size):
            b = order[start : start + cfg.batch_size]
            xb, yb, sb = xt[b], yt[b], stamp_it[b]
            m, p = mt[which[b]], pt[which[b]]
            xb = torch.where(sb[:, None, None, None], (1 - m) * xb + m * p, xb)
            logits = forward(net, xb)
            loss = F.cross_entropy(logits, yb)
            if cfg.distill > 0:  # every row keeps the original's outputs on its *unstamped* image
                with torch.no_grad():
                    soft = F.softmax(forward(teacher, xt[b]), dim=1)
                kl = F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="batchmean")
                loss = loss + cfg.distill * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                hit = logits.argmax(dim=1) == yb
                total += float(loss) * len(b)
                correct += float(hit[~sb].sum())
                stamped_right += float(hit[sb].sum())
                stamped_n += float(sb.sum())
            done += 1
            tick(progress, "unlearning", done, steps)
        clean_n = n - stamped_n
        history.append({"epoch": epoch + 1, "loss": total / n,
                        "clean_accuracy": correct / clean_n if clean_n else float("nan"),
                        "stamped_accuracy": stamped_right / stamped_n if stamped_n else float("nan")})
    for p in params:
        p.requires_grad_(False)
    return Unlearned(net.eval(), history)
