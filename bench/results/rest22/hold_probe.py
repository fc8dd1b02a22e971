"""How long a REST request waits behind the controller's counter polls, with no traffic.

Usage: .venv/bin/python bench/results/rest22/hold_probe.py learn|conntrack [APP_SRC] [SECONDS]

Starts a real controller (osken-manager lbrp_app; with APP_SRC, that tree's lbrp_app
first on PYTHONPATH) with bench/run.py's 2,000 services x 8 backends and
stats_interval 3, on a scratch netdev bridge (lbrpx1, two internal ports; created here
and deleted at the end). After the programming and the first polls (15 s), it sends
GET /lbrp/v1/health one after the other, 10 ms apart, for SECONDS (60), and prints the
answer times: the controller has one thread, so a request that arrives while it works
through a poll's own steps waits until it lets other work run. Also the controller's
CPU over the window (/proc) and the last poll's requests and seconds (/stats). Needs
root and a running ovs-vswitchd.
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from run import big_config

from topologies.controller import Controller, free_port, wait_for

BRIDGE = "lbrpx1"


def main() -> None:
    mode = sys.argv[1]
    app_src = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    of_port = free_port()
    work = Path("/tmp/lbrp-hold-probe")
    work.mkdir(exist_ok=True)
    cfg = big_config(mode, 2000, 8)
    cfg["stats_interval"] = 3
    (work / "lbrp.yaml").write_text(yaml.safe_dump(cfg))
    port = ["--", "set", "interface"]
    subprocess.run(["ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                    "datapath_type=netdev", "protocols=OpenFlow15", "fail_mode=secure",
                    "--", "add-port", BRIDGE, "lbrpx1f", *port, "lbrpx1f", "type=internal",
                    "ofport_request=1", "--", "add-port", BRIDGE, "lbrpx1b", *port,
                    "lbrpx1b", "type=internal", "ofport_request=2", "--", "set-controller",
                    BRIDGE, f"tcp:127.0.0.1:{of_port}"], check=True)
    ctl = Controller(work / "lbrp.yaml", of_port, env={"PYTHONPATH": app_src} if app_src else {},
                     log_dir=work)
    try:
        ctl.start()
        dpid = subprocess.run(["ovs-vsctl", "get", "bridge", BRIDGE, "datapath_id"],
                              capture_output=True, text=True, check=True).stdout.strip()
        wait_for(lambda: ctl.programmed(dpid.strip('"')), 120, "the switch programmed")
        assert ctl.proc is not None

        def cpu() -> float:
            fields = Path(f"/proc/{ctl.proc.pid}/stat").read_text().split(")")[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        time.sleep(15)
        waits: list[float] = []
        c0, t0 = cpu(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            start = time.monotonic()
            status, _ = ctl.request("GET", "/health", timeout=60)
            assert status == 200, status
            waits.append((time.monotonic() - start) * 1000)
            if os.environ.get("HOLD_PROBE_SLOW") and waits[-1] > 50:
                print(f"slow {waits[-1]:.1f} ms at {time.time() - waits[-1] / 1000:.3f}",
                      flush=True)
            time.sleep(0.01)
        c1, t1 = cpu(), time.monotonic()
        last = ctl.request("GET", "/stats", timeout=60)[1]["controller"]
        waits.sort()
        q = statistics.quantiles(waits, n=100)
        print(f"{mode} {app_src or 'this tree'}: {len(waits)} GET /health in {t1 - t0:.0f} s: "
              f"median {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {waits[-1]:.1f} ms; "
              f"over 20 ms {sum(w > 20 for w in waits)}, over 50 ms "
              f"{sum(w > 50 for w in waits)}; controller CPU {(c1 - c0) / (t1 - t0):.3f} "
              f"of a core; last poll {last['last_poll_requests']} requests in "
              f"{last['last_poll_seconds']:.2f} s", flush=True)
    finally:
        ctl.stop()
        subprocess.run(["ovs-vsctl", "del-br", BRIDGE], check=True)


if __name__ == "__main__":
    main()
