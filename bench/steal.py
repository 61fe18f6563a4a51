"""CPU time the hypervisor took from this VM ("steal"), so a rate can be read on the cores the
machine actually had.

On a shared VM the host can run other guests on our cores: in /proc/stat that time is counted as
``steal``. A scorer pass of a few seconds absorbs whatever steal falls in it, while a GEMM's best
of ten 10 ms runs mostly escapes it, so a ratio of the two moves with the neighbours' load (one
run on 2026-12-07 gave rounds of 30, 50 and 45 % of the FLOP limit). ``Window`` measures both
the wall time and the stolen core-seconds of a stretch of work; ``steal_free`` rescales a rate to
the full machine: work / (wall - stolen / cores). Idle cores are not forgiven, only stolen ones.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STAT = Path("/proc/stat")


def stolen_seconds() -> float:
    """Core-seconds stolen from this machine since boot (0 where /proc/stat has no steal)."""
    try:
        fields = STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = int(fields[8]) if len(fields) > 8 else 0
    return ticks / os.sysconf("SC_CLK_TCK")


class Window:
    """Wall time and stolen core-seconds between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.wall = self.stolen = 0.0
        self._wall0 = self._stolen0 = 0.0

    def start(self) -> Window:
        # /proc/stat is read outside the timed stretch: before the clock starts, after it stops.
        self._stolen0 = stolen_seconds()
        self._wall0 = time.perf_counter()
        return self

    def stop(self) -> Window:
        self.wall += time.perf_counter() - self._wall0
        self.stolen += stolen_seconds() - self._stolen0
        return self

    @property
    def steal_share(self) -> float:
        """The share of the machine's core-seconds the host took."""
        return self.stolen / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0

    def steal_free(self, work: float) -> float:
        """``work`` per second of the cores this stretch really had."""
        return work / (self.wall * (1.0 - min(self.steal_share, 0.99)))
