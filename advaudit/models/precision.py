"""Numeric precision of the attack *search* (never of verification).

Gradient attacks (PGD, APGD) and Square spend nearly all their time in forward and backward passes
whose results only steer the search: which direction to step, which proposal to keep.  On hardware
with native bfloat16 arithmetic (x86 CPUs with AVX512-BF16 or AMX, recent NVIDIA GPUs) a bfloat16,
channels-last copy of the network does that work 1.5-2.5x faster.  Nothing is *decided* in reduced
precision: every row that the bf16 search thinks is adversarial is re-scored in float32 before the
attack treats it as fooled (:meth:`advaudit.models.Model.search_logits`), and every returned example
is verified in the deployment runtime as always.

Precisions: ``fp32`` (the model's own float32 path), ``bf16``, and ``auto`` (bf16 where the device
has native bf16 arithmetic and the bf16 copy agrees with float32 on a probe batch, else fp32).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
AGREEMENT_TOL = 0.05
"""Largest |bf16 - fp32| output difference on the probe batch, relative to max(1, |fp32| max)."""


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return False


def resolve(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device``; the others unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
