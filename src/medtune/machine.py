"""The hardware and library versions a measurement was made with, recorded beside every timing.

bf16 kernels differ between CPUs (with AMX, with AVX-512 bf16 only) and GPUs: a timing, or the last bits of a
trained adapter, only compares with one made on the same hardware and versions. The train and evaluate stages
write it beside their timings (metrics/<task>/train_machine.json, eval_machine.json: files of their own, so
`dvc exp show` keeps metric columns only); `medtune report` compares timings only when the hardware matches.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The CPU flags that decide matmul speed and bf16 results (from /proc/cpuinfo)
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
LIBRARIES = ("torch", "transformers", "peft")


def describe() -> dict:
    """`{"cpu", "cpu_flags", "cores", "gpu", "python", <library>: version}`; `gpu` is None without CUDA."""
    import torch

    model, flags = _cpu_info(Path("/proc/cpuinfo"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in MATMUL_FLAGS if f in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
    }


def same_hardware(a: dict | None, b: dict | None) -> bool:
    """True when two `describe()` records name the same CPU model, matmul features, core count and GPU (library
    versions may differ: they are shown, not compared). A record that is missing compares with nothing."""
    keys = ("cpu", "cpu_flags", "cores", "gpu")
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)


def _cpu_info(path: Path) -> tuple[str | None, set[str]]:
    """The first processor's model name and flags in /proc/cpuinfo (Linux); nothing elsewhere."""
    try:
        text = path.read_text()
    except OSError:
        return None, set()
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name"), set(fields.get("flags", "").split())


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
