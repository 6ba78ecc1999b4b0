"""One driver per sweep: ``with sweep_lock(folder):`` holds ``folder/sweep.lock`` (``flock``) while
the sweep runs; a second driver on the same sweep is refused, naming the lock and its holder.  The
kernel drops the lock when its process ends, however it ends: a killed driver leaves nothing stale.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SweepLocked(RuntimeError):
    pass


@contextmanager
def sweep_lock(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SweepLocked(
                f"another driver is running this sweep ({holder}); it holds the lock {path}"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        try:
            yield path
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
