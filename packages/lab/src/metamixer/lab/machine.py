"""What identifies the machine a record's numbers came from (records and the study's flags share
it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def machine(hardware: Mapping[str, Any] | None) -> dict[str, Any]:
    """What identifies the machine a run's floats came from: the CPU model, torch's thread count
    and the torch version (``unknown`` CPU where the hardware does not name it)."""
    hardware = hardware or {}
    return {"cpu": hardware.get("cpu") or "unknown", "threads": hardware.get("threads"),
            "torch": hardware.get("torch")}  # fmt: skip
