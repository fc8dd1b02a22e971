"""Where ovs-vswitchd's CPU goes, from a system-wide ``perf record -g`` capture.

Usage: ``bench/oncpu.py CAPTURE.data`` (root, ``perf`` installed). It needs an
ovs-vswitchd with symbols and frame pointers (the Debian one is stripped); see
``bench/results/profile/README.md``. Prints a JSON object: each thread's share of the
machine's samples, and for ovs-vswitchd's main and revalidator threads, what their
samples were doing, by the OVS functions on their stacks (see ``MAIN`` and
``REVALIDATOR``: the first rule whose function is on a sample's stack names it).
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.offcpu import task_name

SOFTIRQ = "[softirq]"  # stands for a kernel stack that runs softirqs (net_rx_action)
_SOFTIRQ_FUNCS = {"__do_softirq", "do_softirq", "net_rx_action"}
_SOFTIRQ_RULE = ("softirq: packets through the kernel (the lab's TCP stacks), on this thread",
                 SOFTIRQ)
# (category, function on the stack), checked in this order.
MAIN = [
    _SOFTIRQ_RULE,
    ("connmgr_run: mostly accept() on each bridge's OpenFlow socket, every loop", "connmgr_run"),
    ("ofproto-dpif run(): mostly the flow expiry walk after each revalidator dump", "run"),
    ("other ofproto_run (eviction upkeep, port polls)", "ofproto_run"),
    ("upcall: learn action (compose and install the learned flows)", "xlate_learn_action"),
    ("upcall: other (translate, install the datapath flow)", "upcall_cb"),
    # csum.c's loop, not inlined into conntrack.c: OVS 3.1's conntrack checks each TCP or
    # UDP packet's checksum in software when the port reports no checksum offload.
    ("conntrack: the software checksum check of each packet", "csum_continue"),
    ("conntrack (lookup, commit, NAT)", "conntrack_execute"),
    ("send to veths (sendmmsg, veth transmit)", "netdev_send"),
    ("receive from veths", "netdev_rxq_recv"),
    ("datapath fast path (lookups, actions, recirculation)", "dp_netdev_input__"),
    ("OVS RCU quiesce (wakes urcu)", "ovsrcu_quiesce"),
    ("polling sockets (accept, unixctl)", "pstream_accept"),
    ("poll loop", "time_poll"),
]
REVALIDATOR = [
    _SOFTIRQ_RULE,
    ("learn action in re-translation", "xlate_learn_action"),
    ("re-translate datapath flows (revalidate_ukey__)", "revalidate_ukey__"),
    ("sweep (delete idle flows, push stats)", "revalidator_sweep__"),
    ("dump datapath flows", "dpif_flow_dump_next"),
    ("OVS RCU quiesce (wakes urcu)", "ovsrcu_quiesce"),
    ("other revalidate (ukey lookups, stats)", "revalidate"),
]
TOP = 30  # innermost functions listed per capture
# glibc's allocator has no frame pointers, so its samples lose their callers.
MALLOC = {"_int_malloc", "_int_free", "malloc", "cfree", "free", "unlink_chunk",
          "malloc_consolidate", "__libc_malloc", "__libc_free"}
_FRAME = re.compile(r"^\s*[0-9a-f]+ (\S+?)(?:\+0x[0-9a-f]+)? \((.*)\)$")


def parse(text: str) -> list[tuple[str, list[str]]]:
    """(thread name, user-space frames root first) of each sample of ``perf script``
    ``-F comm,ip,sym,dso`` output. Kernel frames are dropped; a kernel stack that runs
    softirqs adds ``SOFTIRQ`` as the last frame: the kernel then delivers packets (here,
    into the lab's namespaces) on whichever thread it interrupted or that sent them."""
    result = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        comm = lines[0].strip()
        frames, softirq = [], False
        for line in lines[1:]:
            m = _FRAME.match(line)
            if m and "kernel" in m.group(2):
                softirq = softirq or m.group(1) in _SOFTIRQ_FUNCS
            elif m:
                frames.append(m.group(1).split(".")[0])  # revalidate.isra.0 -> revalidate
        result.append((comm, frames[::-1] + ([SOFTIRQ] if softirq else [])))
    return result


def classify(frames: list[str], rules: list[tuple[str, str]]) -> str:
    """The category of the first rule whose function is on the stack, else a fallback."""
    if not frames:
        return "kernel only (no user frames)"
    for name, func in rules:
        if func in frames:
            return name
    if frames[-1] in MALLOC:
        return "malloc/free, caller not recorded"
    return "other"


def leaf(frames: list[str]) -> str:
    """The innermost user-space function of a sample ("kernel only" without one): where
    the thread's own time went, or the system call it was in."""
    user = [f for f in frames if f != SOFTIRQ]
    return user[-1] if user else "kernel only (no user frames)"


def samples(capture: str) -> list[tuple[str, list[str]]]:
    """The samples of a ``perf record -g`` capture (see :func:`parse`)."""
    return parse(subprocess.run(["perf", "script", "-i", capture, "-F", "comm,ip,sym,dso"],
                                capture_output=True, text=True, check=True).stdout)


def summarize(capture: str, all_samples: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """Shares of the machine's samples by thread, and of the main and revalidator threads'."""
    n = len(all_samples)
    by_comm: collections.Counter[str] = collections.Counter()
    main: collections.Counter[str] = collections.Counter()
    main_leaf: collections.Counter[str] = collections.Counter()
    reval: collections.Counter[str] = collections.Counter()
    for comm, frames in all_samples:
        thread = task_name(comm)
        by_comm[thread] += 1
        if comm == "ovs-vswitchd":
            main[classify(frames, MAIN)] += 1
            main_leaf[leaf(frames)] += 1
        elif thread == "revalidator":
            reval[classify(frames, REVALIDATOR)] += 1

    def shares(c: collections.Counter[str], total: int) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in c.most_common() if total}

    return {
        "capture": capture,
        "samples": n,
        "machine_percent_by_thread": shares(by_comm, n),
        "main_thread_percent": shares(main, sum(main.values())),
        "main_thread_top_functions_percent": shares(
            collections.Counter(dict(main_leaf.most_common(TOP))), sum(main_leaf.values())),
        "revalidator_percent": shares(reval, sum(reval.values())),
    }


if __name__ == "__main__":
    print(json.dumps([summarize(c, samples(c)) for c in sys.argv[1:]], indent=1))
