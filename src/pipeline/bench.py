"""Helpers for the benchmarks in ``benchmarks/``: machine description and JSON output.

Benchmarks are measurements, not tests: they write ``results/benchmarks/<name>.json`` with flat
keys that say what was measured and in which unit, plus the machine they ran on.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.io import write_json


def machine() -> dict:
    """Cores, CPU model, memory and GPU (if any) of this machine."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "machine_cores": os.cpu_count(),
        "machine_cpu": cpu,
        "machine_python": platform.python_version(),
        "machine_platform": platform.platform(),
    }
    try:
        import psutil

        info["machine_memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["machine_gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["machine_gpu"] = "unknown"
    return info


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call [s] and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def write_result(path: str | os.PathLike, name: str, figures: dict) -> dict:
    """Write the figures with the machine description to ``path`` as JSON and print them."""
    out = {"benchmark": name, "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           **machine(), **figures}
    write_json(path, out)
    width = max(map(len, out))
    for key, value in out.items():
        print(f"{key:{width}s} {value}")
    return out
