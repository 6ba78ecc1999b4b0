"""This CPU's peak float32 multiply-accumulate rate, for stating achieved GMAC/s against it."""

from __future__ import annotations


def clock_ghz() -> float:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    raise RuntimeError("/proc/cpuinfo states no clock")


def peak_gmacs(threads: int) -> float:
    """threads × 2 FMA units × 8 float32 lanes (256-bit) × clock, in GMAC/s."""
    return threads * 2 * 8 * clock_ghz()


def peak_note(threads: int) -> str:
    return (
        f"peak {peak_gmacs(threads):.0f} GMAC/s = {threads} cores × 2 FMA × 8 fp32 lanes × "
        f"{clock_ghz():.2f} GHz"
    )
