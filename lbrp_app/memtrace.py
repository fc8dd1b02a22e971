"""Where the controller's Python memory grows, on request: for diagnosing RSS growth.

Off unless Python traces allocations from the start: ``PYTHONTRACEMALLOC=N`` (N frames
per allocation) in the controller's environment. Then each ``SIGUSR1`` logs the traced
total, the process RSS and the allocation sites that grew most since the first signal,
which sets the baseline. Tracing slows the controller and doubles its memory; it is a
diagnostic, not for production.
"""

from __future__ import annotations

import logging
import signal
import tracemalloc
from pathlib import Path
from typing import Any

LOG = logging.getLogger("lbrp.memtrace")
TOP = 12  # sites per report


def rss_kib(pid: int | str = "self", proc: Path = Path("/proc")) -> int | None:
    """VmRSS of process ``pid`` in KiB (None when it is gone or /proc has no such line)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def take() -> tracemalloc.Snapshot:
    """A snapshot of the traced allocations, tracemalloc's own left out."""
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])


def growth(old: tracemalloc.Snapshot, new: tracemalloc.Snapshot, top: int = TOP
           ) -> list[str]:
    """The ``top`` allocation sites that grew most from ``old`` to ``new``, one line
    each: KiB grown, blocks grown, KiB now, the site's innermost frame."""
    stats = [s for s in new.compare_to(old, "lineno") if s.size_diff > 0][:top]
    return [f"{s.size_diff / 1024:+.1f} KiB {s.count_diff:+d} blocks "
            f"(now {s.size / 1024:.1f} KiB) {s.traceback[0].filename}:{s.traceback[0].lineno}"
            for s in stats]


class MemTrace:
    """The baseline snapshot and the reports against it."""

    def __init__(self) -> None:
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_kib = 0  # traced
        self.baseline_rss: int | None = None

    def report(self) -> list[str]:
        """The first call takes the baseline; later ones report growth since it."""
        snap, rss = take(), rss_kib()
        # the snapshot's own total: get_traced_memory() would count the baseline's objects
        traced = sum(s.size for s in snap.statistics("filename")) // 1024
        if self.baseline is None:
            self.baseline, self.baseline_kib, self.baseline_rss = snap, traced, rss
            return [f"memtrace baseline: {traced} KiB traced, RSS {rss} KiB"]
        head = (f"memtrace: {traced} KiB traced ({traced - self.baseline_kib:+d} KiB since "
                f"the baseline), RSS {rss} KiB ({(rss or 0) - (self.baseline_rss or 0):+d} KiB)")
        return [head, *(f"memtrace   {line}" for line in growth(self.baseline, snap))]


def install() -> bool:
    """Report on SIGUSR1 if tracemalloc traces; True if installed."""
    if not tracemalloc.is_tracing():
        return False
    trace = MemTrace()

    def on_signal(_signum: int, _frame: Any) -> None:
        for line in trace.report():
            LOG.info("%s", line)

    signal.signal(signal.SIGUSR1, on_signal)
    LOG.info("memtrace: tracing allocations (%d frames); SIGUSR1 reports growth",
             tracemalloc.get_traceback_limit())
    return True
