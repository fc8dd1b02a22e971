"""Pool the REST-change A/B under learn's expiries (run from the repository root): per
variant, the first-packet latencies of the 2,000-service changes and how many were over
50 ms, in all changes and in those made after the probe's first sessions expired."""
import json
import statistics
from pathlib import Path

here = Path(__file__).parent


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


for variant in ("fast", "before"):
    every, late = [], []
    for f in sorted(here.glob(f"control-expiry-{variant}-*.json")):
        for run in big_change_runs(json.loads(f.read_text())):
            t = 1.0  # the probe starts 1 s before the first change; its sessions idle 12 s
            for s in run["samples"]:
                fp = s["first_packet_ms"]
                if fp is not None:
                    every.append(fp)
                    if t > 13:
                        late.append(fp)
                t += (max(s["put_ms"], fp or 0) + s["delete_ms"]) / 1000 + 0.2
    q = statistics.quantiles(every, n=10)
    print(f"{variant:6} {len(every)} changes: first packet median {statistics.median(every):.1f} "
          f"p90 {q[8]:.1f} max {max(every):.1f} ms, {sum(x > 50 for x in every)} over 50 ms; "
          f"after the first expiries: {len(late)} changes, median "
          f"{statistics.median(late):.1f} ms, {sum(x > 50 for x in late)} over 50 ms")
