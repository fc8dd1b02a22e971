"""How long a REST request waits behind the controller's counter polls, with no traffic.

Usage: .venv/bin/python bench/results/rest22/hold_probe.py learn|conntrack [APP_SRC] [SECONDS]

The controller and scratch bridge of bench/results/rest21/poll_cpu.py (bench/run.py's
2,000 services x 8 backends, stats_interval 3, bridge lbrpx1 created and deleted; with
APP_SRC, that tree's lbrp_app). After the programming and the first polls (15 s), it
sends GET /lbrp/v1/health one after the other, 10 ms apart, for SECONDS (60), and prints
the answer times: the controller has one thread, so a request that arrives while it
works through a poll's own steps waits until it lets other work run. Also the
controller's CPU over the window (/proc) and the last poll's requests and seconds
(/stats). With HOLD_PROBE_SLOW set, each answer over 50 ms is printed with its start
time. Needs root and a running ovs-vswitchd.
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rest21"))
from poll_cpu import scratch_controller


def main() -> None:
    mode = sys.argv[1]
    app_src = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    with scratch_controller(mode, app_src, Path("/tmp/lbrp-hold-probe")) as (ctl, cpu):
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


if __name__ == "__main__":
    main()
