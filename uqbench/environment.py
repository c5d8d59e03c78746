"""Package versions and machine facts recorded with every run, so a table can be reproduced."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

import torch

PACKAGES = ("uqbench", "torch", "torchvision", "pyro-ppl", "numpy", "scikit-learn", "pandas", "ray")


def package_versions() -> dict[str, str]:
    """Installed version of each package that shapes results ("absent" when not installed)."""
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> dict[str, str | int]:
    """CPU model, core count, memory and GPU (if any) of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(mem_gb, 1),
        "gpu": gpu,
    }


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is a
    UserError."""
    from uqbench.errors import UserError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu or auto")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise UserError(f"--device {requested}: use auto, cpu or cuda")
    return requested
