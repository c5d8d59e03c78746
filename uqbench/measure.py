"""Cost measurement shared by the runner (``peak_mb``, timings) and ``benchmarks/``.

Host memory is the process's resident set from ``/proc/self/status``; its high-water mark
``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux). On CUDA the
allocator's own counters are used instead.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def _on_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a clock read afterwards includes it (no-op on CPU)."""
    if _on_cuda(device):
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_memory(device: str | torch.device) -> bool:
    """Start a new peak-memory window; False when the host peak cannot be reset here."""
    if _on_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return _on_cuda(device)
    return True


def memory_mb(device: str | torch.device) -> float:
    """Memory in use now (MiB): allocated on CUDA, resident set on the host."""
    if _on_cuda(device):
        return torch.cuda.memory_allocated(device) / 2**20
    return (_status_kb("VmRSS") or 0) / 1024


def peak_memory_mb(device: str | torch.device) -> float:
    """Peak memory (MiB) since :func:`reset_peak_memory`: the GPU allocator's on CUDA, the
    host's resident high-water mark otherwise (the process's lifetime peak without /proc)."""
    if _on_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
