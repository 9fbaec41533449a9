"""What this CPU is and what it runs natively, from /proc/cpuinfo (Linux; elsewhere: the model name only, no flags).

`torch.backends.cpu.get_cpu_capability()` names the vector width torch dispatches to (AVX2, AVX512), not bf16
support, so bf16 is read from the flags: AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX-BF16 (Sapphire
Rapids and later). Without them torch emulates bf16, slower than fp32.
"""

from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its feature flags (empty where /proc/cpuinfo cannot be read)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = value
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), frozenset(flags.split())


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_model_and_flags()[1] for flag in BF16_FLAGS)
