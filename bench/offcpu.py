"""Why one thread is off the CPU, from a capture of the scheduler's events.

Record while the load runs (whole machine, with kernel stacks), then summarize::

    perf record -e sched:sched_switch -e sched:sched_waking -g -a -o sched.data -- sleep 3
    .venv/bin/python bench/offcpu.py sched.data            # ovs-vswitchd's main thread

Each time the thread leaves the CPU, the time until it runs again is counted under:

- ``preempted``: it was runnable; ``by`` names the task that took the CPU;
- ``mutex``: it slept in a futex wait (a contended lock); ``by`` names the task that
  woke it, which is usually the one that released the lock;
- ``rcu``: it slept inside ``ovsrcu_synchronize()`` (in poll(), or for ``seq_mutex``),
  waiting for every other OVS thread to quiesce (needs an ovs-vswitchd with symbols; see
  ``bench/results/profile/README.md``). OVS 3.1's ``type_run`` rebuilds the translation
  config and waits so after any flow-table change, such as a ``learn``;
- ``poll``: it slept in poll(), waiting for packets, timers or other threads: idle;
- ``other``: any other sleep.

ovs-vswitchd's main thread runs the netdev datapath's ports that are not on PMD
threads (veths here), so while it is off the CPU those packets wait.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from topologies.client import percentile

PERF_FIELDS = "comm,tid,time,event,trace,ip,sym"
_HEAD = re.compile(r"^\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s+(\S+):\s+(.*)$")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)")
_WAKING = re.compile(r"\bpid=(\d+)")


class Event(NamedTuple):
    """One scheduler event of ``perf script``, with its kernel/user stack (function names)."""

    t: float
    comm: str
    tid: int
    name: str
    trace: str
    stack: tuple[str, ...]


def parse(text: str) -> list[Event]:
    """Events of ``perf script -F comm,tid,time,event,trace,ip,sym`` output."""
    events = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        m = _HEAD.match(lines[0]) if lines else None
        if m:
            stack = tuple(ln.split()[1] if len(ln.split()) > 1 else "" for ln in lines[1:])
            events.append(Event(float(m[3]), m[1], int(m[2]), m[4], m[5], stack))
    return events


def task_name(comm: str) -> str:
    """A task's name without its number (revalidator12 -> revalidator)."""
    return re.sub(r"[/:]?\d+$", "", comm) or comm


def busiest(events: Iterable[Event], comm: str) -> int | None:
    """The thread id with most events among tasks named ``comm`` (a trailing ``*``
    matches any name with that prefix, e.g. ``pmd*`` for PMD threads)."""
    prefix = comm[:-1] if comm.endswith("*") else None
    counts = Counter(e.tid for e in events
                     if (e.comm.startswith(prefix) if prefix is not None else e.comm == comm))
    return counts.most_common(1)[0][0] if counts else None


def off_cpu(events: list[Event], tid: int) -> dict[str, Any]:
    """Per reason (see the module docstring): count, total, p50/p99/max ms, and by whom."""
    spans: dict[str, list[float]] = {}
    by: dict[str, Counter[str]] = {}
    by_ms: dict[str, Counter[str]] = {}
    out_at: tuple[float, str, str] | None = None  # (time, reason, who)
    for e in events:
        if e.name == "sched:sched_waking":
            m = _WAKING.search(e.trace)
            if out_at and m and int(m[1]) == tid and out_at[1] in ("mutex", "rcu", "other"):
                out_at = (out_at[0], out_at[1], task_name(e.comm))
            continue
        if e.name != "sched:sched_switch":
            continue
        m = _SWITCH.search(e.trace)
        if not m:
            continue
        prev, state, next_comm, nxt = int(m[1]), m[2], m[3], int(m[4])
        if prev == tid:
            frames = " ".join(e.stack)
            if state.startswith("R"):
                out_at = (e.t, "preempted", task_name(next_comm))
            elif "ovsrcu_synchronize" in frames:
                out_at = (e.t, "rcu", "?")
            elif "do_sys_poll" in frames:
                out_at = (e.t, "poll", "")
            elif "futex" in frames:
                out_at = (e.t, "mutex", "?")
            else:
                out_at = (e.t, "other", "?")
        elif nxt == tid and out_at is not None:
            ms = (e.t - out_at[0]) * 1e3
            spans.setdefault(out_at[1], []).append(ms)
            if out_at[2]:
                by.setdefault(out_at[1], Counter())[out_at[2]] += 1
                by_ms.setdefault(out_at[1], Counter())[out_at[2]] += ms
            out_at = None
    span_s = events[-1].t - events[0].t if events else 0.0
    reasons = {}
    for reason, values in sorted(spans.items()):
        reasons[reason] = {
            "n": len(values), "total_ms": round(sum(values), 1),
            "share_of_time": round(sum(values) / 1e3 / span_s, 3) if span_s else None,
            "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
            "max_ms": round(max(values), 3),
            "by": {who: {"n": n, "total_ms": round(by_ms[reason][who], 1)}
                   for who, n in by.get(reason, Counter()).most_common(6)}}
    return {"tid": tid, "span_s": round(span_s, 3), "reasons": reasons}


def main(argv: list[str] | None = None) -> int:
    """Summarize a perf capture as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("perf_data", type=Path)
    p.add_argument("--comm", default="ovs-vswitchd",
                   help="thread name, or prefix ending in '*'; the busiest such thread is "
                        "summarized (ovs-vswitchd: the main thread; pmd*: a PMD thread)")
    p.add_argument("--tid", type=int, default=None, help="this thread id instead")
    a = p.parse_args(argv)
    text = subprocess.run(["perf", "script", "-i", str(a.perf_data), "-F", PERF_FIELDS],
                          capture_output=True, text=True, check=True).stdout
    events = parse(text)
    tid = a.tid if a.tid is not None else busiest(events, a.comm)
    if tid is None:
        print(f"no events of {a.comm!r} in {a.perf_data}", file=sys.stderr)
        return 1
    print(json.dumps(off_cpu(events, tid), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
