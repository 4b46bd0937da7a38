"""Whether this CPU runs bf16 natively, decided in one place for every CPU trainer and bank builder.

Why: bf16 autocast halves a step on a CPU with AVX512-BF16 or AMX (the dev machine of RESULTS 1h),
but on a CPU without them (AVX2 only) PyTorch emulates it, and a feature-bank view that took
~100 s took more than 20 minutes. So ``--amp-dtype bf16`` and the bank's augmented views use
bf16 only where oneDNN reports native support, and fp32 elsewhere (what the bank records).
"""

from __future__ import annotations

import torch


def native_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_amp(requested: str) -> str:
    """``requested`` ("bf16", "fp16", "none") as the CPU will run it: bf16 only when native, else "none"."""
    return "bf16" if requested == "bf16" and native_bf16() else "none"
