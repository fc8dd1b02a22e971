#!/usr/bin/env python3
"""lbrp demo: the load balancer on the reference topology with the example config.

Builds the Mininet lab (2 clients, lb0, router, 3 backends), starts
``osken-manager lbrp_app`` on a copy of examples/lbrp.yaml, sends TCP and UDP
sessions to the VIP, prints which backend served how many against the
weights, pings the VIP, changes a weight over REST, then cleans up everything
it created. Run as root through ``make demo``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from topologies.controller import OSKEN, free_port
from topologies.lbrp_topo import backend_ip, lab, run_in


def rest(base: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def wait_programmed(base: str, dpid: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"controller exited with {proc.returncode}")
        try:
            if any(s["dpid"] == dpid for s in rest(base, "GET", "/health")["switches"]):
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the switch was not programmed in time")


def split_table(title: str, svc: dict[str, Any], by_backend: dict[str, int]) -> None:
    names = {backend_ip(i): f"b{i}" for i in range(1, 4)}
    total_w = sum(b["weight"] for b in svc["backends"]) or 1
    total = sum(by_backend.values()) or 1
    print(f"\n{title}: {svc['vip']}:{svc['proto']}:{svc['port']}, {total} sessions")
    print(f"  {'backend':<22}{'weight':>8}{'expected':>10}{'observed':>10}{'sessions':>10}")
    for b in svc["backends"]:
        name = names.get(b["ip"], b["ip"])
        n = by_backend.get(name, 0)
        print(f"  {name + ' ' + b['ip'] + ':' + str(b['port']):<22}{b['weight']:>8}"
              f"{100 * b['weight'] / total_w:>9.1f}%{100 * n / total:>9.1f}%{n:>10}")


def chart(path: Path, panels: list[tuple[str, dict[str, Any], dict[str, int]]]) -> None:
    """A PNG of expected (weights) against observed (lbrp's counters) shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (title, svc, counts) in zip(axes, panels, strict=True):
        labels = [f"{b['ip']}:{b['port']}\nweight {b['weight']}" for b in svc["backends"]]
        total_w = sum(b["weight"] for b in svc["backends"]) or 1
        total = sum(counts.values()) or 1
        want = [100 * b["weight"] / total_w for b in svc["backends"]]
        got = [100 * counts.get(f"{b['ip']}:{b['port']}", 0) / total for b in svc["backends"]]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], want, 0.4, label="weight share")
        ax.bar([x + 0.2 for x in xs], got, 0.4, label="new sessions (lbrp counters)")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_ylabel("% of new sessions")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def counted(base: str, svc: dict[str, Any]) -> dict[str, int]:
    """New sessions per backend as lbrp's own counters report them."""
    doc = rest(base, "GET", "/stats")
    for s in doc["services"]:
        if (s["vip"], s["proto"], s["port"]) == (svc["vip"], svc["proto"], svc["port"]):
            return {f"{b['ip']}:{b['port']}": b["new_sessions"] for b in s["backends"]}
    return {}


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("the demo needs root (network namespaces, OVS)")
    work = Path(tempfile.mkdtemp(prefix="lbrp-demo-"))
    cfg_path = work / "lbrp.yaml"
    shutil.copy(REPO / "examples" / "lbrp.yaml", cfg_path)  # never the tracked file
    cfg = yaml.safe_load(cfg_path.read_text())
    of_port, rest_port = free_port(), free_port()
    base = f"http://127.0.0.1:{rest_port}/lbrp/v1"
    print(f"lbrp demo: config {cfg_path} (copy of examples/lbrp.yaml), REST {base}")
    proc = None
    try:
        with lab(n_clients=2, n_backends=3, of_port=of_port, servers=True,
                 tcp_ports=(8002, 8003, 8004), udp_ports=(9000,)) as net:
            env = dict(os.environ, LBRP_CONFIG=str(cfg_path), LBRP_REST_PORT=str(rest_port))
            log = open(work / "controller.log", "wb")  # noqa: SIM115 - closed in finally
            proc = subprocess.Popen([str(OSKEN), "--ofp-tcp-listen-port", str(of_port),
                                     "lbrp_app"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, cwd="/")
            took = wait_programmed(base, net.lb_dpid, proc)
            print(f"lb0 ({net.lb_dpid}) programmed {took:.1f} s after start")
            web, dns = cfg["services"][0], cfg["services"][1]
            vip = web["vip"]
            tcp: dict[str, int] = {}
            for c in net.clients:
                res = net.run_client(c, vip, "tcp", web["port"], sessions=1000, concurrency=20)
                for k, v in res["by_backend"].items():
                    tcp[k] = tcp.get(k, 0) + v
            split_table("TCP", rest(base, "GET", f"/services/{vip}/tcp/{web['port']}"), tcp)
            res = net.run_client(net.clients[0], vip, "udp", dns["port"], sessions=1000,
                                 concurrency=10, timeout=1)
            split_table("UDP (one client, spread by 5-tuple)",
                        rest(base, "GET", f"/services/{vip}/udp/{dns['port']}"),
                        res["by_backend"])
            time.sleep(float(cfg.get("stats_interval", 10)) + 1)  # one counter poll
            web_svc = rest(base, "GET", f"/services/{vip}/tcp/{web['port']}")
            dns_svc = rest(base, "GET", f"/services/{vip}/udp/{dns['port']}")
            panels = [(f"TCP {vip}:{web['port']}", web_svc, counted(base, web_svc)),
                      (f"UDP {vip}:{dns['port']}", dns_svc, counted(base, dns_svc))]
            print("\nlbrp's own counters (GET /lbrp/v1/stats), new sessions per backend:")
            for title, svc, counts in panels:
                total = sum(counts.values()) or 1
                total_w = sum(b["weight"] for b in svc["backends"]) or 1
                print(f"  {title}: " + ", ".join(
                    f"{k} {v} ({100 * v / total:.1f}% vs weight {100 * w / total_w:.1f}%)"
                    for (k, v), w in zip(counts.items(), (b["weight"] for b in svc["backends"]),
                                         strict=True)))
            png = Path.cwd() / "demo-split.png"
            chart(png, panels)
            print(f"  chart of the split against the weights: {png}")
            ping = run_in(net.clients[0], f"ping -c 3 -i 0.3 -W 2 {vip}", timeout=15)
            print(f"\nping {vip} (answered by the controller):")
            print("  " + "\n  ".join(ln for ln in ping.stdout.splitlines() if "bytes from" in ln
                                     or "packet loss" in ln))
            print(f"\nREST: PUT weight 0 on {web['backends'][1]['ip']}:"
                  f"{web['backends'][1]['port']} (drain), then 1000 new sessions:")
            rest(base, "PUT", f"/services/{vip}/tcp/{web['port']}/backends/"
                 f"{web['backends'][1]['ip']}/{web['backends'][1]['port']}", {"weight": 0})
            res = net.run_client(net.clients[1], vip, "tcp", web["port"], sessions=1000)
            split_table("TCP after drain", rest(base, "GET", f"/services/{vip}/tcp/"
                                                f"{web['port']}"), res["by_backend"])
            print("\nflows of lb0 (ovs-ofctl -O OpenFlow15 dump-flows lb0), first lines:")
            dump = net.lb_ofctl("dump-flows").splitlines()
            print("\n".join("  " + ln.strip()[:150] for ln in dump[1:9]))
            n10 = sum(1 for ln in dump if "table=10" in ln)
            n11 = sum(1 for ln in dump if "table=11" in ln)
            print(f"  ... {len(dump) - 1} flows, of which {n10 + n11 - 2} learned session "
                  "flows (tables 10 and 11)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print("\ndemo done: lab stopped, controller stopped, temporary files removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
