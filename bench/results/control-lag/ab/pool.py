"""Pool the control A/B runs per side and mode: the first PUT after a start, change ->
first packet, PUT and DELETE answers."""
import json
import statistics
from pathlib import Path

here = Path(__file__).parent
for side in ("before", "after"):
    for mode in ("lbrp-learn", "lbrp-conntrack"):
        first, puts, firsts, saves = [], [], [], []
        for f in sorted(here.glob(f"{side}-*.json")):
            rec = json.loads(f.read_text())["phases"]["control"]["modes"][mode]["change_big"]
            samples = rec["samples"]
            firsts.append(samples[0]["put_ms"])
            saves.append(samples[0]["put_steps_ms"]["save"])
            first += [s["first_packet_ms"] for s in samples if s["first_packet_ms"]]
            puts += [s["put_ms"] for s in samples[1:]]
        q = statistics.quantiles(first, n=10)
        print(f"{side:6} {mode:15} first PUT after a start {', '.join(f'{x:.0f}' for x in firsts)}"
              f" ms (save {', '.join(f'{x:.0f}' for x in saves)}); {len(first)} changes: first "
              f"packet median {statistics.median(first):.1f} p90 {q[8]:.1f} max {max(first):.1f}"
              f", over 50 ms {sum(x > 50 for x in first)}; later PUTs median "
              f"{statistics.median(puts):.1f} max {max(puts):.1f}")
