#!/usr/bin/env python3
"""lbrp benchmark: lbrp against plain forwarding on the Mininet lab, in one invocation.

Usage (root; builds its own labs, one at a time, under the machine-wide lab lock)::

    sudo .venv/bin/python bench/run.py [--quick] [--modes learn,conntrack]
                                       [--out bench/results/NAME.json]

Setups compared (lb0 is reprogrammed between them; a round runs plain, select,
[ct-select], lbrp-<mode>..., the next one the same in reverse order):

- ``plain``: lb0 is a wire (``in_port=1 -> 2``, ``in_port=2 -> 1``, no controller)
  and the client spreads its sessions over the backends' own addresses
  (10.0.1.2:8002, 10.0.1.3:8003, 10.0.1.4:8004, in turn): same path through lb0
  and r1 as through the VIP, and the same three backend processes.
- ``select``: a hand-made OF1.5 select group (dp_hash) that rewrites to the
  backends, plus one reverse flow per backend rewriting the source back to the
  VIP: stateless balancing, no pinning, no controller.
- ``ct-select`` (``--ct-select``): the issue's conntrack prototype, by hand: a new
  connection goes to a select group whose bucket commits it with
  ``nat(dst=backend)``; no controller, no counters.
- ``lbrp-<mode>``: the real ``osken-manager lbrp_app`` with a YAML config
  (``session_pinning: <mode>``); the client talks to the VIP 13.13.13.13.

Phases (each builds its own lab, the traffic phase one per round, and leaves
the lab lock free for 3 s before the next, so other users of the lab wait at
most one phase or round):

1. ``traffic``: per round and setup, TCP throughput (iperf3 c1 -> b1:5201,
   ``--iperf-s`` s), then new sessions/s with connect p50/p99 at saturation
   (client.py ``--duration``, concurrency 20), with OVS counter deltas (coverage,
   dpif-netdev main thread stats, upcall/show) around that run, then connect
   latency at a fixed load (``--paced-rate``, 500 sessions/s: one session
   started every 2 ms, a load every setup sustains), once the saturated run's
   sessions have expired from lb0 (learned flows, conntrack entries).
2. ``rate``: new sessions/s alone, in one lab: ``--rate-reps`` saturated runs per
   setup, alternating, lb0 programmed afresh before each; the median of the paired
   ratios with a 90 % bootstrap interval.
3. ``throughput``: TCP throughput alone, in one lab: ``--throughput-reps`` iperf3
   runs of ``--iperf-s`` s per setup, alternating like the rounds, with
   ovs-vswitchd's CPU seconds per GB delivered. One iperf3 run through the netdev
   datapath moves by 10-25 % from the next (tens of thousands of retransmits per
   10 s), so the phase takes many short ones and pairs each with plain's.
4. ``held``: N long-lived TCP sessions (bench/holder.py, asyncio, from c1's
   extra addresses, 10 per setup: 10.0.0.101-110 plain, .111-120 the first lbrp
   mode, ...) per setup; established and still answering,
   learned flows, ovs-vswitchd RSS before, while held and after.
5. ``control``: time from controller start to lb0 listed in /health with
   S services x B backends, and from a REST change (PUT a backend with weight
   65535 on a UDP service) to the first datagram reaching that backend. An
   unmeasured start first connects lb0 once (see phase_control: OVS 3.1.0 backs
   off up to 8 s before a switch's first connection, whatever its max_backoff).

Between setups lbrp's controller is stopped and lb0's flows, groups, meters and
Flow_Table settings are deleted; then, before every run, the run waits until at
most 32 of the lab's TCP/UDP datapath flows are left (they idle out after OVS's
``max-idle``, 10 s by default).
``--flush-datapath`` uses ``ovs-appctl dpctl/del-flows`` instead: faster, but it
clears every datapath flow of the host's shared netdev datapath (other netdev
bridges re-learn theirs through upcalls) and, after a conntrack round, flushes
lbrp's conntrack zone (shared by every netdev bridge too), so use it only on a
machine where the lab is the only user of OVS. OVS counters (coverage, upcalls,
ovs-vswitchd CPU) are per host: the JSON records the packets other bridges
carried and the CPU other processes used during each run, to spot interference. The output is a table on stdout, a JSON file
with every raw number and a PNG chart of the ratios against plain forwarding.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import hops
from bench.holder import NO_ANSWER_SAMPLE
from bench.offcpu import task_name
from lbrp_app.memtrace import rss_kib
from lbrp_app.pipeline import CT_ZONE, SESSION_TABLES
from topologies.controller import Controller, free_port
from topologies.lbrp_topo import (
    BACKEND_PORT,
    FRONTEND_PORT,
    LB_NAME,
    LB_PORT_TYPES,
    PLAIN_SWITCHES,
    LabError,
    LbrpNet,
    _kill_tree,
    _sh,
    backend_ip,
    lab,
    run_in,
)

HERE = Path(__file__).resolve().parent
CLIENT = REPO / "topologies" / "client.py"
HOLDER = HERE / "holder.py"
UDP_PROBE = HERE / "udp_probe.py"

VIP = "13.13.13.13"
VPORT = 8000
IPERF_PORT = 5201
UDP_VIP = "13.13.13.14"
UDP_PORT = 9000
N_BACKENDS = 3
BACKENDS = [(backend_ip(i), 8001 + i) for i in range(1, N_BACKENDS + 1)]
"""(ip, port) of b1..b3: 10.0.1.2:8002, 10.0.1.3:8003, 10.0.1.4:8004."""
HAND_MADE_SERVICES = ((1, VPORT, BACKENDS), (2, IPERF_PORT, [(backend_ip(1), IPERF_PORT)]))
"""(group id, VIP port, backends) of the hand-made setups: the sessions' and iperf3's."""
HELD_ADDRS_PER_SETUP = 10
EXTRA_CLIENT_IPS = [f"10.0.0.{101 + i}" for i in range(3 * HELD_ADDRS_PER_SETUP)]
"""Extra addresses of c1 in the held phase: 10 per setup, so that no setup reuses
another's (address, port) pairs (a stale socket on a backend would reset them)."""
HELD_PORTS = (8100, 8101, 8102, 8103)
"""Ports of the held phase's servers: one backend_server.py process per backend and port."""
LOCK_PAUSE_S = 3.0
"""Seconds between two labs of one run: the lab lock is not fair, so without a pause
the next phase would take it back at once and others' tests would wait for the whole run."""
SETTLE_MAX_FLOWS = 32
FIRST_SOURCE, LAST_SOURCE = 140, 250
"""The session runs' source addresses: 10.0.0.<FIRST_SOURCE> up to (not including)
10.0.0.<LAST_SOURCE>, one fresh address per run."""
"""Lab TCP/UDP datapath flows that may remain when a run starts."""
PHASES = ("traffic", "rate", "throughput", "held", "control")
VERIFY_RATE = 2_000
"""PINGs per second over all holders when checking that held sessions still answer.

Waking an idle learn session costs two upcalls (its datapath flows expired); a faster
burst overflows ovs-vswitchd's receive sockets and the answers then wait for TCP's
backed-off retransmissions (see README)."""
HOLDER_MAX = 12_000
"""Sessions per holder process at most (each needs one file descriptor per session)."""
OVS_PIDFILE = "/var/run/openvswitch/ovs-vswitchd.pid"
LAB_PORT = re.compile(r"in_port\((?:lb0|lbrpfe0|lbrpbe0)-eth\d+\)")
CONNECTED = "connected (OpenFlow"
"""What the app logs when a switch connects (``switch <dpid> connected (OpenFlow 0x6)``)."""
PROGRAMMED = re.compile(r"programmed: (\d+) flows, (\d+) groups in ([\d.]+) s")
COVERAGE_KEYS = ("xlate_actions", "rev_flow_table", "rev_reconfiguration", "rev_port_toggled",
                 "upcall_flow_limit_hit", "upcall_ukey_replace", "revalidate_missed_dp_flow",
                 "dpif_flow_put", "dpif_flow_del", "dpif_execute", "ofproto_dpif_expired",
                 "handler_duplicate_upcall", "dumped_duplicate_flow", "dumped_new_flow")
PMD_KEYS = ("packets received", "miss with success upcall", "miss with failed upcall",
            "megaflow hits", "emc hits", "simple match hits", "smc hits")
OURS = ("ovs-vswitchd", "lbrp_app", "client.py", "backend_server.py", "iperf3", "holder.py",
        "udp_probe.py", "bench/run.py", "ovs-appctl", "ovs-ofctl", "ovs-vsctl", "ovsdb-server",
        "mnexec")
"""Processes of the benchmark itself (anything else using CPU is interference)."""
TIMELINE_KEYS = ("loading app", "instantiating", "loaded ", "REST API", "wsgi starting",
                 "connected", "programmed", "session bound", "error", "Error")
"""Controller log lines whose arrival time start_controller records."""
SETUP_LABEL = {"plain": "plain", "select": "select group", "ct-select": "ct select group"}


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ options

@dataclass
class Options:
    """What to run and how big."""

    quick: bool
    modes: list[str]
    out: Path
    rounds: int
    session_s: float
    concurrency: int
    paced_rate: float
    iperf_s: float
    throughput_reps: int
    rate_reps: int
    held: int
    held_inflight: int
    held_verify_rate: float
    cp_services: int
    cp_backends: int
    cp_rounds: int
    changes: int
    changes_big: int
    probe_interval: float
    phases: list[str]
    flush_datapath: bool
    select_baseline: bool
    ct_select_baseline: bool
    settle_timeout: float
    app_src: Path | None
    settings: dict[str, Any]
    lab_switches: str = "ovs"
    lb_ports: str = "system"
    hops: bool = False
    rate_blocks: bool = False
    warmup_s: float = 0.0

    @property
    def baselines(self) -> list[str]:
        """The setups without lbrp, in order."""
        return (["plain"] + (["select"] if self.select_baseline else [])
                + (["ct-select"] if self.ct_select_baseline else []))

    @property
    def setups(self) -> list[str]:
        """Setups of one round, in order."""
        return self.baselines + [f"lbrp-{m}" for m in self.modes]

    @property
    def rate_sources(self) -> int:
        """Client addresses the rate phase uses: one per run, and one per warm-up."""
        runs = sum(len(setups) for _, setups in self.rate_schedule())
        return runs * (2 if self.warmup_s else 1)

    def rate_schedule(self) -> list[tuple[int, list[str]]]:
        """The rate phase's rounds: (round number from 1, its setups in running order).

        By default every round runs every setup. With ``rate_blocks`` each lbrp mode
        has its own block of ``rate_reps`` rounds with the baselines, in --modes order.
        """
        if not self.rate_blocks:
            return [(r + 1, round_order(self.setups, r)) for r in range(self.rate_reps)]
        return [(b * self.rate_reps + r + 1, round_order([*self.baselines, f"lbrp-{m}"], r))
                for b, m in enumerate(self.modes) for r in range(self.rate_reps)]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Command line -> Options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small and short: 1 round, 5k held")
    p.add_argument("--modes", default="learn",
                   help="lbrp session_pinning modes, comma separated: learn,conntrack")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (default bench/results/<time>[-quick].json); "
                        "the PNG goes next to it")
    p.add_argument("--rounds", type=int, default=None, help="rounds per setup (3; quick 1)")
    p.add_argument("--session-s", type=float, default=10.0, help="seconds of new sessions")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--paced-rate", type=float, default=500.0,
                   help="sessions/s of the paced run (connect latency at a load every setup "
                        "sustains; 0 skips it)")
    p.add_argument("--iperf-s", type=float, default=10.0, help="seconds of iperf3")
    p.add_argument("--throughput-reps", type=int, default=None,
                   help="throughput phase: iperf3 runs per setup, alternating (10; quick 2)")
    p.add_argument("--rate-reps", type=int, default=None,
                   help="rate phase: saturated session runs per setup, alternating (12; "
                        "quick 2)")
    p.add_argument("--warmup", type=float, default=0.0, metavar="SECONDS",
                   help="rate phase: before each measured run, saturated sessions for this "
                        "long from another address, not measured. Over tcp_fin_timeout "
                        "(12 s), learn's measured run then also pays for the sessions that "
                        "expire meanwhile, as under a steady load")
    p.add_argument("--held", type=int, default=None, help="sessions to hold (100000; quick 5000)")
    p.add_argument("--held-inflight", type=int, default=64,
                   help="pending connects at most, over all holder processes (bursts of "
                        "SYNs overflow the userspace datapath's veth queues: retransmits)")
    p.add_argument("--held-verify-rate", type=float, default=VERIFY_RATE,
                   help="PINGs/s over all held sessions when checking that they answer")
    p.add_argument("--cp-services", type=int, default=None, help="services (2000; quick 200)")
    p.add_argument("--cp-backends", type=int, default=8, help="backends per service")
    p.add_argument("--changes", type=int, default=20,
                   help="REST changes to time with a 3-service config")
    p.add_argument("--changes-big", type=int, default=None,
                   help="REST changes to time with the big config (30; quick 10): each "
                        "takes seconds there")
    p.add_argument("--probe-interval", type=float, default=0.002,
                   help="seconds between UDP probe datagrams (resolution of change latency)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma separated subset of {','.join(PHASES)}")
    p.add_argument("--flush-datapath", action="store_true",
                   help="between setups, ovs-appctl dpctl/del-flows (clears EVERY netdev "
                        "datapath flow on the host) instead of waiting for idle expiry")
    p.add_argument("--no-select", action="store_true", help="skip the select-group baseline")
    p.add_argument("--ct-select", action="store_true",
                   help="add the conntrack baseline: a hand-made select group whose buckets "
                        "ct(commit,nat) to the backends (no controller, no counters)")
    p.add_argument("--app-src", type=Path, default=None, metavar="DIR",
                   help="run the controller with DIR/lbrp_app (PYTHONPATH=DIR) instead of "
                        "the installed one, e.g. an older commit for an A/B comparison")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra top-level key of every lbrp YAML config (repeatable), e.g. "
                        "datapath_max_idle_ms=1000")
    p.add_argument("--lab-switches", choices=sorted(PLAIN_SWITCHES), default="ovs",
                   help="the lab's two plain switches around lb0: OVS netdev bridges (the "
                        "default; their packets share ovs-vswitchd's one datapath thread "
                        "with lb0) or Linux bridges (ovs-vswitchd forwards for lb0 alone)")
    p.add_argument("--lb-ports", choices=LB_PORT_TYPES, default="system",
                   help="how ovs-vswitchd opens lb0's two ports: af_packet, read by its main "
                        "thread (system, the default), or AF_XDP, read by a PMD thread that "
                        "busy-polls one core (afxdp); every setup of the run uses the same")
    p.add_argument("--hops", action="store_true",
                   help="capture SYNs and SYN-ACKs on lb0's two ports: during the paced run, "
                        "to split each connect's time into lb0 and backend-side segments; "
                        "during the saturated run, to count client source ports lb0 "
                        "rewrote and SYNs resent (bench/hops.py; needs tcpdump; not with "
                        "--lb-ports afxdp, whose packets tcpdump does not see)")
    p.add_argument("--rate-blocks", action="store_true",
                   help="rate phase: one block of --rate-reps rounds per lbrp mode, each "
                        "against the baselines, the blocks in --modes order, instead of "
                        "every mode in every round")
    p.add_argument("--settle-timeout", type=float, default=20.0,
                   help="max seconds to wait for the lab's datapath flows to idle out")
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("learn", "conntrack")]
    if bad or not modes:
        p.error(f"--modes: learn and/or conntrack, got {a.modes!r}")
    settings: dict[str, Any] = {}
    for item in a.set:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            p.error(f"--set: KEY=VALUE, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value)
    if a.paced_rate < 0:
        p.error("--paced-rate must be >= 0")
    if a.hops and a.lb_ports == "afxdp":
        p.error("--hops captures with tcpdump, which does not see AF_XDP ports' packets")
    if a.app_src is not None and not (a.app_src / "lbrp_app" / "__init__.py").is_file():
        p.error(f"--app-src: no lbrp_app package in {a.app_src}")
    phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    if not phases or any(x not in PHASES for x in phases):
        p.error(f"--phases: subset of {','.join(PHASES)}, got {a.phases!r}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.out or HERE / "results" / f"{stamp}{'-quick' if a.quick else ''}.json"
    opts = Options(
        quick=a.quick, modes=modes, out=out,
        rounds=a.rounds if a.rounds is not None else (1 if a.quick else 3),
        session_s=a.session_s, concurrency=a.concurrency, paced_rate=a.paced_rate,
        iperf_s=a.iperf_s,
        throughput_reps=(a.throughput_reps if a.throughput_reps is not None
                         else (2 if a.quick else 10)),
        rate_reps=a.rate_reps if a.rate_reps is not None else (2 if a.quick else 12),
        held=a.held if a.held is not None else (5000 if a.quick else 100_000),
        held_inflight=a.held_inflight, held_verify_rate=a.held_verify_rate,
        cp_services=a.cp_services if a.cp_services is not None else (200 if a.quick else 2000),
        cp_backends=a.cp_backends, cp_rounds=1 if a.quick else 2, changes=a.changes,
        changes_big=a.changes_big if a.changes_big is not None else (10 if a.quick else 30),
        probe_interval=a.probe_interval, phases=phases, flush_datapath=a.flush_datapath,
        select_baseline=not a.no_select, ct_select_baseline=a.ct_select,
        settle_timeout=a.settle_timeout,
        app_src=a.app_src.resolve() if a.app_src else None, settings=settings,
        lab_switches=a.lab_switches, lb_ports=a.lb_ports, hops=a.hops,
        rate_blocks=a.rate_blocks, warmup_s=a.warmup)
    if "rate" in phases and FIRST_SOURCE + opts.rate_sources > LAST_SOURCE:
        p.error(f"--rate-reps: {opts.rate_sources} client addresses for the rate runs, at "
                f"most {LAST_SOURCE - FIRST_SOURCE} (one per run, two with --warmup)")
    return opts


# ---------------------------------------------------------------- OVS stats

def sh_out(*args: str, timeout: float = 30.0) -> str:
    """stdout of a root-namespace command ("" on failure)."""
    try:
        return _sh(list(args), timeout).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def vswitchd_pid() -> int | None:
    """pid of ovs-vswitchd from its pidfile."""
    try:
        return int(Path(OVS_PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def vswitchd_rss_kib() -> int | None:
    """VmRSS of ovs-vswitchd in KiB."""
    pid = vswitchd_pid()
    return None if pid is None else rss_kib(pid)


def coverage_totals() -> dict[str, int]:
    """``ovs-appctl coverage/show`` totals by counter name."""
    out: dict[str, int] = {}
    for line in sh_out("ovs-appctl", "coverage/show").splitlines():
        m = re.match(r"^(\w+)\s+.*total:\s+(\d+)\s*$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def pmd_stats() -> dict[str, float]:
    """``ovs-appctl dpif-netdev/pmd-stats-show`` counters summed over threads."""
    out: dict[str, float] = {}
    for line in sh_out("ovs-appctl", "dpif-netdev/pmd-stats-show").splitlines():
        m = re.match(r"^\s+([a-z. ]+):\s+([\d.]+)", line)
        if m and not m.group(1).startswith("avg"):
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out


def upcall_show() -> dict[str, int]:
    """Datapath flow counts and dump duration from ``ovs-appctl upcall/show``."""
    text = sh_out("ovs-appctl", "upcall/show")
    out: dict[str, int] = {}
    m = re.search(r"\(current (\d+)\) \(avg (\d+)\) \(max (\d+)\) \(limit (\d+)\)", text)
    if m:
        out.update(current=int(m.group(1)), avg=int(m.group(2)), max=int(m.group(3)),
                   limit=int(m.group(4)))
    m = re.search(r"dump duration : (\d+)ms", text)
    if m:
        out["dump_duration_ms"] = int(m.group(1))
    return out


def dpif_hits() -> dict[str, int]:
    """hit/missed of the netdev datapath (``ovs-appctl dpif/show``)."""
    m = re.search(r"netdev@ovs-netdev: hit:(\d+) missed:(\d+)", sh_out("ovs-appctl", "dpif/show"))
    return {"hit": int(m.group(1)), "missed": int(m.group(2))} if m else {}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[str, float, int] | None:
    """(comm, user+system CPU seconds, start time in ticks) from a /proc/.../stat file."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19])


def vswitchd_threads_cpu() -> dict[str, float]:
    """CPU seconds of ovs-vswitchd per thread kind (main, handler, revalidator, ...)."""
    pid = vswitchd_pid()
    out: dict[str, float] = {}
    if pid is None:
        return out
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            got = _stat(f"/proc/{pid}/task/{tid}/stat")
            if got:
                kind = task_name(got[0])
                out[kind] = out.get(kind, 0.0) + got[1]
    return out


def controller_cpu_s(b: Bench) -> float | None:
    """CPU seconds of lbrp's controller process, if the current setup runs one."""
    proc = b.ctl.proc if b.ctl is not None else None
    got = _stat(f"/proc/{proc.pid}/stat") if proc is not None else None
    return got[1] if got else None


def vswitchd_cpu_since(before: dict[str, float]) -> dict[str, float]:
    """CPU seconds per ovs-vswitchd thread kind since ``before`` (vswitchd_threads_cpu())."""
    return {k: v - before.get(k, 0.0) for k, v in vswitchd_threads_cpu().items()}


Procs = dict[tuple[int, int], tuple[str, float]]
"""(pid, start time) -> (comm, CPU seconds). The start time tells a reused pid from its
old process; comm cannot (a kworker's comm names its current work queue)."""


def processes_cpu() -> Procs:
    """CPU seconds of every process on the host (to spot who else used the CPUs)."""
    out: Procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            got = _stat(f"/proc/{name}/stat")
            if got:
                out[(int(name), got[2])] = got[:2]
    return out


def cmdline(pid: int) -> str:
    """Short command line of a process."""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        if raw:
            return raw.decode(errors="replace")[:120]
    return ""


def loadavg() -> list[float]:
    """1, 5, 15 minute load averages."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


LAB_NAMES = re.compile(r"^(?:lb0|lbrpfe0|lbrpbe0)(?:-eth\d+)?$")


def dp_port_packets() -> dict[str, int]:
    """RX packets of every port of the netdev datapath (``ovs-appctl dpctl/show -s``)."""
    out: dict[str, int] = {}
    name = None
    for line in sh_out("ovs-appctl", "dpctl/show", "-s").splitlines():
        m = re.match(r"\s+port \d+: (\S+)", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"\s+RX packets:(\d+)", line)
        if m and name:
            out[name] = int(m.group(1))
    return out


def dp_flow_split() -> dict[str, int]:
    """Datapath flows of the lab's bridges and of every other bridge on the host."""
    lab_n = other = 0
    for line in sh_out("ovs-appctl", "dpctl/dump-flows", "-m").splitlines():
        m = re.search(r"in_port\(([^)]*)\)", line)
        if not m:
            continue
        if LAB_NAMES.match(m.group(1)):
            lab_n += 1
        else:
            other += 1
    return {"lab": lab_n, "other": other}


def snapshot() -> dict[str, Any]:
    """Everything we diff around a run."""
    return {"t": time.time(), "coverage": coverage_totals(), "pmd": pmd_stats(),
            "ports": dp_port_packets(),
            "dpif": dpif_hits(), "upcall": upcall_show(), "rss_kib": vswitchd_rss_kib(),
            "threads": vswitchd_threads_cpu(), "procs": processes_cpu(), "load": loadavg()}


def top_cpu(a: Procs, b: Procs, n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` processes that used most CPU between two processes_cpu() readings."""
    used = []
    for (pid, start), (comm, sec) in b.items():
        before = a.get((pid, start))
        d = sec - (before[1] if before else 0.0)
        if d > 0.05:
            used.append((d, pid, comm))
    used.sort(reverse=True)
    return [{"pid": pid, "comm": comm, "cpu_s": round(d, 2), "cmd": cmdline(pid)}
            for d, pid, comm in used[:n]]


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Counter deltas b - a (coverage: non-zero ones only)."""
    cov = {k: v - a["coverage"].get(k, 0) for k, v in b["coverage"].items()
           if v - a["coverage"].get(k, 0)}
    out: dict[str, Any] = {
        "seconds": round(b["t"] - a["t"], 3), "coverage": cov,
        "pmd": {k: v - a["pmd"].get(k, 0) for k, v in b["pmd"].items()},
        "dpif": {k: v - a["dpif"].get(k, 0) for k, v in b["dpif"].items()},
        "upcall_after": b["upcall"], "rss_kib_before": a["rss_kib"],
        "rss_kib_after": b["rss_kib"], "load_before": a["load"],
        "vswitchd_cpu_s": {k: round(v - a["threads"].get(k, 0.0), 2)
                           for k, v in b["threads"].items()},
        "top_cpu": top_cpu(a["procs"], b["procs"])}
    rx = {k: v - a["ports"].get(k, 0) for k, v in b["ports"].items()}
    out["lab_rx_packets"] = sum(v for k, v in rx.items() if LAB_NAMES.match(k))
    out["foreign_rx_packets"] = sum(v for k, v in rx.items() if not LAB_NAMES.match(k))
    out["foreign_cpu_s"] = round(sum(p["cpu_s"] for p in out["top_cpu"]
                                     if not any(k in p["cmd"] or k == p["comm"]
                                                for k in OURS)), 2)
    return out


def flow_count(table: int | None = None) -> int | None:
    """Flows in lb0 (one table or all) from dump-aggregate."""
    args = ["ovs-ofctl", "-O", "OpenFlow15", "dump-aggregate", LB_NAME]
    if table is not None:
        args.append(f"table={table}")
    m = re.search(r"flow_count=(\d+)", sh_out(*args))
    return int(m.group(1)) if m else None


def lb_flow_counts() -> dict[str, int | None]:
    """Flows on lb0: per session table (``table10``...) and ``all``."""
    counts: dict[str, int | None] = {f"table{t}": flow_count(t) for t in SESSION_TABLES}
    counts["all"] = flow_count()
    return counts


def learned_flows(counts: dict[str, int | None]) -> int:
    """Flows of the session tables in a :func:`lb_flow_counts` reading."""
    return sum(counts.get(f"table{t}") or 0 for t in SESSION_TABLES)


def lab_l4_dp_flows() -> int:
    """Datapath flows of the lab's bridges that carry TCP/UDP."""
    n = 0
    for line in sh_out("ovs-appctl", "dpctl/dump-flows", "-m").splitlines():
        if ("tcp(" in line or "udp(" in line) and LAB_PORT.search(line):
            n += 1
    return n


def machine_info() -> dict[str, Any]:
    """nproc, kernel, OVS and software versions, OVS settings, git state."""
    def first_line(*args: str) -> str:
        return (sh_out(*args).splitlines() or [""])[0].strip()

    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1) if m else ""
    mem_kib = None
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kib = int(m.group(1)) if m else None
    osken = ""
    with contextlib.suppress(Exception):
        from importlib.metadata import version
        osken = version("os-ken")
    git = first_line("git", "-C", str(REPO), "rev-parse", "HEAD")
    dirty = sh_out("git", "-C", str(REPO), "status", "--porcelain").strip().splitlines()
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem_total_kib": mem_kib,
        "kernel": platform.release(), "python": platform.python_version(),
        "ovs_version": first_line("ovs-appctl", "version"),  # the running daemon
        "os_ken": osken, "iperf3": first_line("iperf3", "--version"),
        "ovs_other_config": sh_out("ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".",
                                   "other_config").strip(),
        "ovs_bridges": sh_out("ovs-vsctl", "--timeout=5", "list-br").split(),
        "git_head": git, "git_dirty": dirty, "lbrp_app_sha256_16": lbrp_app_digest(),
        "lbrp_app_src": str(APP_SRC[0]),
    }


# -------------------------------------------------------------- lbrp config

def service(vip: str, proto: str, port: int, backends: Sequence[tuple[str, int]],
            name: str = "") -> dict[str, Any]:
    """One service entry of the YAML config."""
    return {"vip": vip, "proto": proto, "port": port, "name": name,
            "backends": [{"ip": ip, "port": bp, "weight": 1} for ip, bp in backends]}


def bench_config(mode: str) -> dict[str, Any]:
    """Config of the traffic and held phases: VIP:8000 -> b1..b3, VIP:5201 -> b1:5201."""
    return {"frontend_port": FRONTEND_PORT, "backend_port": BACKEND_PORT,
            "session_pinning": mode,
            "services": [service(VIP, "tcp", VPORT, BACKENDS, "bench"),
                         service(VIP, "tcp", IPERF_PORT, [(backend_ip(1), IPERF_PORT)],
                                 "iperf")]}


def udp_service() -> dict[str, Any]:
    """The UDP service of the change-latency measure: b1, b2 on 9000."""
    return service(UDP_VIP, "udp", UDP_PORT, [(backend_ip(1), UDP_PORT),
                                              (backend_ip(2), UDP_PORT)], "probe")


def big_config(mode: str, n_services: int, n_backends: int) -> dict[str, Any]:
    """``n_services`` TCP services (VIPs 14.x.y.z:8000) x ``n_backends`` each, plus the UDP one."""
    services = []
    for i in range(n_services):
        vip = f"14.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        bes = [(f"10.0.{2 + j // 250}.{1 + j % 250}", 8000 + (i % 1000)) for j in
               range(n_backends)]
        services.append(service(vip, "tcp", VPORT, bes))
    services.append(udp_service())
    return {"frontend_port": FRONTEND_PORT, "backend_port": BACKEND_PORT,
            "session_pinning": mode, "services": services}


# ------------------------------------------------------------------- bench

APP_SRC: list[Path] = [REPO]
"""Folder holding the lbrp_app package the controller runs (``--app-src``)."""


def lbrp_ct_zone() -> int | None:
    """The conntrack zone lbrp's conntrack pinning uses (None if the app has none)."""
    try:
        text = (APP_SRC[0] / "lbrp_app" / "pipeline.py").read_text()
    except OSError:
        return None
    m = re.search(r"^CT_ZONE\s*=\s*(0x[0-9a-fA-F]+|\d+)", text, re.MULTILINE)
    return int(m.group(1), 0) if m else None


def lbrp_app_digest() -> str:
    """sha256 of lbrp_app/*.py as benchmarked (the tree may hold uncommitted changes)."""
    h = hashlib.sha256()
    for path in sorted((APP_SRC[0] / "lbrp_app").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def max_idle() -> str | None:
    """ovs-vswitchd's other_config:max-idle (None when unset)."""
    res = _sh(["ovs-vsctl", "--timeout=5", "--if-exists", "get", "Open_vSwitch", ".",
               "other_config:max-idle"])
    value = res.stdout.strip().strip('"')
    return value or None


QUIET_BUSY = 0.10  # machine busy fraction under which a new lab counts as quiet
QUIET_MAX_S = 120.0


def cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_fraction(a: tuple[int, int], b: tuple[int, int], polling: float = 0.0) -> float:
    """Share of the machine's CPU time that was busy between two :func:`cpu_times`,
    leaving out ``polling`` ticks (PMD threads busy-poll whether or not there is work)."""
    total = b[1] - a[1]
    return max(0.0, b[0] - a[0] - polling) / total if total > 0 else 0.0


def pmd_ticks() -> float:
    """CPU clock ticks used so far by ovs-vswitchd's PMD threads (0 without any)."""
    return CLK_TCK * sum(cpu for name, cpu in vswitchd_threads_cpu().items()
                         if name.startswith("pmd"))


def wait_quiet(window_s: float = 1.0) -> dict[str, Any]:
    """Wait until the machine is quiet for one window (at most QUIET_MAX_S).

    A measurement must not share the CPU with what the previous lab left running (its
    teardown, a kernel worker) or with anything else on the host. Returns the wait and
    the last window's busy share (each phase's JSON lists its labs' waits, ``quiet_waits``).
    """
    t0 = time.monotonic()
    while True:
        a, pa = cpu_times(), pmd_ticks()
        time.sleep(window_s)
        busy = busy_fraction(a, cpu_times(), pmd_ticks() - pa)
        waited = time.monotonic() - t0
        if busy < QUIET_BUSY or waited >= QUIET_MAX_S:
            break
    res = {"s": round(waited, 1), "busy": round(busy, 3), "quiet": busy < QUIET_BUSY}
    if waited > 1.5 * window_s or not res["quiet"]:
        log(f"machine {'quiet' if res['quiet'] else 'still busy'} after {waited:.1f} s "
            f"(last {window_s:g} s: {100 * busy:.0f} % busy)")
    return res


MAX_IDLE_AT_START: list[str | None] = []
"""other_config:max-idle when the run started (lbrp's datapath_max_idle_ms changes it)."""


def restore_max_idle() -> None:
    """Put ovs-vswitchd's max-idle back as it was at start (it is per host, not per bridge)."""
    if not MAX_IDLE_AT_START:
        return
    want, now = MAX_IDLE_AT_START[0], max_idle()
    if now == want:
        return
    if want is None:
        _sh(["ovs-vsctl", "--timeout=5", "remove", "Open_vSwitch", ".", "other_config",
             "max-idle"])
    else:
        _sh(["ovs-vsctl", "--timeout=5", "set", "Open_vSwitch", ".",
             f"other_config:max-idle={want}"])
    log(f"restored ovs-vswitchd other_config:max-idle to {want or 'unset'} (was {now})")


class ModeUnavailable(RuntimeError):
    """The controller refused to start with this config."""


@dataclass
class Started:
    """Timings of one controller start."""

    rest_s: float | None = None
    connected_s: float | None = None  # the app logged lb0's connection
    # REST up (the app listening) -> lb0 connected; an upper bound: the log is read
    # between /health polls, which the app answers late while it builds the bundle
    switch_wait_s: float | None = None
    programmed_s: float | None = None
    log_line: str = ""
    timeline: list[tuple[float, str]] = field(default_factory=list)
    log_flows: int | None = None
    log_groups: int | None = None
    log_seconds: float | None = None


class Bench:
    """One lab plus the setup currently programmed on lb0."""

    def __init__(self, net: LbrpNet, opts: Options, work: Path) -> None:
        self.net = net
        self.opts = opts
        self.work = work
        self.ctl: Controller | None = None
        self.setup: str | None = None
        self.unavailable: dict[str, str] = {}
        self.settles: list[dict[str, Any]] = []

    # -- lb0 programming
    def clear(self) -> None:
        """Stop the controller; delete lb0's flows, groups, meters and Flow_Table settings."""
        self.stop_controller()
        self.net.lb_ofctl("del-flows")
        self.net.lb_ofctl("del-groups")
        self.net.lb_ofctl("del-meters", check=False)
        _sh(["ovs-vsctl", "--timeout=10", "clear", "Bridge", LB_NAME, "flow_tables"])
        restore_max_idle()
        zone = CT_ZONE if self.setup == "ct-select" else lbrp_ct_zone()
        if (self.opts.flush_datapath and self.setup in ("lbrp-conntrack", "ct-select")
                and zone is not None):
            # the netdev datapath's conntrack is shared by every netdev bridge on the host
            _sh(["ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}"])
        self.setup = None

    def settle(self) -> None:
        """Let the lab's datapath flows from the previous runs go (idle expiry or flush).

        Waits until at most SETTLE_MAX_FLOWS TCP/UDP datapath flows of the lab are left
        (an iperf3 run leaves a handful: harmless; a session run leaves thousands).
        """
        if self.opts.flush_datapath:
            _sh(["ovs-appctl", "dpctl/del-flows"])
            self.settles.append({"how": "dpctl/del-flows", "s": 0.0})
            return
        waited, left = self._wait_down(lab_l4_dp_flows)
        self.settles.append({"how": "idle", "s": waited, "left": left})

    def wait_sessions_gone(self) -> float:
        """Wait (at most settle_timeout) until the last run's pinned sessions expired.

        Learned flows and conntrack entries of closed sessions live for the FIN timeout
        (12 s by default); expiring tens of thousands of them during the next run would
        measure that run against the previous one's clean-up. Returns the seconds waited.
        """
        def left() -> int:
            learned = sum(flow_count(t) or 0 for t in SESSION_TABLES)
            return max(learned, ct_count() or 0)

        return self._wait_down(left)[0]

    def _wait_down(self, count: Callable[[], int]) -> tuple[float, int]:
        """Poll ``count()`` every second until it is at most SETTLE_MAX_FLOWS, for at
        most settle_timeout: (seconds waited, last count)."""
        t0 = time.monotonic()
        n = count()
        while n > SETTLE_MAX_FLOWS and time.monotonic() - t0 < self.opts.settle_timeout:
            time.sleep(1.0)
            n = count()
        return round(time.monotonic() - t0, 1), n

    def stop_controller(self) -> None:
        """Stop lbrp's controller if we run one."""
        if self.ctl is not None:
            self.ctl.stop()
            self.ctl = None

    def start_controller(self, cfg: dict[str, Any], name: str) -> Started:
        """Write ``cfg`` to a temp YAML, start osken-manager, wait until lb0 is programmed.

        Raises ModeUnavailable when the process exits (e.g. it refuses the config).
        """
        path = self.work / f"{name}.yaml"
        cfg = {**cfg, **self.opts.settings}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        env = {"PYTHONPATH": str(self.opts.app_src)} if self.opts.app_src else None
        ctl = Controller(path, self.net.of_port, env=env, log_dir=self.work)
        st = Started()
        t0 = time.monotonic()
        ctl.start(wait=False)
        self.ctl = ctl
        deadline = t0 + 120.0
        log_pos = 0

        def tail() -> None:
            nonlocal log_pos
            with contextlib.suppress(OSError), open(ctl.log_path, "rb") as f:
                f.seek(log_pos)
                chunk = f.read()
                cut = chunk.rfind(b"\n") + 1
                log_pos += cut
                now = round(time.monotonic() - t0, 3)
                for raw in chunk[:cut].decode(errors="replace").splitlines():
                    if any(k in raw for k in TIMELINE_KEYS):
                        st.timeline.append((now, raw.strip()[:160]))

        while time.monotonic() < deadline:
            assert ctl.proc is not None
            tail()
            if ctl.proc.poll() is not None:
                self.ctl = None
                tail = [ln for ln in ctl.log().splitlines() if ln.strip()][-6:]
                raise ModeUnavailable(f"controller exited {ctl.proc.returncode}: "
                                      + " | ".join(tail))
            try:
                status, body = ctl.request("GET", "/health", timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            if st.rest_s is None:
                st.rest_s = round(time.monotonic() - t0, 3)
            if status == 200 and any(s.get("dpid") == self.net.lb_dpid
                                     for s in body.get("switches", [])):
                st.programmed_s = round(time.monotonic() - t0, 3)
                tail()
                break
            time.sleep(0.02)
        else:
            raise LabError(f"lb0 not programmed within 120 s: {ctl.log()[-1500:]}")
        st.connected_s = next((t for t, line in st.timeline if CONNECTED in line), None)
        if st.connected_s is not None and st.rest_s is not None:
            st.switch_wait_s = round(max(0.0, st.connected_s - st.rest_s), 3)
        for line in ctl.log().splitlines():
            m = PROGRAMMED.search(line)
            if m:
                st.log_line = line.strip()
                st.log_flows, st.log_groups = int(m.group(1)), int(m.group(2))
                st.log_seconds = float(m.group(3))
        return st

    def use(self, setup: str,
            config: Callable[[str], dict[str, Any]] | None = None) -> bool:
        """Program lb0 for ``setup``; False when that lbrp mode is unavailable.

        ``config(mode)`` makes the lbrp config (default: bench_config).
        """
        if setup in self.unavailable:
            return False
        if self.setup == setup:
            return True
        self.clear()
        self.settle()
        if setup == "plain":
            self.net.lb_ofctl("add-flow", f"in_port={FRONTEND_PORT},actions=output:{BACKEND_PORT}")
            self.net.lb_ofctl("add-flow", f"in_port={BACKEND_PORT},actions=output:{FRONTEND_PORT}")
        elif setup == "select":
            self._program_select()
        elif setup == "ct-select":
            self._program_ct_select()
        else:
            mode = setup.removeprefix("lbrp-")
            try:
                self.start_controller((config or bench_config)(mode), setup)
            except ModeUnavailable as exc:
                self.unavailable[setup] = str(exc)
                log(f"{setup}: unavailable: {exc}")
                return False
        self.setup = setup
        return True

    def _program_select(self) -> None:
        """Stateless select group per service plus reverse source rewrites (no controller)."""
        fe, be = FRONTEND_PORT, BACKEND_PORT
        for gid, vport, backends in HAND_MADE_SERVICES:
            self._select_group(gid, [f"set_field:{ip}->ip_dst,set_field:{port}->tcp_dst,"
                                     f"output:{be}" for ip, port in backends])
            self.net.lb_ofctl("add-flow", f"priority=100,in_port={fe},tcp,nw_dst={VIP},"
                              f"tp_dst={vport},actions=group:{gid}")
            for ip, port in backends:
                self.net.lb_ofctl("add-flow", f"priority=100,in_port={be},tcp,nw_src={ip},"
                                  f"tp_src={port},actions=set_field:{VIP}->ip_src,"
                                  f"set_field:{vport}->tcp_src,output:{fe}")
        self._pass_through()

    def _program_ct_select(self) -> None:
        """The issue's conntrack prototype: ct(nat) looks a packet up; a new connection
        goes to a select group whose bucket commits it with nat(dst=backend), then out.

        No controller, no per-backend labels or counters, no full-zone check: the least
        an OVS conntrack balancer does, to compare lbrp's conntrack pipeline with. (The
        bucket's ct needs ``table=``: OVS 3.1 silently drops a ct without it from a
        bucket, as it drops learn.) It uses lbrp's zone.

        Like lbrp, it turns the TCP sequence check off. That setting belongs to the
        netdev datapath, which every lab creates anew with the check on. With the check
        on, a client SYN that reuses a port whose previous connection is still in the
        table is marked invalid and dropped: 5-25 of the prototype's sessions failed in
        each round where it ran before lbrp conntrack had turned the check off.
        """
        # the same command as lbrp_app.ovsdb.limit_connections (importing that module
        # would pull in eventlet for one ovs-appctl call)
        _sh(["ovs-appctl", "dpctl/ct-disable-tcp-seq-chk"])
        fe, be, zone = FRONTEND_PORT, BACKEND_PORT, CT_ZONE
        for gid, vport, backends in HAND_MADE_SERVICES:
            self._select_group(gid, [f"ct(commit,zone={zone},nat(dst={ip}:{port}),table=3)"
                                     for ip, port in backends])
            self.net.lb_ofctl("add-flow", f"priority=100,in_port={fe},tcp,nw_dst={VIP},"
                              f"tp_dst={vport},actions=ct(zone={zone},nat,table=1)")
            self.net.lb_ofctl("add-flow", f"table=1,priority=100,ct_state=+new+trk,tcp,"
                              f"nw_dst={VIP},tp_dst={vport},actions=group:{gid}")
        for flow in (f"table=1,priority=90,ct_state=+est+trk,actions=output:{be}",
                     f"priority=100,in_port={be},tcp,actions=ct(zone={zone},nat,table=2)",
                     f"table=2,priority=0,actions=output:{fe}",
                     f"table=3,priority=0,actions=output:{be}"):
            self.net.lb_ofctl("add-flow", flow)
        self._pass_through()

    def _select_group(self, gid: int, bucket_actions: list[str]) -> None:
        """A dp_hash select group with one bucket of weight 1 per action list."""
        buckets = ",".join(f"bucket=weight:1,actions={a}" for a in bucket_actions)
        self.net.lb_ofctl("add-group",
                          f"group_id={gid},type=select,selection_method=dp_hash,{buckets}")

    def _pass_through(self) -> None:
        """Everything else crosses lb0 unchanged, as with lbrp."""
        self.net.lb_ofctl("add-flow", f"priority=0,in_port={FRONTEND_PORT},"
                          f"actions=output:{BACKEND_PORT}")
        self.net.lb_ofctl("add-flow", f"priority=0,in_port={BACKEND_PORT},"
                          f"actions=output:{FRONTEND_PORT}")

    def close(self) -> None:
        """Stop the controller (the lab's context manager stops the rest)."""
        self.stop_controller()


def target(setup: str) -> tuple[str, int, list[str]]:
    """Where the session client connects for ``setup``: address, port, extra arguments.

    Plain forwarding spreads its sessions over the backends' own addresses, so that
    every setup loads the same three backend processes. With plain on one backend
    process, even the stateless select group measured 0.75-0.95x of it on 2 cores;
    against the spread baseline it measures 0.93-1.04x.
    """
    if setup == "plain":
        spread = ",".join(f"{ip}:{port}" for ip, port in BACKENDS)
        return BACKENDS[0][0], BACKENDS[0][1], ["--spread", spread]
    return VIP, VPORT, []


_PENDING: weakref.WeakKeyDictionary[IO[str], bytearray] = weakref.WeakKeyDictionary()


def read_line(f: IO[str], deadline: float) -> str:
    """One line from a pipe, "" at EOF or deadline.

    Reads the file descriptor itself (os.read), so a second line that came in the
    same chunk is kept for the next call instead of hiding in Python's buffer,
    where select() cannot see it.
    """
    fd = f.fileno()
    buf = _PENDING.setdefault(f, bytearray())
    while True:
        i = buf.find(b"\n")
        if i >= 0:
            line = bytes(buf[:i + 1])
            del buf[:i + 1]
            return line.decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                rest = bytes(buf)
                buf.clear()
                return rest.decode(errors="replace")
            buf += chunk


@contextlib.contextmanager
def bench_lab(opts: Options, work: Path, out: dict[str, Any], servers: bool
              ) -> Iterator[Bench]:
    """A lab (1 client, 3 backends) with a Bench; everything stopped on exit.

    The wait for a quiet machine before it goes to ``out["quiet_waits"]``.
    """
    log("waiting for the lab lock and building the lab")
    with lab(n_clients=1, n_backends=N_BACKENDS, of_port=free_port(), servers=servers,
             tcp_ports=tuple(p for _, p in BACKENDS), udp_ports=(),
             lock_timeout=3600.0, plain=opts.lab_switches, lb_ports=opts.lb_ports) as net:
        bench = Bench(net, opts, work)
        out.setdefault("quiet_waits", []).append(wait_quiet())
        try:
            yield bench
        finally:
            bench.close()


# ------------------------------------------------------------------ phases

def run_iperf(b: Bench, setup: str) -> dict[str, Any]:
    """iperf3 c1 -> b1:5201 (or VIP:5201) for opts.iperf_s seconds."""
    net = b.net
    srv = net.popen_tracked(net.backends[0], ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ss = run_in(net.backends[0], ["ss", "-Hltn", f"sport = :{IPERF_PORT}"]).stdout
            if ss.strip():
                break
            time.sleep(0.1)
        dst = backend_ip(1) if setup == "plain" else VIP
        res = run_in(net.clients[0], ["iperf3", "-c", dst, "-p", str(IPERF_PORT), "-t",
                                      str(b.opts.iperf_s), "-J"], timeout=b.opts.iperf_s + 30)
        try:
            doc = json.loads(res.stdout)
        except json.JSONDecodeError:
            return {"error": f"iperf3 rc={res.returncode}: {res.stderr[-500:]}"}
        if "error" in doc:
            return {"error": doc["error"]}
        end = doc.get("end", {})
        return {"received_gbps": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
                "sent_gbps": round(end["sum_sent"]["bits_per_second"] / 1e9, 3),
                "retransmits": end["sum_sent"].get("retransmits"),
                "cpu": end.get("cpu_utilization_percent")}
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.wait(timeout=2)
        if srv.poll() is None:
            srv.terminate()


def run_sessions(b: Bench, setup: str, src: str, rate: float | None = None,
                 seconds: float | None = None) -> dict[str, Any]:
    """New TCP sessions (connect, request, close) from ``src`` for ``seconds`` (default
    opts.session_s).

    As fast as the setup allows, or ``rate`` sessions/s (paced).
    """
    ip, port, extra = target(setup)
    if rate:
        extra = [*extra, "--rate", str(rate)]
    d = b.opts.session_s if seconds is None else seconds
    res = b.net.run_client(b.net.clients[0], ip, "tcp", port, sessions=10_000_000,
                           concurrency=b.opts.concurrency, timeout=2.0,
                           extra=["--duration", str(d), "--src", src, *extra],
                           run_timeout=d + 40)
    res["ok_per_s"] = round(res["ok"] / res["elapsed_s"], 1) if res["elapsed_s"] else None
    res["src"] = src
    return res


def fresh_sources(net: LbrpNet, n: int, first: int) -> list[str]:
    """Add ``n`` addresses 10.0.0.<first>.. to c1 and widen its ephemeral port range.

    Every session run gets its own source address: a client port reused towards a
    backend that still holds the previous run's connection in TIME_WAIT makes
    connects slow (seen here: 3,700 -> 440 sessions/s for a second plain run from
    the same address), which would make the result depend on the order of the setups.
    """
    c1 = net.clients[0]
    intf = c1.defaultIntf().name
    run_in(c1, "sysctl -qw net.ipv4.ip_local_port_range='1024 65535'", check=True)
    addrs = [f"10.0.0.{first + i}" for i in range(n)]
    if first + n > LAST_SOURCE:
        raise LabError(f"too many source addresses: {n} from 10.0.0.{first}")
    for ip in addrs:
        run_in(c1, ["ip", "addr", "add", f"{ip}/24", "dev", intf], check=True)
    return addrs


def ovs_costs(delta: dict[str, Any], sessions: int) -> dict[str, Any]:
    """The few OVS counters that explain the cost, per new session."""
    cov, pmd = delta["coverage"], delta["pmd"]
    n = max(1, sessions)
    out: dict[str, Any] = {k: cov.get(k, 0) for k in COVERAGE_KEYS}
    out.update({f"pmd {k}": int(pmd.get(k, 0)) for k in PMD_KEYS})
    out["per_session"] = {
        "xlate_actions": round(cov.get("xlate_actions", 0) / n, 3),
        "upcalls": round(pmd.get("miss with success upcall", 0) / n, 3),
        "packets": round(pmd.get("packets received", 0) / n, 2),
        "lab_packets": round(delta["lab_rx_packets"] / n, 2),
        "rev_flow_table": round(cov.get("rev_flow_table", 0) / n, 3),
        "dpif_flow_put": round(cov.get("dpif_flow_put", 0) / n, 3),
        "vswitchd_cpu_ms": round(1000 * sum(delta["vswitchd_cpu_s"].values()) / n, 3),
    }
    out["vswitchd_cpu_s"] = delta["vswitchd_cpu_s"]
    out["datapath_flows_after"] = delta.get("dp_flows_after", {}).get("lab")
    out["datapath_flows_all_after"] = delta["upcall_after"].get("current")
    out["datapath_flows_max"] = delta["upcall_after"].get("max")
    out["dump_duration_ms"] = delta["upcall_after"].get("dump_duration_ms")
    return out


def round_order(setups: Sequence[str], r: int) -> list[str]:
    """The setups of round ``r`` (from 0) in the order they run: odd rounds reverse
    them, so that no setup always runs right after the same one (and what it leaves
    behind: conntrack measured 0.77-0.88x of plain right after learn)."""
    return list(setups) if r % 2 == 0 else list(reversed(setups))


def phase_traffic(opts: Options, work: Path, out: dict[str, Any]) -> None:
    """Alternating rounds: per setup, iperf3 then new sessions."""
    rounds: list[dict[str, Any]] = out.setdefault("rounds", [])
    unavailable: dict[str, str] = out.setdefault("unavailable", {})
    settles: list[dict[str, Any]] = out.setdefault("settles", [])
    for r in range(opts.rounds):
        if r:
            yield_lock()
        # one lab per round: others waiting for the lab lock get it between rounds
        with bench_lab(opts, work, out, servers=True) as b:
            b.unavailable = unavailable
            b.settles = settles
            n = 2 * len(opts.setups)  # one address for the saturated run, one for the paced
            srcs = iter(fresh_sources(b.net, n, FIRST_SOURCE + r * n))
            for setup in round_order(opts.setups, r):
                src, paced_src = next(srcs), next(srcs)
                if not b.use(setup):
                    continue
                rounds.append(traffic_round(b, r, setup, src, paced_src))


def phase_rate(opts: Options, work: Path, out: dict[str, Any]) -> None:
    """New sessions/s only, in one lab: ``rate_reps`` saturated runs per setup, the
    setups alternating as in the traffic phase, each run on a freshly programmed lb0.

    Single 10 s runs move by up to 25 % against the plain run next to them, so the
    traffic phase's few rounds leave a paired ratio uncertain by several points; this
    phase takes many pairs and reports an interval for their median.
    """
    runs: list[dict[str, Any]] = out.setdefault("runs", [])
    unavailable: dict[str, str] = out.setdefault("unavailable", {})
    with bench_lab(opts, work, out, servers=True) as b:
        b.unavailable = unavailable
        schedule = opts.rate_schedule()
        srcs = iter(fresh_sources(b.net, opts.rate_sources, FIRST_SOURCE))
        for rnd, setups in schedule:
            for setup in setups:
                src = next(srcs)
                warm_src = next(srcs) if opts.warmup_s else None
                b.clear()  # the same setup twice in a row starts afresh too
                if not b.use(setup):
                    continue
                quiet = wait_quiet()  # e.g. ovs-vswitchd still freeing a learn run's flows
                warmup = (run_sessions(b, setup, warm_src, seconds=opts.warmup_s)
                          if warm_src else None)
                before, ctl_before = vswitchd_threads_cpu(), controller_cpu_s(b)
                sess = run_sessions(b, setup, src)
                by_thread = vswitchd_cpu_since(before)
                cpu = sum(by_thread.values())
                n = max(1, sess["ok"] + sess["failed"])
                run = {"round": rnd, "setup": setup, "sessions": sess,
                       "vswitchd_cpu_ms_per_session": round(1000 * cpu / n, 3),
                       "vswitchd_cpu_s_by_thread": {
                           k: round(v, 3) for k, v in by_thread.items() if v},
                       "vswitchd_rss_kib": vswitchd_rss_kib(), "quiet_wait": quiet}
                if ctl_before is not None and (ctl_after := controller_cpu_s(b)) is not None:
                    run["controller_cpu_ms_per_session"] = round(
                        1000 * (ctl_after - ctl_before) / n, 4)
                if warmup is not None:
                    run["warmup"] = {k: warmup.get(k) for k in
                                     ("duration_s", "ok", "failed", "ok_per_s", "src")}
                runs.append(run)
                log(f"rate {rnd}/{len(schedule)} {setup}: {sess['ok_per_s']} sessions/s, "
                    f"p99 {sess['connect_ms_p99']} ms, failed {sess['failed']}")


def median_interval(values: Sequence[float], level: float = 0.9,
                    resamples: int = 2000) -> tuple[float, float] | None:
    """A bootstrap ``level`` interval for the median of ``values`` (fixed seed, so a
    result file always gives the same interval); None for fewer than 3 values."""
    if len(values) < 3:
        return None
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values)))
                  for _ in range(resamples))
    tail = (1 - level) / 2
    return (round(meds[int(tail * resamples)], 3),
            round(meds[min(resamples - 1, int((1 - tail) * resamples))], 3))


def phase_throughput(opts: Options, work: Path, out: dict[str, Any]) -> None:
    """TCP throughput only: in one lab, ``throughput_reps`` iperf3 runs per setup, the
    setups alternating as in the traffic phase (a single iperf3 run through the netdev
    datapath moves by 10-25 % from one run to the next, so it takes many)."""
    runs: list[dict[str, Any]] = out.setdefault("runs", [])
    unavailable: dict[str, str] = out.setdefault("unavailable", {})
    with bench_lab(opts, work, out, servers=False) as b:
        b.unavailable = unavailable
        for r in range(opts.throughput_reps):
            for setup in round_order(opts.setups, r):
                if not b.use(setup):
                    continue
                log(f"throughput {r + 1}/{opts.throughput_reps} {setup}: "
                    f"iperf3 {opts.iperf_s:g} s")
                before = vswitchd_threads_cpu()
                iperf = run_iperf(b, setup)
                cpu = {k: round(v, 2) for k, v in vswitchd_cpu_since(before).items()}
                runs.append({"round": r + 1, "setup": setup, "iperf": iperf,
                             "vswitchd_cpu_s": cpu,
                             "cpu_s_per_gb": cpu_per_gb(iperf, cpu, opts.iperf_s)})
                log(f"  {setup}: {iperf.get('received_gbps')} Gbit/s, "
                    f"{runs[-1]['cpu_s_per_gb']} ovs-vswitchd CPU s per GB")


def cpu_per_gb(iperf: dict[str, Any], cpu_s: dict[str, float], seconds: float) -> float | None:
    """ovs-vswitchd CPU seconds (``cpu_s``: per thread) per gigabyte iperf3 delivered."""
    gbps = iperf.get("received_gbps")
    if not gbps:
        return None
    return round(sum(cpu_s.values()) / (gbps * seconds / 8), 3)


def traffic_round(b: Bench, r: int, setup: str, src: str, paced_src: str) -> dict[str, Any]:
    """One setup's turn in round ``r``: iperf3, new sessions from ``src``, then paced
    sessions from ``paced_src``."""
    opts = b.opts
    rec: dict[str, Any] = {"round": r + 1, "setup": setup,
                           "started": dt.datetime.now().isoformat()}
    log(f"round {r + 1}/{opts.rounds} {setup}: iperf3 {opts.iperf_s:g} s")
    rec["iperf"] = run_iperf(b, setup)
    b.settle()
    log(f"round {r + 1}/{opts.rounds} {setup}: sessions {opts.session_s:g} s")
    s0 = snapshot()
    capture = (hop_capture(b, f"{setup}-{r + 1}-sessions", hops.reuse) if opts.hops
               else contextlib.nullcontext(None))
    with capture as reused:
        sess = run_sessions(b, setup, src)
    if reused is not None:
        sess["reuse"] = reused
    time.sleep(1.5)  # coverage totals are folded in about every second
    s1 = snapshot()
    delta = diff(s0, s1)
    delta["dp_flows_after"] = dp_flow_split()
    rec["sessions"] = sess
    rec["ovs"] = delta
    rec["costs"] = ovs_costs(delta, sess["ok"] + sess["failed"])
    rec["lb_flows"] = lb_flow_counts()
    if opts.paced_rate:
        b.settle()
        rec["paced_wait_s"] = b.wait_sessions_gone()
        log(f"round {r + 1}/{opts.rounds} {setup}: paced sessions, {opts.paced_rate:g}/s")
        capture = (hop_capture(b, f"{setup}-{r + 1}") if opts.hops
                   else contextlib.nullcontext(None))
        with capture as split:
            rec["paced"] = run_sessions(b, setup, paced_src, rate=opts.paced_rate)
        if split is not None:
            rec["paced"]["hops"] = split
    log(f"  {setup}: {sess['ok_per_s']} sessions/s, p50 {sess['connect_ms_p50']} "
        f"ms, p99 {sess['connect_ms_p99']} ms, failed {sess['failed']}, "
        f"paced p99 {rec.get('paced', {}).get('connect_ms_p99')} ms, "
        f"iperf {rec['iperf'].get('received_gbps')} Gbit/s, "
        f"xlate/session {rec['costs']['per_session']['xlate_actions']}")
    return rec


def hop_split(fe: list[hops.Packet], be: list[hops.Packet]) -> dict[str, Any]:
    """Where each connect's time goes (paced runs)."""
    return hops.summary(hops.connects(fe, be))


@contextlib.contextmanager
def hop_capture(b: Bench, name: str,
                summarize: Callable[[list[hops.Packet], list[hops.Packet]], dict[str, Any]]
                = hop_split) -> Iterator[dict[str, Any]]:
    """tcpdump lb0's frontend and backend ports for the block (SYNs and SYN-ACKs only).

    Yields a dict that is filled with ``summarize(frontend, backend)`` once the block
    is done.
    """
    files = {port: b.work / f"hops-{name}-{port}.txt" for port in (FRONTEND_PORT, BACKEND_PORT)}
    procs: list[subprocess.Popen] = []
    split: dict[str, Any] = {}
    try:
        for port, path in files.items():
            with open(path, "w") as out:
                procs.append(subprocess.Popen(
                    ["tcpdump", "-i", b.net.lb.intfs[port].name, "-n", "-tt", "-l",
                     "-B", "8192", hops.TCPDUMP_FILTER],
                    stdout=out, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 10
        for proc in procs:  # tcpdump says "listening on ..." once it captures
            assert proc.stderr is not None
            line = "-"
            while line and "listening" not in line:
                line = read_line(proc.stderr, deadline)
            if not line:
                raise LabError(f"tcpdump did not start on lb0: {proc.args}")
        yield split
    finally:
        time.sleep(0.3)  # the last SYN-ACKs
        for proc in procs:
            _kill_tree(proc)
            if proc.stderr is not None:
                proc.stderr.close()
    with open(files[FRONTEND_PORT]) as fe, open(files[BACKEND_PORT]) as be:
        split.update(summarize(hops.parse(fe), hops.parse(be)))


def held_backends() -> list[tuple[str, int]]:
    """Backends of the held phase: every lab backend on each of HELD_PORTS."""
    return [(backend_ip(i), p) for i in range(1, N_BACKENDS + 1) for p in HELD_PORTS]


HELD_OPEN_S = 600.0  # the held phase's time to open its sessions (quick: 60 s)
HELD_IDLE_S = 900  # its tcp_idle_timeout: the first sessions stay idle while the rest open


def held_config(mode: str) -> dict[str, Any]:
    """Config of the held phase: VIP:8000 -> 12 backends (one server process each). Its
    TCP idle timeout outlasts the opening of every session (learn opened 375-990 a
    second in the full runs: 100,000 took up to 267 s, over the default 300 s idle
    timeout's room), so that the phase measures how many are held, not how fast."""
    return {"frontend_port": FRONTEND_PORT, "backend_port": BACKEND_PORT,
            "session_pinning": mode, "tcp_idle_timeout": HELD_IDLE_S,
            "services": [service(VIP, "tcp", VPORT, held_backends(), "held")]}


def ovs_memory() -> dict[str, int]:
    """``ovs-appctl memory/show`` (rules, udpif keys, ...)."""
    text = sh_out("ovs-appctl", "memory/show")
    return {k: int(v) for k, v in re.findall(r"([\w-]+):(\d+)", text)}


def vswitchd_socket_drops() -> int:
    """Packets ovs-vswitchd's receive sockets (one per netdev port) dropped so far.

    The netdev datapath reads a port through a packet socket; while ovs-vswitchd is
    busy (upcalls), the socket buffer fills and the kernel drops there (``ss`` ``d``).
    """
    return sum(int(m.group(1)) for line in sh_out("ss", "-0", "-m", "-p", "-n", "-H").splitlines()
               if (m := re.search(r"\*:\S+\s.*\"ovs-vswitchd\".*skmem:\(.*\bd(\d+)\)", line)))


def ct_count() -> int | None:
    """Connections in lbrp's conntrack zone (every zone if the app names none)."""
    zone = lbrp_ct_zone()
    args = ["ovs-appctl", "dpctl/ct-stats-show"] + ([f"zone={zone}"] if zone is not None else [])
    m = re.search(r"Total: (\d+)", sh_out(*args))
    return int(m.group(1)) if m else None


def backend_established(net: LbrpNet) -> int:
    """TCP connections in state ESTABLISHED on the backends (``ss -s``)."""
    total = 0
    for b in net.backends:
        m = re.search(r"estab (\d+)", run_in(b, ["ss", "-s"]).stdout)
        total += int(m.group(1)) if m else 0
    return total


def server_log_tails(net: LbrpNet) -> dict[str, str]:
    """Non-empty stderr tails of the lab's backend servers (tracebacks, warnings)."""
    out: dict[str, str] = {}
    for path in sorted(Path(net.logdir).glob("server-*.log")):
        text = path.read_text(errors="replace").strip()
        if text:
            out[path.name] = text[-1500:]
    return out


def holders_read(procs: list[subprocess.Popen], prefix: str, deadline: float
                 ) -> list[dict[str, Any] | None]:
    """The ``<prefix> {json}`` line of every holder (None for one that gave none in time)."""
    out: list[dict[str, Any] | None] = []
    for p in procs:
        assert p.stdout is not None
        line = read_line(p.stdout, deadline)
        out.append(json.loads(line.split(" ", 1)[1]) if line.startswith(prefix + " ")
                   else None)
    return out


def merge_holders(parts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Totals over the holder processes."""
    got = [x for x in parts if x]
    errors: dict[str, int] = {}
    lost_how: dict[str, int] = {}
    for x in got:
        for k, v in x["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in x.get("lost_how", {}).items():
            lost_how[k] = lost_how.get(k, 0) + v
    open_s = max((x["open_s"] for x in got), default=0.0)
    est = sum(x["established"] for x in got)
    out: dict[str, Any] = {
        "processes": len(parts), "reported": len(got),
        "attempted": sum(x["attempted"] for x in got), "established": est,
        "alive": sum(x["alive"] for x in got), "open_s": open_s,
        "open_per_s": round(est / open_s, 1) if open_s else None,
        "connect_ms_p50_median": median([x["connect_ms_p50"] for x in got]),
        "connect_ms_p99_max": max((x["connect_ms_p99"] or 0 for x in got), default=None),
        "errors": errors, "lost_how": lost_how}
    if got and all("held" in x for x in got):
        out["held"] = sum(x["held"] for x in got)
        out["verify_s"] = max(x["verify_s"] for x in got)
        out["closed_before_ping"] = sum(x.get("closed_before_ping", 0) for x in got)
        out["no_answer"] = sum(x.get("no_answer", 0) for x in got)
        out["no_answer_sample"] = [n for x in got
                                   for n in x.get("no_answer_sample", [])][:NO_ANSWER_SAMPLE]
    return out


def phase_held(opts: Options, work: Path, out: dict[str, Any]) -> None:
    """Hold opts.held sessions per setup (plain and the lbrp modes).

    The sandbox caps open files at the hard RLIMIT_NOFILE (20,000 here, no
    CAP_SYS_RESOURCE to raise it), so sessions are spread over several holder
    processes and one backend_server.py process per backend port.
    """
    results: list[dict[str, Any]] = out.setdefault("runs", [])
    with bench_lab(opts, work, out, servers=False) as b:
        out["unavailable"] = b.unavailable
        net = b.net
        for port in HELD_PORTS:
            net.start_backend_servers(tcp_ports=(port,), udp_ports=(),
                                      extra_args=["--request-timeout", "60"],
                                      log_suffix=f"-{port}")
        c1 = net.clients[0]
        intf = c1.defaultIntf().name
        for ip in EXTRA_CLIENT_IPS:
            run_in(c1, ["ip", "addr", "add", f"{ip}/24", "dev", intf], check=True)
        run_in(c1, "sysctl -qw net.ipv4.ip_local_port_range='1024 65535'", check=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        per_proc = max(1000, min(HOLDER_MAX, nofile[0] - 2000))
        n_procs = -(-opts.held // per_proc)
        out["limits"] = {
            "client_port_range": run_in(c1, "sysctl -n net.ipv4.ip_local_port_range")
            .stdout.split(),
            "client_addresses_per_setup": HELD_ADDRS_PER_SETUP,
            "backend_somaxconn": run_in(net.backends[0], "sysctl -n net.core.somaxconn")
            .stdout.strip(),
            "backend_listen_backlog": 4096, "nofile": list(nofile),
            "holder_processes": n_procs, "server_processes": len(held_backends()),
            "fs_file_nr": Path("/proc/sys/fs/file-nr").read_text().split()}

        # below the held config's tcp_idle_timeout: the first sessions stay idle while
        # the others open
        open_deadline = 60.0 if opts.quick else HELD_OPEN_S
        held_setups = ["plain"] + [s for s in opts.setups if s.startswith("lbrp-")]
        for k, setup in enumerate(held_setups):
            if not b.use(setup, held_config):
                continue
            srcs = EXTRA_CLIENT_IPS[k * HELD_ADDRS_PER_SETUP:(k + 1) * HELD_ADDRS_PER_SETUP]
            dsts = ([f"{ip}:{p}" for ip, p in held_backends()] if setup == "plain"
                    else [f"{VIP}:{VPORT}"])
            rec: dict[str, Any] = {"setup": setup, "n": opts.held, "sources": srcs,
                                   "started": dt.datetime.now().isoformat()}
            rec["rss_kib_before"] = vswitchd_rss_kib()
            rec["memory_before"] = ovs_memory()
            rec["dp_flows_before"] = upcall_show()
            rec["ct_before"] = ct_count()
            # a previous setup's connections whose closing RSTs were dropped stay
            # ESTABLISHED on the backends (they have no keepalive)
            rec["backend_established_before"] = backend_established(net)
            log(f"held {setup}: opening {opts.held} sessions from {len(srcs)} addresses, "
                f"{n_procs} processes")
            procs: list[subprocess.Popen] = []
            errlogs: list[IO[str]] = []
            s0 = snapshot()
            try:
                for k in range(n_procs):
                    n = opts.held // n_procs + (1 if k < opts.held % n_procs else 0)
                    args = [sys.executable, str(HOLDER), "--n", str(n),
                            # the total is the cap (a floor per process made 64 into 180)
                            "--inflight", str(max(1, opts.held_inflight // n_procs)),
                            "--open-deadline", str(open_deadline),
                            "--wait-go", str(open_deadline + 180),
                            "--verify-rate", str(round(opts.held_verify_rate / n_procs))]
                    for d in dsts:
                        args += ["--dst", d]
                    for src in srcs:
                        args += ["--src", src]
                    errf = open(work / f"holder-{setup}-{k}.log", "w")  # noqa: SIM115
                    errlogs.append(errf)
                    procs.append(net.popen_tracked(c1, args, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=errf,
                                                   text=True))
                opened = holders_read(procs, "ESTABLISHED",
                                      time.monotonic() + open_deadline + 90)
                rec["open"] = merge_holders(opened)
                d = diff(s0, snapshot())
                rec["open_ovs"] = {k: d[k] for k in ("seconds", "vswitchd_cpu_s", "top_cpu",
                                                     "foreign_cpu_s", "foreign_rx_packets",
                                                     "lab_rx_packets", "pmd")}
                rec["open_ovs"]["coverage"] = {k: d["coverage"].get(k, 0)
                                               for k in COVERAGE_KEYS}
                time.sleep(2.0)
                rec["rss_kib_held"] = vswitchd_rss_kib()
                rec["memory_held"] = ovs_memory()
                rec["lb_flows"] = lb_flow_counts()
                rec["dp_flows_held"] = upcall_show()
                rec["ct_held"] = ct_count()
                rec["backend_established"] = backend_established(net)
                drops0 = vswitchd_socket_drops()
                for p in procs:
                    assert p.stdin is not None
                    with contextlib.suppress(OSError):
                        p.stdin.write("go\n")
                        p.stdin.flush()
                done = holders_read(procs, "DONE", time.monotonic() + 240)
                rec["done"] = merge_holders(done)
                rec["verify_socket_drops"] = vswitchd_socket_drops() - drops0
                for p in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=30)
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                for f in errlogs:
                    f.close()
            errs = [(work / f"holder-{setup}-{k}.log").read_text()[-400:]
                    for k in range(n_procs)]
            rec["holder_stderr"] = [e for e in errs if e.strip()][:3]
            time.sleep(2.0)
            rec["rss_kib_after_close"] = vswitchd_rss_kib()
            est = rec["open"]["established"]
            grow = (rec["rss_kib_held"] or 0) - (rec["rss_kib_before"] or 0)
            rec["rss_growth_mib"] = round(grow / 1024, 1)
            rec["rss_kib_per_session"] = round(grow / est, 2) if est else None
            rec["backend_established_after_close"] = backend_established(net)
            results.append(rec)
            log(f"  {setup}: established {est}, held {rec['done'].get('held')}, "
                f"{rec['open']['open_per_s']}/s, errors {rec['open']['errors']}, "
                f"lost before PING {rec['done'].get('lost_how')}, "
                f"learned flows {learned_flows(rec['lb_flows'])}, "
                f"conntrack {rec['ct_held']}, RSS +{rec['rss_growth_mib']} MiB, backends "
                f"see {rec.get('backend_established')} established "
                f"({rec['backend_established_before']} of them before this run), "
                f"{rec['backend_established_after_close']} after its close")
        out["server_logs"] = server_log_tails(net)


CHANGE_LINE = re.compile(r"(?:^|\s)change: .* live in ([\d.]+) ms \((.*)\)$")


def change_steps(line: str) -> dict[str, float] | None:
    """The steps of a controller's "change: ... live in N ms (step ms, ...)" log line."""
    m = CHANGE_LINE.search(line)
    if not m:
        return None
    steps: dict[str, float] = {}
    for part in m.group(2).split(", "):
        step, _, ms = part.rpartition(" ")
        steps[step] = round(steps.get(step, 0.0) + float(ms), 1)
    steps["total"] = float(m.group(1))
    return steps


def change_latency(b: Bench, opts: Options, what: str, changes: int) -> dict[str, Any]:
    """REST PUT of a weight-65535 backend -> first UDP datagram at it; median of ``changes``."""
    net = b.net
    assert b.ctl is not None
    ctl = b.ctl
    b3, c1 = net.backends[2], net.clients[0]
    first = 9100
    ports = f"{first}-{first + changes - 1}"
    dur = changes * 60 + 30  # upper bound; both probes are stopped when done
    lst = net.popen_tracked(b3, [sys.executable, str(UDP_PROBE), "listen", "--bind",
                                 backend_ip(3), "--ports", ports, "--duration", str(dur)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    firsts: dict[int, float] = {}
    cond = threading.Condition()
    assert lst.stdout is not None
    if not read_line(lst.stdout, time.monotonic() + 10).startswith("READY"):
        raise LabError("udp_probe listen did not start")

    def reader() -> None:
        assert lst.stdout is not None
        while line := read_line(lst.stdout, time.monotonic() + dur + 60):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "FIRST":
                with cond:
                    firsts[int(parts[1])] = float(parts[2])
                    cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()
    snd = net.popen_tracked(c1, [sys.executable, str(UDP_PROBE), "send", "--dst",
                                 f"{UDP_VIP}:{UDP_PORT}", "--interval", str(opts.probe_interval),
                                 "--duration", str(dur)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[dict[str, Any]] = []
    log_start = ctl.log_path.stat().st_size
    try:
        time.sleep(1.0)
        for i in range(changes):
            port = first + i
            path = f"/services/{UDP_VIP}/udp/{UDP_PORT}/backends/{backend_ip(3)}/{port}"
            t0 = time.time()
            status, _ = ctl.request("PUT", path, {"weight": 65535}, timeout=60)
            t1 = time.time()
            with cond:
                cond.wait_for(lambda p=port: p in firsts, timeout=5.0)
                t_first = firsts.get(port)
            t2 = time.time()
            dstatus, _ = ctl.request("DELETE", path, timeout=60)
            t3 = time.time()
            samples.append({
                "put_status": status, "delete_status": dstatus,
                "put_ms": round((t1 - t0) * 1000, 2), "delete_ms": round((t3 - t2) * 1000, 2),
                "first_packet_ms": round((t_first - t0) * 1000, 2) if t_first else None,
                "first_after_reply_ms": round((t_first - t1) * 1000, 2) if t_first else None})
            time.sleep(0.2)
    finally:
        for proc in (snd, lst):
            if proc.poll() is None:
                proc.terminate()
    # the counter poll's cost (controllers since the twenty-first session say it)
    _, stats = ctl.request("GET", "/stats", timeout=60)
    ctl_stats = stats.get("controller", {}) if isinstance(stats, dict) else {}
    poll = {k: ctl_stats.get(k) for k in ("last_poll_seconds", "last_poll_requests")}
    with open(ctl.log_path, "rb") as f:
        f.seek(log_start)
        steps = [c for ln in f.read().decode(errors="replace").splitlines()
                 if (c := change_steps(ln))]
    if len(steps) == 2 * len(samples):  # a PUT's then a DELETE's, change after change
        for k, sample in enumerate(samples):
            sample["put_steps_ms"], sample["delete_steps_ms"] = steps[2 * k], steps[2 * k + 1]
    got = [s["first_packet_ms"] for s in samples if s["first_packet_ms"] is not None]
    puts = [s["put_ms"] for s in samples]
    dels = [s["delete_ms"] for s in samples]
    res = {"label": what, "changes": len(samples), "seen": len(got),
           "probe_interval_ms": opts.probe_interval * 1000,
           "first_packet_ms_median": round(statistics.median(got), 2) if got else None,
           "first_packet_ms_min": min(got) if got else None,
           "first_packet_ms_max": max(got) if got else None,
           "first_packet_ms_p90": (round(statistics.quantiles(got, n=10)[8], 2)
                                   if len(got) >= 2 else None),
           "put_ms_median": round(statistics.median(puts), 2) if puts else None,
           "delete_ms_median": round(statistics.median(dels), 2) if dels else None,
           **poll, "samples": samples}
    log(f"  change latency ({what}): first packet median {res['first_packet_ms_median']} ms "
        f"({len(got)}/{len(samples)} seen), PUT median {res['put_ms_median']} ms; last "
        f"counter poll {poll['last_poll_requests']} requests in {poll['last_poll_seconds']} s")
    for s in sorted(samples, key=lambda s: -(s["first_packet_ms"] or 1e9))[:3]:
        log(f"    slowest: first packet {s['first_packet_ms']} ms, PUT {s['put_ms']} ms, "
            f"controller {s.get('put_steps_ms')}")
    return res


def phase_control(opts: Options, work: Path, out: dict[str, Any]) -> None:
    """Start-up programming time of a big config and REST change latencies, per lbrp mode."""
    modes: dict[str, Any] = out.setdefault("modes", {})
    with bench_lab(opts, work, out, servers=False) as b:
        # OVS 3.1.0-3.1.2 apply a Controller's max_backoff only to a connection that exists
        # when the bridge is next reconfigured (fixed by OVS commit 4ced485f8). Until lb0
        # has been connected once, it retries after 1, 2, 4, then every 8 s, so the first
        # start would wait up to 8 s for the switch. One unmeasured start (its OVSDB
        # writes reconfigure the bridge while connected) makes the measured ones
        # controller restarts, as in production.
        try:
            b.start_controller(bench_config("learn"), "warm-up")
        except ModeUnavailable as exc:
            log(f"control: warm-up start failed: {exc}")
        b.clear()
        for setup in [s for s in opts.setups if s.startswith("lbrp-")]:
            mode = setup.removeprefix("lbrp-")
            rec: dict[str, Any] = {"services": opts.cp_services, "backends": opts.cp_backends,
                                   "starts": []}
            modes[setup] = rec
            big = big_config(mode, opts.cp_services, opts.cp_backends)
            try:
                for r in range(opts.cp_rounds):
                    b.clear()
                    log(f"control {setup}: start with {opts.cp_services} x {opts.cp_backends} "
                        f"(start {r + 1}/{opts.cp_rounds})")
                    st = b.start_controller(big, f"{setup}-big")
                    start = asdict(st)
                    start["lb_flows"] = flow_count()
                    start["groups"] = len([ln for ln in b.net.lb_ofctl("dump-groups")
                                           .splitlines() if "group_id=" in ln])
                    rec["starts"].append(start)
                    log(f"  programmed after {st.programmed_s} s (REST up {st.rest_s} s, "
                        f"switch connected {st.switch_wait_s} s later); "
                        f"log: {st.log_flows} flows, {st.log_groups} groups in "
                        f"{st.log_seconds} s")
                b.setup = f"{setup}-big"
                rec["change_big"] = change_latency(b, opts, f"{opts.cp_services} services",
                                                   opts.changes_big)
                b.clear()
                small = {**bench_config(mode)}
                small["services"] = [*small["services"], udp_service()]
                b.start_controller(small, f"{setup}-small")
                b.setup = f"{setup}-small"
                rec["change_small"] = change_latency(b, opts, "3 services", opts.changes)
            except ModeUnavailable as exc:
                rec["unavailable"] = str(exc)
                log(f"control {setup}: unavailable: {exc}")
            finally:
                b.clear()


# ----------------------------------------------------------------- summary

def median(values: Sequence[float | None]) -> float | None:
    """Median of the non-None values."""
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def dig(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """``record[k1][k2]...``, or None where a key is missing."""
    value: Any = record
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value


def paired_ratio_lists(recs: list[dict[str, Any]], setups: Sequence[str],
                       get: Callable[[dict[str, Any]], float | None]) -> dict[str, list[float]]:
    """Per setup (plain left out), its value over plain's in the same round, round by round."""
    by_round: dict[int, dict[str, float | None]] = {}
    for rec in recs:
        by_round.setdefault(rec["round"], {})[rec["setup"]] = get(rec)
    return {s: [vals[s] / vals["plain"] for vals in by_round.values()
                if vals.get(s) is not None and vals.get("plain")]
            for s in setups if s != "plain"}


def paired_ratios(recs: list[dict[str, Any]], setups: Sequence[str],
                  get: Callable[[dict[str, Any]], float | None]) -> dict[str, float | None]:
    """Per setup, the median over rounds of its value over plain's in the same round.

    Plain is 1.0 by definition. A round's plain ran next to the setup, so slow drift of
    the machine cancels out, unlike a ratio of the two setups' medians.
    """
    lists = paired_ratio_lists(recs, setups, get)
    return {s: 1.0 if s == "plain" else median(lists[s]) for s in setups}


def summarize(res: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    """Rows: measure, per-setup value, ratio vs plain (where plain has the measure)."""
    rows: list[dict[str, Any]] = []
    traffic = res["phases"].get("traffic", {}).get("rounds", [])
    throughput = res["phases"].get("throughput", {}).get("runs", [])
    rate_runs = res["phases"].get("rate", {}).get("runs", [])
    held = res["phases"].get("held", {}).get("runs", [])
    control = res["phases"].get("control", {}).get("modes", {})
    setups = opts.setups

    def per_setup(get: Callable[[dict[str, Any]], float | None],
                  recs: list[dict[str, Any]]) -> dict[str, float | None]:
        return {s: median([get(r) for r in recs if r["setup"] == s]) for s in setups}

    def add(measure: str, values: dict[str, float | None], ratio: bool = True,
            better: str = "higher") -> None:
        rows.append({"measure": measure, "values": values, "ratio": ratio, "better": better})

    def add_paired(measure: str, get: Callable[[dict[str, Any]], float | None],
                   recs: list[dict[str, Any]], better: str = "higher") -> None:
        add(f"{measure}: ratio to the same round's plain, median of rounds",
            paired_ratios(recs, setups, get), better=better)

    if traffic:
        add("new sessions/s (ok, median of rounds)",
            per_setup(lambda r: r["sessions"]["ok_per_s"], traffic))
        add("connect p50 ms", per_setup(lambda r: r["sessions"]["connect_ms_p50"], traffic),
            better="lower")
        add("connect p99 ms", per_setup(lambda r: r["sessions"]["connect_ms_p99"], traffic),
            better="lower")
        add("connects over 1 s (SYN retransmitted) per round",
            per_setup(lambda r: r["sessions"].get("connects_over_1s"), traffic), ratio=False,
            better="lower")
        add("failed sessions per round", per_setup(lambda r: r["sessions"]["failed"], traffic),
            ratio=False, better="lower")
        if opts.hops:
            for key, text in (("port_rewritten", "client ports lb0 rewrote"),
                              ("syn_resent", "SYNs the client sent again")):
                add(f"{text} per round",
                    per_setup(lambda r, k=key: dig(r, ("sessions", "reuse", k)), traffic),
                    ratio=False, better="lower")
        if opts.paced_rate:
            rate = f"{opts.paced_rate:g}/s paced"
            for pct in ("p50", "p99", "p999"):
                add(f"connect {pct} ms at {rate}",
                    per_setup(lambda r, k=f"connect_ms_{pct}": dig(r, ("paced", k)), traffic),
                    better="lower")
            add(f"late starts at {rate} (all workers busy)",
                per_setup(lambda r: dig(r, ("paced", "late_starts")), traffic), ratio=False,
                better="lower")
            if opts.hops:
                for seg, text in hops.SEGMENTS.items():
                    for pct in ("p50", "p99"):
                        add(f"  {text}, {pct} ms at {rate}",
                            per_setup(lambda r, k=f"{seg}_ms_{pct}": dig(r, ("paced", "hops", k)),
                                      traffic), better="lower")
        add("TCP throughput Gbit/s", per_setup(lambda r: r["iperf"].get("received_gbps"),
                                               traffic))
        add_paired("new sessions/s", lambda r: r["sessions"]["ok_per_s"], traffic)
        if opts.paced_rate:
            add_paired(f"connect p99 at {opts.paced_rate:g}/s paced",
                       lambda r: dig(r, ("paced", "connect_ms_p99")), traffic, better="lower")
        add_paired("TCP throughput", lambda r: r["iperf"].get("received_gbps"), traffic)
        per_session = ("costs", "per_session")
        diagnostics: list[tuple[str, tuple[str, ...], bool]] = [  # (label, keys, ratio)
            ("xlate_actions per session", (*per_session, "xlate_actions"), False),
            ("upcalls per session", (*per_session, "upcalls"), False),
            ("datapath packets per session (lab ports)", (*per_session, "lab_packets"), False),
            ("ovs-vswitchd CPU ms per session", (*per_session, "vswitchd_cpu_ms"), True),
            *((f"  vswitchd CPU s per round: {label} thread", ("ovs", "vswitchd_cpu_s", kind),
               False) for kind, label in (("ovs-vswitchd", "main"), ("handler", "handler"),
                                          ("revalidator", "revalidator"))),
            ("CPU s of other (non-bench) processes per round", ("ovs", "foreign_cpu_s"), False),
            ("packets on other bridges' ports per round", ("ovs", "foreign_rx_packets"), False),
            ("rev_flow_table per session", (*per_session, "rev_flow_table"), False),
            ("lab datapath flows after a round", ("costs", "datapath_flows_after"), False),
            ("revalidator dump ms after a round", ("costs", "dump_duration_ms"), False),
        ]
        for label, keys, ratio in diagnostics:
            add(label, per_setup(lambda r, k=keys: dig(r, k), traffic), ratio=ratio,
                better="lower")
    if rate_runs:
        def sessions_per_s(r: dict[str, Any]) -> float | None:
            return r["sessions"]["ok_per_s"]

        add("rate phase: new sessions/s (median of runs)",
            per_setup(sessions_per_s, rate_runs))
        add_paired("rate phase: new sessions/s", sessions_per_s, rate_runs)
        lists = paired_ratio_lists(rate_runs, setups, sessions_per_s)
        spans = {s: median_interval(v) for s, v in lists.items()}
        for end, text in ((0, "low"), (1, "high")):
            add(f"  90 % interval of that median: {text}",
                {"plain": None, **{s: span[end] if span else None for s, span in spans.items()}},
                ratio=False)
        add("  paired ratios at or above 0.95", {"plain": None, **{
            s: sum(x >= 0.95 for x in v) for s, v in lists.items()}}, ratio=False)
        add("rate phase: connect p99 ms",
            per_setup(lambda r: r["sessions"]["connect_ms_p99"], rate_runs), better="lower")
        add("rate phase: failed sessions per run",
            per_setup(lambda r: r["sessions"]["failed"], rate_runs), ratio=False, better="lower")
        add("rate phase: ovs-vswitchd CPU ms per session",
            per_setup(lambda r: r.get("vswitchd_cpu_ms_per_session"), rate_runs), better="lower")
        add("rate phase: controller CPU ms per session",
            per_setup(lambda r: r.get("controller_cpu_ms_per_session"), rate_runs),
            ratio=False, better="lower")
    if throughput:
        add(f"throughput phase: TCP Gbit/s ({opts.iperf_s:g} s iperf3, median of runs)",
            per_setup(lambda r: r["iperf"].get("received_gbps"), throughput))
        add_paired("throughput phase: TCP throughput",
                   lambda r: r["iperf"].get("received_gbps"), throughput)
        add("throughput phase: ovs-vswitchd CPU s per GB",
            per_setup(lambda r: r.get("cpu_s_per_gb"), throughput), better="lower")
    if held:
        add(f"held: established (of {opts.held})",
            per_setup(lambda r: r.get("open", {}).get("established"), held))
        add(f"held sessions (of {opts.held}, answering a PING at {opts.held_verify_rate:g}/s)",
            per_setup(lambda r: r.get("done", {}).get("held"), held))
        add("held: closed by the peer before the check",
            per_setup(lambda r: r.get("done", {}).get("closed_before_ping"), held),
            ratio=False, better="lower")
        add("held: packets dropped at ovs-vswitchd's receive sockets while checking",
            per_setup(lambda r: r.get("verify_socket_drops"), held), ratio=False,
            better="lower")
        add("held: open rate /s", per_setup(lambda r: r.get("open", {}).get("open_per_s"),
                                            held))
        add("held: learned flows (session tables)",
            per_setup(lambda r: learned_flows(r["lb_flows"]) if r.get("lb_flows") else None,
                      held), ratio=False)
        add("held: conntrack entries (lbrp zone)",
            per_setup(lambda r: r.get("ct_held"), held), ratio=False)
        add("held: ovs-vswitchd RSS growth MiB",
            per_setup(lambda r: r.get("rss_growth_mib"), held), ratio=False, better="lower")
        add("held: RSS KiB per session",
            per_setup(lambda r: r.get("rss_kib_per_session"), held), ratio=False,
            better="lower")
    if control:
        def cget(path: Sequence[str]) -> dict[str, float | None]:
            vals: dict[str, float | None] = {}
            for s in setups:
                node: Any = control.get(s)
                for k in path:
                    node = node.get(k) if isinstance(node, dict) else None
                vals[s] = node
            return vals

        def start_median(key: str) -> dict[str, float | None]:
            return {s: median([x.get(key) for x in control.get(s, {}).get("starts", [])])
                    for s in setups}

        add(f"start -> lb0 programmed s ({opts.cp_services}x{opts.cp_backends})",
            start_median("programmed_s"), ratio=False, better="lower")
        add("  app log: programming s", start_median("log_seconds"), ratio=False,
            better="lower")
        add("  waiting for lb0 to connect s", start_median("switch_wait_s"), ratio=False,
            better="lower")
        add(f"REST change -> first packet ms ({opts.cp_services} svc)",
            cget(["change_big", "first_packet_ms_median"]), ratio=False, better="lower")
        add(f"  p90 / max over {opts.changes_big} changes, ms: p90",
            cget(["change_big", "first_packet_ms_p90"]), ratio=False, better="lower")
        add("  max", cget(["change_big", "first_packet_ms_max"]), ratio=False, better="lower")
        add(f"REST PUT answer ms ({opts.cp_services} svc)",
            cget(["change_big", "put_ms_median"]), ratio=False, better="lower")
        add("REST change -> first packet ms (3 svc)",
            cget(["change_small", "first_packet_ms_median"]), ratio=False, better="lower")
        add("REST PUT answer ms (3 svc)", cget(["change_small", "put_ms_median"]),
            ratio=False, better="lower")
    for row in rows:
        plain = row["values"].get("plain")
        row["ratios"] = {s: (round(v / plain, 3) if row["ratio"] and v is not None and plain
                             else None) for s, v in row["values"].items() if s != "plain"}
    return rows


def label(setup: str) -> str:
    """Column title of a setup."""
    return SETUP_LABEL.get(setup, setup.replace("lbrp-", "lbrp "))


def fmt(v: float | None) -> str:
    """Compact number."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.3g}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{int(v):,}"


def table(rows: list[dict[str, Any]], setups: list[str]) -> str:
    """Markdown table: measure | plain | <setup> | ratio | ..."""
    head = ["measure", "plain"]
    for s in setups[1:]:
        head += [label(s), "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["measure"], fmt(row["values"].get("plain"))]
        for s in setups[1:]:
            r = row["ratios"].get(s)
            cells += [fmt(row["values"].get(s)), f"{r:.2f}x" if r is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], setups: list[str], path: Path, title: str) -> bool:
    """PNG of the ratios vs plain forwarding (log scale); False when nothing to draw."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = setups[1:]
    rrows = [r for r in rows if r["ratio"] and any(r["ratios"].get(s) for s in others)]
    if not rrows:
        return False
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(rrows)), 4.5))
    width = 0.8 / max(1, len(others))
    for k, s in enumerate(others):
        xs = [i + (k - (len(others) - 1) / 2) * width for i in range(len(rrows))]
        ys = [r["ratios"].get(s) or 0 for r in rrows]
        bars = ax.bar(xs, ys, width, label=label(s))
        for x, y in zip(xs, ys, strict=True):
            if y:
                ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
        del bars
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=6)
    ax.set_xticks(range(len(rrows)),
                  [textwrap.fill(r["measure"], 16)
                   + ("\n(lower is better)" if r["better"] == "lower" else "")
                   for r in rrows], fontsize=7)
    ax.set_ylabel("ratio to plain forwarding (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -------------------------------------------------------------------- main

def interesting(path: Path, keep: int = 30) -> list[str]:
    """The last ``keep`` lines of a controller log that are not REST access lines."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines()
             if ln.strip() and "HTTP/1.1\"" not in ln and "accepted ('127.0.0.1'" not in ln
             and not CHANGE_LINE.search(ln)]  # those are in the control phase's samples
    return lines[-keep:]


def yield_lock(seconds: float = LOCK_PAUSE_S) -> None:
    """Pause between labs so that someone waiting for the lab lock gets it first."""
    log(f"lab lock released for {seconds:g} s (others may take it; then we wait)")
    time.sleep(seconds)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_nofile() -> list[int]:
    """Raise our RLIMIT_NOFILE (inherited by lab processes) as far as the kernel allows."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = hard
    want = min(1 << 20, nr_open)
    for new in ((want, want), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phases, print the table, write JSON and PNG."""
    opts = parse_args(argv)
    if opts.app_src is not None:
        APP_SRC[0] = opts.app_src
    if os.geteuid() != 0:
        print("bench/run.py needs root (network namespaces, OVS): use sudo", file=sys.stderr)
        return 2
    for tool in ("iperf3", "ovs-appctl", "ovs-ofctl", *(["tcpdump"] if opts.hops else [])):
        if shutil.which(tool) is None:
            print(f"{tool} not found (make install)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    nofile = raise_nofile()
    MAX_IDLE_AT_START.append(max_idle())
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": [sys.executable, *sys.argv] if argv is None else ["run.py", *argv],
        "started": dt.datetime.now().astimezone().isoformat(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "machine": machine_info(), "nofile": nofile, "phases": {}, "interrupted": False,
        "datapath_reset": ("ovs-appctl dpctl/del-flows" if opts.flush_datapath else
                           "wait for idle expiry of the lab's L4 datapath flows"),
    }
    work = Path(tempfile.mkdtemp(prefix="lbrp-bench-"))
    phases = {"traffic": phase_traffic, "rate": phase_rate, "throughput": phase_throughput,
              "held": phase_held, "control": phase_control}
    rc = 0
    t_all = time.monotonic()
    try:
        for i, name in enumerate(opts.phases):
            if i:
                yield_lock()
            t0 = time.monotonic()
            log(f"phase {name}")
            data: dict[str, Any] = {}
            res["phases"][name] = data
            try:
                phases[name](opts, work, data)
            except (LabError, AssertionError, subprocess.SubprocessError, OSError) as exc:
                data["error"] = f"{type(exc).__name__}: {exc}"
                log(f"phase {name} failed: {data['error']}")
                rc = 1
            data["seconds"] = round(time.monotonic() - t0, 1)
    except KeyboardInterrupt as exc:
        res["interrupted"] = str(exc) or "SIGINT"
        rc = 130
        log(f"interrupted ({res['interrupted']}): lab and controller stopped")
        # keep a previous complete result: the partial one goes next to it
        opts.out = opts.out.with_name(opts.out.stem + "-interrupted.json")
    finally:
        restore_max_idle()
        res["finished"] = dt.datetime.now().astimezone().isoformat()
        res["seconds"] = round(time.monotonic() - t_all, 1)
        res["controller_logs"] = {p.name: interesting(p) for p in sorted(work.glob("lbrp-*.log"))}
        shutil.rmtree(work, ignore_errors=True)
        try:
            rows = summarize(res, opts)
        except Exception as exc:  # noqa: BLE001 - a summary must not lose the results
            log(f"summary failed: {type(exc).__name__}: {exc}")
            rows = []
        res["summary"] = rows
        opts.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
        png = opts.out.with_suffix(".png")
        ovs = re.search(r"\d+\.\d+\.\d+", res["machine"]["ovs_version"])
        title = (f"lbrp vs plain forwarding ({'quick' if opts.quick else 'full'}, "
                 f"{res['machine']['nproc']} CPUs, OVS {ovs.group(0) if ovs else '?'})")
        try:
            drawn = chart(rows, opts.setups, png, title)
        except Exception as exc:  # noqa: BLE001 - a chart must not lose the results
            log(f"chart failed: {exc}")
            drawn = False
        print(table(rows, opts.setups))
        unavailable = {**res["phases"].get("traffic", {}).get("unavailable", {}),
                       **res["phases"].get("rate", {}).get("unavailable", {}),
                       **res["phases"].get("held", {}).get("unavailable", {})}
        for s, why in unavailable.items():
            print(f"\n{s}: unavailable: {why}")
        print(f"\nJSON: {opts.out}" + (f"\nPNG:  {png}" if drawn else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
