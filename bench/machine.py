"""What a benchmark row ran on: the same code took ~1.5x longer on session 8's VM than on session 9's Intel Xeon
with AMX (bench/README.md), so every row names its CPU and commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Instruction sets that change which kernels torch picks (bfloat16 reward training needs one of the last two).
_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        if not line.strip():
            break
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def machine() -> dict[str, object]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        # A VM's model name can be as vague as "Intel(R) Xeon(R) Processor": the family/model numbers and the
        # instruction sets tell its generation.
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cpu_features": [feature for feature in _FEATURES if feature in flags],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": version("torch"),  # from its metadata: the driver need not import torch to say which it is
    }


def commit() -> str:
    """The short hash of the checkout the benchmark runs from ("unknown" outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
