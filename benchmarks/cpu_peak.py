"""This CPU's peak float32 multiply-accumulate rate, for stating achieved GMAC/s against it."""

from __future__ import annotations


def clock_ghz() -> float:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    raise RuntimeError("/proc/cpuinfo states no clock")


def lanes() -> int:
    """float32 lanes of one FMA: 16 with AVX-512, else 8 (AVX2)."""
    with open("/proc/cpuinfo") as info:
        flags = next((line for line in info if line.startswith("flags")), "").split()
    return 16 if "avx512f" in flags else 8


def peak_gmacs(threads: int) -> float:
    """threads × 2 FMA units × float32 lanes × clock, in GMAC/s (the clock /proc/cpuinfo states;
    a boosting core can exceed it)."""
    return threads * 2 * lanes() * clock_ghz()


def peak_note(threads: int) -> str:
    return (
        f"peak {peak_gmacs(threads):.0f} GMAC/s = {threads} cores × 2 FMA × {lanes()} fp32 lanes × "
        f"{clock_ghz():.2f} GHz"
    )
