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


def flags() -> set[str]:
    with open("/proc/cpuinfo") as info:
        return set(next((line for line in info if line.startswith("flags")), "").split())


def int8_peak_gmacs(threads: int) -> tuple[float, str]:
    """The int8 multiply-accumulate peak and how it was counted: AMX (one tile unit per core,
    1024 int8 MACs per cycle), else AVX-512 VNNI (2 ports × 64 int8 MACs per cycle), else 0."""
    have = flags()
    if "amx_int8" in have:
        return threads * 1024 * clock_ghz(), f"{threads} cores × 1024 int8 MAC/cycle (AMX)"
    if "avx512_vnni" in have:
        return threads * 128 * clock_ghz(), f"{threads} cores × 2 × 64 int8 MAC/cycle (VNNI)"
    return 0.0, "no int8 dot-product instructions"


def int8_peak_note(threads: int) -> str:
    peak, how = int8_peak_gmacs(threads)
    return f"int8 peak {peak:.0f} GMAC/s = {how} × {clock_ghz():.2f} GHz"
