"""Pool the REST-change A/B under learn's expiries (run from the repository root): per
variant, the first-packet latencies of the 2,000-service changes and how many were over
50 ms, in all changes and in those made after the probe's first sessions expired; then,
for those over 50 ms, whether the time went before the switch confirmed the change or
after it.

    python3 bench/results/flowrem/pool_control.py [DIR VARIANT...]

reads DIR/control-expiry-VARIANT-*.json (default: this folder, "fast" and "before")."""
import json
import statistics
import sys
from pathlib import Path

here, variants = Path(__file__).parent, ["fast", "before"]
if len(sys.argv) > 2:
    here, variants = Path(sys.argv[1]), sys.argv[2:]
SWITCH_STEPS = ("request", "lock", "edit", "diff", "staged", "commit")


def big_change_runs(o):
    """Every result of the 2,000-service change latency in a bench JSON."""
    if isinstance(o, dict):
        if o.get("label") == "2000 services" and "samples" in o:
            yield o
        for v in o.values():
            yield from big_change_runs(v)
    elif isinstance(o, list):
        for v in o:
            yield from big_change_runs(v)


for variant in variants:
    every, late, confirmed, slow = [], [], [], []
    for f in sorted(here.glob(f"control-expiry-{variant}-*.json")):
        for run in big_change_runs(json.loads(f.read_text())):
            t = 1.0  # the probe starts 1 s before the first change; its sessions idle 12 s
            for s in run["samples"]:
                fp = s["first_packet_ms"]
                if fp is not None:
                    every.append(fp)
                    if t > 13:
                        late.append(fp)
                    steps = s.get("put_steps_ms") or {}
                    # from the request's arrival to the switch's confirmation
                    switch = sum(steps.get(k, 0.0) for k in SWITCH_STEPS)
                    confirmed.append(switch)
                    if fp > 50:
                        slow.append((fp, switch))
                t += (max(s["put_ms"], fp or 0) + s["delete_ms"]) / 1000 + 0.2
    q = statistics.quantiles(every, n=10)
    print(f"{variant:8} {len(every)} changes: first packet median {statistics.median(every):.1f} "
          f"p90 {q[8]:.1f} max {max(every):.1f} ms, {sum(x > 50 for x in every)} over 50 ms; "
          f"after the first expiries: {len(late)} changes, median "
          f"{statistics.median(late):.1f} ms, {sum(x > 50 for x in late)} over 50 ms")
    print(f"{'':8} switch confirmed the change after a median of "
          f"{statistics.median(confirmed):.1f} ms (p90 "
          f"{statistics.quantiles(confirmed, n=10)[8]:.1f}); of those over 50 ms, "
          f"{sum(sw > 25 for _, sw in slow)} took over 25 ms to be confirmed, "
          f"{sum(fp - sw > 25 for fp, sw in slow)} over 25 ms from confirmation to the "
          f"first packet")
