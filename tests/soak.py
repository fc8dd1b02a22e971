#!/usr/bin/env python3
"""Long soak of lbrp on the Mininet lab (not collected by pytest).

Run as root from the repository::

    .venv/bin/python tests/soak.py --minutes 10 [--interval 3] [--seed 1] [--pinning conntrack]
        [--trace-memory N]

For ``--minutes`` it runs, on one lab and one real controller:

- long-lived TCP sessions (rounds of ``--held`` sessions in c1, each pinging its
  backend every 0.5 s for up to a minute);
- short TCP and UDP sessions in c2, batch after batch;
- every ``--interval`` seconds a REST change: a backend added, reweighted or
  removed. b1 and b2 are the *stable* backends (reweighted 1..5, never removed);
  b3 serves the *churn* backends (added, reweighted 0..5, removed);
- every 2 s a sample of controller and ovs-vswitchd RSS and the session tables.

It checks the rules: a long-lived session on a stable backend never breaks nor
changes backend (those on b3 may break when their backend is removed); the
session tables never exceed ``max_sessions``, and (conntrack) no new session's
packet is dropped after its commit (for a full zone, or a backend removed as it
began and not balanced again); the controller's RSS does not keep growing;
short sessions almost all succeed; the controller log has no ERROR or Traceback.
Each failed short session is listed by the client (start, client port, stage, error)
and set beside the REST removals: the summary counts the failures by error kind,
those during a removal of a backend of their protocol, and lists the others.
With ``--trace-memory N`` the controller runs under tracemalloc (N frames): the
soak takes a baseline after its warm-up and logs the sites that grew at the end,
and the RSS rule is skipped (tracing costs memory of its own).
Prints a summary and exits 1 when a rule was broken.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml

from lbrp_app.pipeline import CT_ZONE
from tests.integration.test_reliability import rss_mib
from topologies.controller import Controller, free_port

VIP = "13.13.13.13"
PORT = 8000
MAX_SESSIONS = 4000
# OVS 3.1 counts a conntrack zone's ended connections against its limit until its
# cleaner sweeps them, every 20 s (README, Limits). The soak opens about 230 TCP and 230
# UDP sessions/s, and each stays counted for its timeout after its last packet (TCP 1 s
# after the FIN, UDP 10 s) plus up to 20 s: about 11,700; sampled every 2 s, the count
# peaked at 13,085 in 30 minutes. So conntrack gets room for that on top of MAX_SESSIONS.
CT_SWEEP_ROOM = 16000
WARMUP_S = 30  # the controller's RSS growth counts from here
STABLE = ("10.0.1.2", "10.0.1.3")  # b1, b2
CHURN_HOST = "10.0.1.4"  # b3
CHURN_PORTS = {"tcp": (8002, 8003, 8004), "udp": (8002, 8004)}
STABLE_PORT = {"tcp": 8002, "udp": 8003}

# Long-lived sessions: each thread connects, sends HOLD, then PING every 0.5 s for
# SECONDS; per backend name: ok, broken (error after the first answer or no
# answer at all) and changed (answers from two backends). ONE JSON line.
HOLDER = r"""
import json, socket, sys, threading, time
vip, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out, lock, unanswered = {}, threading.Lock(), []
def one():
    first, kind, why, lport = "?", "ok", "", 0
    s = socket.socket()
    s.settimeout(3)
    t0 = time.time()
    try:
        s.bind(("", 0))  # the port is known even if the connect fails
        lport = s.getsockname()[1]
        s.connect((vip, port))
        s.sendall(b"HOLD\n")
        end = time.time() + seconds
        buf = b""
        while True:
            s.sendall(b"PING\n")
            while b"\n" not in buf:
                chunk = s.recv(256)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            name = line.decode().strip()
            if first == "?":
                first = name
            elif name != first:
                kind = "changed"
                break
            if time.time() >= end:
                break
            time.sleep(0.5)
    except OSError as exc:
        kind, why = "broken", f"{type(exc).__name__}: {exc}"
    finally:
        s.close()
    with lock:
        d = out.setdefault(first, {"ok": 0, "broken": 0, "changed": 0})
        d[kind] += 1
        if first == "?" and kind == "broken":
            unanswered.append({"t": round(t0, 3), "after_s": round(time.time() - t0, 3),
                               "port": lport, "why": why})
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads:
    t.start()
    time.sleep(0.01)
for t in threads:
    t.join()
print(json.dumps({"by_backend": out, "unanswered": unanswered[:50]}))
"""


def clock(t: float) -> str:
    """time.time() as HH:MM:SS.mmm, local time."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          check=False).stdout


def vswitchd_pid() -> int | None:
    try:
        return int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def table_flows(net: Any, table: int) -> int:
    m = re.search(r"flow_count=(\d+)", net.lb_ofctl("dump-aggregate", f"table={table}"))
    return int(m.group(1)) if m else -1


def session_bound(pinning: str) -> int:
    """The soak's max_sessions for a pinning mode."""
    return MAX_SESSIONS + (CT_SWEEP_ROOM if pinning == "conntrack" else 0)


# a removal during a session's life, or this long before it started (a SYN that raced
# the group's change), may have ended it
RACE_S = 0.2


def during_a_removal(failure: dict[str, Any], removals: list[tuple[float, str]]
                     ) -> str | None:
    """The path of a removal from the failed session's start (less RACE_S) to its failure
    (``failure`` as client.py lists it; ``removals``: (wall time, path)), or None."""
    start, end = failure["t"] - RACE_S, failure["t"] + failure["after_s"]
    for wall, path in removals:
        if start <= wall <= end:
            return path
    return None


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Soak:
    """One soak run: lab, controller, load, churn, samples, verdict."""

    def __init__(self, args: argparse.Namespace, net: Any, ctl: Controller) -> None:
        self.args = args
        self.net = net
        self.ctl = ctl
        self.rng = random.Random(args.seed)
        self.end = time.monotonic() + args.minutes * 60
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.changes = {"add": 0, "reweight": 0, "remove": 0}
        self.rest_ms: list[float] = []
        self.held: dict[str, dict[str, int]] = {}
        self.rounds = 0
        self.short = {"tcp": [0, 0], "udp": [0, 0]}  # ok, failed
        self.short_errors: dict[str, Counter[str]] = {"tcp": Counter(), "udp": Counter()}
        self.short_failures: dict[str, list[dict[str, Any]]] = {"tcp": [], "udp": []}
        self.samples: list[dict[str, float]] = []
        self.change_log: list[tuple[float, str, str, Any, int]] = []  # (time.time(), ...)
        self.bound = session_bound(args.pinning)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        print(f"PROBLEM: {text}", flush=True)

    def explain(self, unanswered: list[dict[str, Any]]) -> None:
        """Print what a failed round needs to be traced: each unanswered session's error,
        the REST changes around it, lbrp's connections and the controller log's tail."""
        if not unanswered:
            return
        t0 = min(u["t"] for u in unanswered)
        t1 = max(u["t"] + u["after_s"] for u in unanswered)
        print("  unanswered (start, seconds to fail, client port, error):", flush=True)
        for u in unanswered:
            print(f"    {clock(u['t'])} {u['after_s']:6.3f} {u['port']:5d} {u['why']}")
        with self.lock:
            near = [c for c in self.change_log if t0 - 10 <= c[0] <= t1 + 2]
        print("  REST changes from 10 s before to 2 s after:")
        for wall, method, path, body, status in near:
            print(f"    {clock(wall)} {method} {path} {body} -> {status}")
        if self.args.pinning == "conntrack":
            print(f"  zone full: {self.after_commit()[0]} packets dropped so far; "
                  + sh("ovs-appctl", "dpctl/ct-get-limits", f"zone={CT_ZONE}").strip())
            entries = sh("ovs-appctl", "dpctl/dump-conntrack", f"zone={CT_ZONE}").splitlines()
            ports = {f"sport={u['port']}," for u in unanswered if u["port"]}
        else:
            entries = self.net.lb_ofctl("dump-flows", "table=10").splitlines()
            ports = {f"tp_src={u['port']}," for u in unanswered if u["port"]}
        print(f"  {len(entries)} sessions on the switch; of the unanswered ones:")
        for line in entries:
            if any(p in line for p in ports):
                print(f"    {line}")
        print("  controller log, last 30 lines:")
        for line in self.ctl.log().splitlines()[-30:]:
            print(f"    {line}")

    # --- load
    def held_loop(self) -> None:
        while (left := self.end - time.monotonic()) > 10:
            seconds = min(60.0, left - 5)
            p = self.net.popen_tracked(
                self.net.clients[0], [sys.executable, "-c", HOLDER, VIP, str(PORT),
                                      str(self.args.held), str(seconds)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = p.communicate(timeout=seconds + 60)
            if not out.strip():
                self.problem(f"holder printed nothing: {err[-500:]}")
                continue
            doc = json.loads(out.strip().splitlines()[-1])
            res = doc["by_backend"]
            print(f"[held round at {(time.monotonic() - self.end) / 60 + self.args.minutes:4.1f}"
                  f" min, {seconds:.0f} s] {res}", flush=True)
            with self.lock:
                self.rounds += 1
                for name, d in res.items():
                    acc = self.held.setdefault(name, {"ok": 0, "broken": 0, "changed": 0})
                    for k, v in d.items():
                        acc[k] += v
            for name, d in res.items():
                if name in ("b1", "b2") and (d["broken"] or d["changed"]):
                    self.problem(f"long-lived sessions on stable backend {name} broke: {d}")
                if name == "?" and d["broken"]:
                    self.problem(f"{d['broken']} long-lived sessions never got an answer")
                    self.explain(doc["unanswered"])

    def short_loop(self) -> None:
        while self.end - time.monotonic() > 3:
            for proto in ("tcp", "udp"):
                try:
                    res = self.net.run_client(self.net.clients[1], VIP, proto, PORT,
                                              sessions=100, concurrency=5, timeout=2,
                                              extra=("--failures", "100"))
                except Exception as exc:  # noqa: BLE001 - report, keep soaking
                    self.problem(f"short {proto} client failed: {exc}")
                    continue
                with self.lock:
                    self.short[proto][0] += res["ok"]
                    self.short[proto][1] += res["failed"]
                    self.short_errors[proto].update(res["errors"])
                    self.short_failures[proto].extend(res["failures"])
            time.sleep(0.2)

    # --- churn
    def service(self, proto: str) -> dict[str, Any]:
        status, svc = self.ctl.request("GET", f"/services/{VIP}/{proto}/{PORT}")
        if status != 200:
            raise RuntimeError(f"GET service: {status} {svc}")
        return svc

    def rest(self, method: str, path: str, body: Any = None) -> int:
        t, wall = time.perf_counter(), time.time()
        status, out = self.ctl.request(method, path, body)
        self.rest_ms.append((time.perf_counter() - t) * 1000)
        with self.lock:
            self.change_log.append((wall, method, path, body, status))
        if status >= 300:
            self.problem(f"{method} {path} {body}: {status} {out}")
        return status

    def churn_once(self) -> None:
        proto = self.rng.choice(("tcp", "udp"))
        have = {(b["ip"], b["port"]) for b in self.service(proto)["backends"]}
        base = f"/services/{VIP}/{proto}/{PORT}/backends"
        absent = [p for p in CHURN_PORTS[proto] if (CHURN_HOST, p) not in have]
        present = [p for p in CHURN_PORTS[proto] if (CHURN_HOST, p) in have]
        action = self.rng.choice(["add", "reweight", "remove"])
        if action == "add" and absent:
            port = self.rng.choice(absent)
            self.rest("PUT", f"{base}/{CHURN_HOST}/{port}", {"weight": self.rng.randint(1, 5)})
        elif action == "remove" and present:
            self.rest("DELETE", f"{base}/{CHURN_HOST}/{self.rng.choice(present)}")
        else:
            action = "reweight"
            ip, port = self.rng.choice(sorted(have))
            weight = self.rng.randint(0 if ip == CHURN_HOST else 1, 5)
            self.rest("PUT", f"{base}/{ip}/{port}", {"weight": weight})
        self.changes[action] += 1

    def stats(self) -> dict[str, Any]:
        """``/stats``, as the controller's last counter poll (every 2 s) read it."""
        status, doc = self.ctl.request("GET", "/stats")
        if status != 200:
            raise RuntimeError(f"GET /stats: {status} {doc}")
        return doc

    def controller_counters(self) -> dict[str, Any]:
        """The controller part of ``/stats``."""
        return self.stats()["controller"]

    def no_session_packets(self) -> dict[str, Any]:
        """The TCP service's packets of no session: dropped (counted by the switch) and
        answered with a RST (absent before the RSTs), and packet-ins the app ignored."""
        doc = self.stats()
        svc = next(s for s in doc["services"] if s["proto"] == "tcp")
        return {"dropped_not_syn": svc["dropped_not_syn"],
                "not_syn_resets": svc.get("not_syn_resets"),
                "packet_ins_ignored": doc["controller"]["packet_ins_ignored"]}

    def after_commit(self) -> tuple[int, int, int]:
        """(zone full, backend gone twice, backend gone): packets of new sessions dropped
        after their conntrack commit, and new sessions balanced again there."""
        time.sleep(2.5)  # a poll after the last drops
        ctl = self.controller_counters()
        return (ctl["conntrack_zone_full_drops"], ctl["conntrack_backend_gone_drops"],
                ctl["conntrack_backend_gone_repicks"])

    # --- samples
    def sample(self) -> None:
        counted = 0  # conntrack: what the zone limit counts (ended connections too)
        if self.args.pinning == "learn":
            fwd, rev = table_flows(self.net, 10), table_flows(self.net, 11)
        else:  # connections in the sessions' conntrack zone
            fwd = rev = len(sh("ovs-appctl", "dpctl/dump-conntrack", f"zone={CT_ZONE}")
                            .splitlines())
            # the zone limit's count, which the controller's poll reads anyway
            n = self.controller_counters()["conntrack_sessions"]
            counted = -1 if n is None else n
        s = {"t": time.monotonic(), "ctl_rss": rss_mib(self.ctl.proc.pid if self.ctl.proc
                                                      else None),
             "ovs_rss": rss_mib(vswitchd_pid()), "fwd": fwd, "rev": rev, "counted": counted}
        self.samples.append(s)
        if max(fwd, rev) > self.bound:
            self.problem(f"session tables over the bound: {fwd}/{rev} > {self.bound}")
        if self.ctl.proc is None or self.ctl.proc.poll() is not None:
            self.problem("the controller exited")
            raise SystemExit(1)

    def run(self) -> int:
        threads = [threading.Thread(target=self.held_loop, daemon=True),
                   threading.Thread(target=self.short_loop, daemon=True)]
        for t in threads:
            t.start()
        next_change = time.monotonic() + self.args.interval
        next_report = time.monotonic() + 60
        baseline_at = time.monotonic() + WARMUP_S if self.args.trace_memory else None
        while time.monotonic() < self.end:
            self.sample()
            if baseline_at is not None and time.monotonic() >= baseline_at:
                for line in self.memtrace_report():  # the baseline, after the warm-up
                    print(line, flush=True)
                baseline_at = None
            if time.monotonic() >= next_change:
                self.churn_once()
                next_change += self.args.interval
            if time.monotonic() >= next_report:
                s = self.samples[-1]
                print(f"[{(time.monotonic() - self.end) / 60 + self.args.minutes:5.1f} min] "
                      f"changes {self.changes} held rounds {self.rounds} short {self.short} "
                      f"ctl RSS {s['ctl_rss']:.1f} MiB sessions {s['fwd']}/{s['rev']}",
                      flush=True)
                next_report += 60
            time.sleep(2)
        for t in threads:
            t.join(timeout=120)
        if self.args.trace_memory:
            for line in self.memtrace_report():
                print(line, flush=True)
        return self.verdict()

    def memtrace_report(self, timeout: float = 120.0) -> list[str]:
        """Ask the controller for its allocation report (SIGUSR1, lbrp_app.memtrace);
        its log lines, once written."""
        assert self.ctl.proc is not None
        start = self.ctl.log_path.stat().st_size  # read only what the report adds

        def lines() -> list[str]:
            with self.ctl.log_path.open("rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            return [ln for ln in text.splitlines() if "memtrace" in ln]

        self.ctl.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if lines():
                time.sleep(1)  # the rest of the report, logged in the same handler
                return lines()
            time.sleep(0.5)
        self.problem("no memtrace report from the controller")
        return []

    def failed_short(self) -> dict[str, Any]:
        """Per protocol: the failed short sessions by error kind and stage, how many
        failed during a removal of a backend of that protocol (by backend), and the
        first 20 of the others with the REST changes of the 2 s before them."""
        out: dict[str, Any] = {}
        with self.lock:
            changes = list(self.change_log)
        for proto, failures in self.short_failures.items():
            removals = [(c[0], c[2]) for c in changes
                        if c[1] == "DELETE" and f"/{proto}/" in c[2]]
            by_backend: Counter[str] = Counter()
            kinds: Counter[str] = Counter()
            apart = []
            for f in failures:
                kinds[f"{f['stage']} {f['error']}"] += 1
                path = during_a_removal(f, removals)
                if path is not None:
                    by_backend[path.rsplit("/backends/", 1)[1]] += 1
                else:
                    apart.append({**f, "start": clock(f["t"]), "changes_before": [
                        f"{clock(c[0])} {c[1]} {c[2]} {c[3]}" for c in changes
                        if f["t"] - 2 <= c[0] <= f["t"] + f["after_s"]]})
            out[proto] = {"errors": dict(self.short_errors[proto]),
                          "listed": len(failures), "by_stage": dict(kinds),
                          "during_a_removal": dict(by_backend), "apart": len(apart),
                          "apart_first": apart[:20]}
        return out

    def verdict(self) -> int:
        log = self.ctl.log_path.read_text(errors="replace")
        bad_lines = [ln for ln in log.splitlines() if "ERROR" in ln or "Traceback" in ln]
        if bad_lines:
            self.problem(f"{len(bad_lines)} ERROR/Traceback lines in the controller log, "
                         f"first: {bad_lines[0]}")
        warm = ([s for s in self.samples if s["t"] - self.samples[0]["t"] >= WARMUP_S]
                or self.samples)
        ctl_start, ctl_max, ctl_end = warm[0]["ctl_rss"], max(s["ctl_rss"] for s in warm), \
            warm[-1]["ctl_rss"]
        # tracing holds a snapshot and a trace per allocation: RSS says nothing then
        if ctl_end - ctl_start > self.args.rss_growth and not self.args.trace_memory:
            self.problem(f"controller RSS grew {ctl_end - ctl_start:.1f} MiB "
                         f"(> {self.args.rss_growth} MiB)")
        for proto, (ok, failed) in self.short.items():
            if ok + failed and failed / (ok + failed) > 0.01:
                self.problem(f"{proto} short sessions failed {failed}/{ok + failed} (> 1 %)")
        if not self.rounds:
            self.problem("no round of long-lived sessions completed")
        failed_short = self.failed_short()
        full, gone, repicked = (self.after_commit() if self.args.pinning == "conntrack"
                                else (None, None, None))
        if full:
            self.problem(f"{full} packets of new sessions dropped: the conntrack zone was full")
        if gone:
            self.problem(f"{gone} packets of new sessions dropped: their backend was removed, "
                         "and so was the one picked again")
        summary = {
            "minutes": self.args.minutes,
            "changes": self.changes,
            "rest_ms_p50": round(statistics.median(self.rest_ms), 1) if self.rest_ms else None,
            "rest_ms_p99": round(pct(self.rest_ms, 99), 1),
            "held_rounds": self.rounds,
            "held_by_backend": self.held,
            "short_sessions": {p: {"ok": v[0], "failed": v[1]} for p, v in self.short.items()},
            "short_failed": failed_short,
            "tcp_no_session": self.no_session_packets(),
            "controller_rss_mib": {"after_warmup": round(ctl_start, 1), "max": round(ctl_max, 1),
                                   "end": round(ctl_end, 1)},
            "vswitchd_rss_mib": {"start": round(self.samples[0]["ovs_rss"], 1),
                                 "max": round(max(s["ovs_rss"] for s in self.samples), 1),
                                 "end": round(self.samples[-1]["ovs_rss"], 1)},
            "session_tables_max": [max(s["fwd"] for s in self.samples),
                                   max(s["rev"] for s in self.samples)],
            "session_bound": self.bound,
            "zone_count_max": max(s["counted"] for s in self.samples) if full is not None
            else None,
            "zone_full_drops": full,
            # the race of a removal with a session's first packet: balanced again
            "backend_gone_repicks": repicked,
            "backend_gone_drops": gone,
            "log_error_lines": len(bad_lines),
            "problems": self.problems,
        }
        print(json.dumps(summary, indent=1))
        print("SOAK " + ("PASSED" if not self.problems else f"FAILED ({len(self.problems)})"))
        return 0 if not self.problems else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the lab and the controller, soak."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=3.0, help="seconds between REST changes")
    p.add_argument("--held", type=int, default=40, help="long-lived sessions per round")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pinning", choices=("learn", "conntrack"), default="learn",
                   help="session_pinning mode")
    p.add_argument("--rss-growth", type=float, default=3.0,
                   help="MiB the controller's RSS may grow after warm-up")
    p.add_argument("--trace-memory", type=int, default=0, metavar="FRAMES",
                   help="run the controller with PYTHONTRACEMALLOC=FRAMES and print the "
                        "allocation sites that grew from the end of the warm-up to the end "
                        "(lbrp_app.memtrace; slows the controller)")
    args = p.parse_args(argv)
    from topologies.lbrp_topo import lab, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        print(f"soak: lab unavailable: {reason}", file=sys.stderr)
        return 2
    services = []
    for proto in ("tcp", "udp"):
        services.append({"vip": VIP, "proto": proto, "port": PORT, "backends": [
            {"ip": ip, "port": STABLE_PORT[proto], "weight": 2} for ip in STABLE]
            + [{"ip": CHURN_HOST, "port": CHURN_PORTS[proto][0], "weight": 1}]})
    cfg = {"session_pinning": args.pinning, "max_sessions": session_bound(args.pinning), "stats_interval": 2, "tcp_idle_timeout": 30,
           "udp_idle_timeout": 10, "tcp_fin_timeout": 1, "services": services}
    with tempfile.TemporaryDirectory(prefix="lbrp-soak-") as tmp, \
            lab(n_clients=2, n_backends=3, of_port=free_port(), servers=True,
                lock_timeout=3600) as net:
        path = Path(tmp) / "lbrp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {"PYTHONTRACEMALLOC": str(args.trace_memory)} if args.trace_memory else None
        ctl = Controller(path, net.of_port, env=env, log_dir=Path(tmp)).start()
        try:
            ctl.wait_programmed(net.lb_dpid)
            print(f"soak ({args.pinning}): {args.minutes} min, a REST change every "
                  f"{args.interval} s, "
                  f"{args.held} long-lived sessions per round", flush=True)
            return Soak(args, net, ctl).run()
        finally:
            ctl.stop()


if __name__ == "__main__":
    sys.exit(main())
