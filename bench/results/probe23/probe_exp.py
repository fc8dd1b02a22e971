"""The twenty-third session's experiment on a real lab (root, OVS): what LEARN's lookup of
SESSION_FWD does to the datapath flows, and whether a reused client port's session
keeps the FIN timeout.

    .venv/bin/python bench/results/probe23/probe_exp.py [--app-src DIR] [--stop]

Prints the datapath flows left 0.3 s after 20 sessions (and those after the group's
recirculation), then opens a session from client port 42000, and again from the same
port 1 s later holding it 14.5 s with one ping after 14 s idle, sampling the port's
SESSION_FWD flow (idle timeout, age) and its datapath flow's TCP flags meanwhile.
``--stop`` stops after the datapath flows. With ``--app-src`` the controller runs that
copy of ``lbrp_app`` (e.g. a worktree of the code before, or one with
``restore-attempt.diff`` applied).
"""
import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "integration")]
from conftest import controller_on_lab

from topologies.lbrp_topo import lab

VIP = "13.13.13.13"
BASE = {"services": [{"vip": VIP, "proto": "tcp", "port": 8000, "name": "web",
         "backends": [{"ip": f"10.0.1.{i}", "port": 8002, "weight": 1} for i in (2, 3, 4)]}]}


def sh(*a: str) -> str:
    return subprocess.run(a, check=False, capture_output=True, text=True).stdout


def port_flows(port: int) -> tuple[list[str], list[str]]:
    fwd = [ln for ln in sh("ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "lb0",
                           "table=10").splitlines() if f"tp_src={port}" in ln]
    dp = [ln for ln in sh("ovs-appctl", "dpctl/dump-flows").splitlines()
          if f"src={port}" in ln]
    return ([ln.split("idle_timeout=")[1][:3] + " duration " + ln.split("duration=")[1][:6]
             for ln in fwd], [ln.split("flags:")[1][:4] if "flags:" in ln else "" for ln in dp])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--app-src", default=None)
    p.add_argument("--stop", action="store_true")
    a = p.parse_args()
    if a.app_src:
        import os
        os.environ["PYTHONPATH"] = a.app_src
    folder = Path("/tmp/probe_exp")
    folder.mkdir(exist_ok=True)
    with lab(servers=True, plain="linux") as net, \
            controller_on_lab(net, folder, BASE, "learn") as n:
        def client(*extra: str, sessions: int = 1) -> dict:
            return n.run_client(n.clients[0], VIP, "tcp", 8000, sessions=sessions,
                                extra=list(extra))

        r = client("--src-port-base", "41000", sessions=20)
        print("20 sessions:", {k: r[k] for k in ("ok", "failed", "by_backend")})
        time.sleep(0.3)
        flows = sh("ovs-appctl", "dpctl/dump-flows").splitlines()
        after = [ln for ln in flows if "recirc_id(0)" not in ln and "src=41" in ln]
        print("datapath flows 0.3 s after:", len(flows), "after the recirculation:", len(after))
        if a.stop:
            return
        r1 = client("--src-port-base", "42000")
        time.sleep(1)
        res: dict = {}
        th = threading.Thread(target=lambda: res.update(r=client(
            "--src-port-base", "42000", "--hold", "14.5", "--ping-interval", "14",
            "--timeout", "3")))
        th.start()
        for _ in range(15):
            time.sleep(0.1)
            print(f"{time.time() % 100:6.2f}", *port_flows(42000))
        th.join()
        r2 = res["r"]
        print("first:", r1["ok"], r1.get("by_backend"), "| reused, then 14 s idle:",
              "ok" if r2["ok"] else f"failed {r2.get('failures') or r2.get('failed')}")


if __name__ == "__main__":
    main()
