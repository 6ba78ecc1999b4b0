"""Peak resident memory of this process from Linux's ``/proc/self/status`` (MB), resettable."""

import ctypes
import gc
from pathlib import Path


def status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_mb() -> float:
    """The high-water mark of the resident set since start or the last ``reset_peak``."""
    return status_mb("VmHWM")


def reset_peak() -> float:
    """Hand freed heap memory back to the OS, reset the high-water mark to the resident set, return it.

    Without the ``malloc_trim`` a warmed-up forward pass reuses memory the allocator kept from the
    warm-up and would show no working memory at all.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")
