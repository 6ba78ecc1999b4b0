"""Round-robin timing: every runner in turn, round after round, so that drift of the machine's
speed hits all of them alike; ratios are taken per round, then their median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def round_robin(runners: dict[str, Callable[[], object]], rounds: int, seconds: float,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:  # fmt: skip
    """Calls per second of each runner in each round (each runs for ``seconds`` per round, at least
    once); ``sync`` (e.g. ``torch.cuda.synchronize``) waits for each call to finish."""
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or n == 0:
                run()
                n += 1
                if sync is not None:
                    sync()
            per_round[name].append(n / (time.perf_counter() - start))
    return per_round


def median_ratio(values: list[float], base: list[float]) -> float:
    """The median over rounds of ``values / base`` (the same rounds)."""
    return statistics.median(v / b for v, b in zip(values, base, strict=True))
