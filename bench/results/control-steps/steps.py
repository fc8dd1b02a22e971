"""A control run's changes step by step, from the controller's "change:" log lines.

``python3 steps.py trace-7.json``: per mode, change -> first packet (median, p90, max),
the three slowest changes with their steps, and each step's median and max over the
PUTs (milliseconds).
"""

import json
import statistics
import sys
from pathlib import Path

STEPS = ("request", "lock", "edit", "diff", "staged", "commit", "save", "collect", "total")

doc = json.loads(Path(sys.argv[1]).read_text())
for mode, rec in doc["phases"]["control"]["modes"].items():
    big = rec["change_big"]
    first = [s["first_packet_ms"] for s in big["samples"]]
    print(f"{mode}: first packet median {big['first_packet_ms_median']} p90 "
          f"{big['first_packet_ms_p90']} max {big['first_packet_ms_max']}, over 50 ms "
          f"{sum(x > 50 for x in first)}; PUT {big['put_ms_median']}, DELETE "
          f"{big['delete_ms_median']}; 3 services {rec['change_small']['first_packet_ms_median']}")
    for s in sorted(big["samples"], key=lambda s: -s["first_packet_ms"])[:3]:
        print(f"  first {s['first_packet_ms']:6.1f} put {s['put_ms']:6.1f}",
              s.get("put_steps_ms"))
    for step in STEPS:
        got = [s["put_steps_ms"].get(step, 0) for s in big["samples"] if s.get("put_steps_ms")]
        if got:
            print(f"  {step:8} median {statistics.median(got):6.1f} max {max(got):6.1f}")
