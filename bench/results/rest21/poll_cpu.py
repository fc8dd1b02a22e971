"""The controller's CPU for counter polls of a big config, with no traffic.

Usage: .venv/bin/python bench/results/rest21/poll_cpu.py learn|conntrack [APP_SRC] [SECONDS]

Starts a real controller (osken-manager lbrp_app; with APP_SRC, that tree's lbrp_app
first on PYTHONPATH) with bench/run.py's 2,000 services x 8 backends and
stats_interval 3, on a scratch netdev bridge (lbrpx1, two internal ports; created here
and deleted at the end). After the programming and the first poll (15 s), it reads the
controller's CPU time (/proc) over SECONDS (60), then the last poll's requests and
seconds from /stats. A poll starts 3 s after the last one ended, so the polls in the
window are about SECONDS / (3 + the poll's seconds). Needs root and a running
ovs-vswitchd. ``scratch_controller`` is also bench/results/rest22/hold_probe.py's.
"""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from run import big_config

from topologies.controller import Controller, free_port, wait_for

BRIDGE = "lbrpx1"


@contextlib.contextmanager
def scratch_controller(mode: str, app_src: str | None, work: Path
                       ) -> Iterator[tuple[Controller, Callable[[], float]]]:
    """A controller with the bench's 2,000 x 8 and stats_interval 3, programmed on the
    scratch bridge, 15 s after it was programmed; with a function giving its CPU seconds."""
    of_port = free_port()
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
        pid = ctl.proc.pid

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        time.sleep(15)
        yield ctl, cpu
    finally:
        ctl.stop()
        subprocess.run(["ovs-vsctl", "del-br", BRIDGE], check=True)


def main() -> None:
    mode = sys.argv[1]
    app_src = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    with scratch_controller(mode, app_src, Path("/tmp/lbrp-poll-cpu")) as (ctl, cpu):
        c0, t0 = cpu(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu(), time.monotonic()
        last = ctl.request("GET", "/stats", timeout=60)[1]["controller"]
        share = (c1 - c0) / (t1 - t0)
        polls = (t1 - t0) / (3 + last["last_poll_seconds"])
        print(f"{mode} {app_src or 'this tree'}: controller CPU {c1 - c0:.2f} s in "
              f"{t1 - t0:.0f} s ({share:.3f} of a core); last poll {last['last_poll_requests']} "
              f"requests in {last['last_poll_seconds']:.2f} s; about {(c1 - c0) / polls:.2f} s "
              f"of CPU per poll", flush=True)


if __name__ == "__main__":
    main()
