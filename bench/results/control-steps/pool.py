"""Pool the control A/B runs: change -> first packet, PUT and DELETE answers, per side and mode."""
import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).parent
for side in ("before", "after"):
    for mode in ("lbrp-learn", "lbrp-conntrack"):
        first, puts, dels, put_meds, del_meds = [], [], [], [], []
        for f in sorted(here.glob(f"{side}-*.json")):
            rec = json.loads(f.read_text())["phases"]["control"]["modes"][mode]["change_big"]
            first += [s["first_packet_ms"] for s in rec["samples"] if s["first_packet_ms"]]
            puts += [s["put_ms"] for s in rec["samples"]]
            dels += [s["delete_ms"] for s in rec["samples"]]
            put_meds.append(rec["put_ms_median"])
            del_meds.append(rec["delete_ms_median"])
        q = statistics.quantiles(first, n=10)
        print(f"{side:6} {mode:15} changes {len(first)}: first packet median "
              f"{statistics.median(first):.1f} p90 {q[8]:.1f} max {max(first):.1f} "
              f"over 50 ms {sum(x > 50 for x in first)}; PUT medians {min(put_meds):.0f}-"
              f"{max(put_meds):.0f}, DELETE medians {min(del_meds):.0f}-{max(del_meds):.0f}",
              file=sys.stdout)
