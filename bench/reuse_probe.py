#!/usr/bin/env python3
"""Probe: short TCP sessions through lbrp while a backend is reweighted, with packet
captures of every failed session (not collected by pytest; needs root and the lab).

Run as root from the repository::

    .venv/bin/python bench/reuse_probe.py [--minutes 3] [--interval 1] [--no-churn]
        [--pinning learn] [--tcp-fin-timeout 12] [--datapath-max-idle-ms 0]

One service of three backends (weight 2 each). A client (c2) opens sessions in batches
of 100, 5 at a time (connect, request, close; 2 s timeout), as tests/soak.py does.
Every ``--interval`` seconds the first backend is reweighted (1..5, round robin), a
group change and no removal. tcpdump runs in the client and in each backend. At the
end it prints the counts, then for each of the first ``--show`` failures its client
port's packets as every host saw them, and one JSON line: sessions ok and failed, the
failures by stage and error, and how many of them got a SYN-ACK from a backend's own
address (a reply that was not rewritten to the VIP).
"""

from __future__ import annotations

import argparse
import json
import re
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

from topologies.controller import Controller, free_port
from topologies.lbrp_topo import backend_ip, client_ip

VIP, PORT = "13.13.13.13", 8000
CLIENT = client_ip(2)  # c2 opens the sessions
BACKENDS = tuple(backend_ip(i) for i in (1, 2, 3))


CLIENT_PORT = re.compile(rf"{re.escape(CLIENT)}\.(\d+)[ :]")


def packets_by_port(pcap: str) -> dict[int, list[str]]:
    """The capture's lines (tcpdump -nn -tt), read once, by the client port they carry."""
    lines = subprocess.run(["tcpdump", "-nn", "-tt", "-r", pcap], capture_output=True,
                           text=True, check=False).stdout.splitlines()
    by_port: dict[int, list[str]] = {}
    for line in lines:
        if m := CLIENT_PORT.search(line):
            by_port.setdefault(int(m.group(1)), []).append(line)
    return by_port


def unrewritten_syn_ack(lines: list[str], port: int) -> bool:
    """Whether the client saw a SYN-ACK to ``port`` from a backend's own address."""
    return any(f"> {CLIENT}.{port}: Flags [S.]" in ln and
               any(f" {ip}." in ln for ip in BACKENDS) for ln in lines)


def main(argv: list[str] | None = None) -> int:
    """Build the lab, run the sessions and the reweights, report the failures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reweights")
    p.add_argument("--no-churn", action="store_true", help="no reweights (the baseline)")
    p.add_argument("--pinning", choices=("learn", "conntrack"), default="learn")
    p.add_argument("--tcp-fin-timeout", type=int, default=12)
    p.add_argument("--datapath-max-idle-ms", type=int, default=0)
    p.add_argument("--show", type=int, default=5, help="failures to print with packets")
    args = p.parse_args(argv)
    from topologies.lbrp_topo import lab, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        print(f"reuse_probe: lab unavailable: {reason}", file=sys.stderr)
        return 2
    cfg = {"session_pinning": args.pinning, "max_sessions": 20000, "stats_interval": 2,
           "tcp_idle_timeout": 30, "tcp_fin_timeout": args.tcp_fin_timeout,
           "datapath_max_idle_ms": args.datapath_max_idle_ms,
           "services": [{"vip": VIP, "proto": "tcp", "port": PORT, "backends": [
               {"ip": ip, "port": 8002, "weight": 2} for ip in BACKENDS]}]}
    with tempfile.TemporaryDirectory(prefix="lbrp-probe-") as tmp, \
            lab(n_clients=2, n_backends=3, of_port=free_port(), servers=True,
                lock_timeout=3600) as net:
        path = Path(tmp) / "lbrp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        ctl = Controller(path, net.of_port, log_dir=Path(tmp)).start()
        try:
            ctl.wait_programmed(net.lb_dpid)
            dumps = []
            for host in (net.clients[1], *net.backends):
                pcap = f"{tmp}/{host.name}.pcap"
                proc = net.popen_tracked(host, ["tcpdump", "-i", host.defaultIntf().name, "-U",
                                                "-s", "96", "-w", pcap, "tcp"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                dumps.append((host.name, pcap, proc))
            time.sleep(2)  # tcpdump listening
            end = time.monotonic() + args.minutes * 60
            changes: list[float] = []

            def churn() -> None:
                weight = 1
                while time.monotonic() < end:
                    time.sleep(args.interval)
                    weight = weight % 5 + 1
                    changes.append(time.time())
                    status, out = ctl.request(
                        "PUT", f"/services/{VIP}/tcp/{PORT}/backends/{BACKENDS[0]}/8002",
                        {"weight": weight})
                    if status != 200:
                        print(f"PUT failed: {status} {out}", flush=True)

            if not args.no_churn:
                threading.Thread(target=churn, daemon=True).start()
            ok = failed = 0
            failures: list[dict[str, Any]] = []
            while time.monotonic() < end:
                res = net.run_client(net.clients[1], VIP, "tcp", PORT, sessions=100,
                                     concurrency=5, timeout=2, extra=("--failures", "100"))
                ok, failed = ok + res["ok"], failed + res["failed"]
                failures += res["failures"]
                time.sleep(0.2)
            time.sleep(2)  # the last packets captured
            for _, _, proc in dumps:
                proc.terminate()
                proc.wait(timeout=10)
            kinds = Counter(f"{f['stage']} {f['error']}" for f in failures)
            captures = {name: packets_by_port(pcap) for name, pcap, _ in dumps}
            unrewritten = 0
            for i, f in enumerate(failures):
                seen = {name: by_port.get(f["port"], []) for name, by_port in captures.items()}
                unrewritten += unrewritten_syn_ack(seen["c2"], f["port"])
                if i < args.show:
                    print(f"failed: client port {f['port']}, {f['stage']} {f['error']} "
                          f"after {f['after_s']} s; reweights "
                          f"{[round(t - f['t'], 3) for t in changes if abs(t - f['t']) < 3]}"
                          " s from its start")
                    for name, lines in seen.items():
                        for line in lines:
                            print(f"  {name}: {line[:150]}")
            summary = {"pinning": args.pinning, "churn": not args.no_churn,
                       "tcp_fin_timeout": args.tcp_fin_timeout,
                       "datapath_max_idle_ms": args.datapath_max_idle_ms,
                       "reweights": len(changes), "ok": ok, "failed": failed,
                       "failures": dict(kinds),
                       "failed_with_an_unrewritten_syn_ack": unrewritten}
            print(json.dumps(summary), flush=True)
        finally:
            ctl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
