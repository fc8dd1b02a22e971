"""Pool the SMC A/B's rate runs per setting: conntrack's paired ratios to plain and its
ovs-vswitchd CPU per session over plain's (run from the repository root)."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from run import median_interval

here = Path(__file__).parent
for setting in ("on", "default"):
    ratios, cpu = [], []
    for f in sorted(here.glob(f"smc-{setting}-*.json")):
        by_round: dict[int, dict[str, dict]] = {}
        for rec in json.loads(f.read_text())["phases"]["rate"]["runs"]:
            by_round.setdefault(rec["round"], {})[rec["setup"]] = rec
        for pair in by_round.values():
            plain, ct = pair.get("plain"), pair.get("lbrp-conntrack")
            if plain and ct and plain["sessions"]["ok_per_s"]:
                ratios.append(ct["sessions"]["ok_per_s"] / plain["sessions"]["ok_per_s"])
                cpu.append(ct["vswitchd_cpu_ms_per_session"] / plain["vswitchd_cpu_ms_per_session"])
    print(f"smc {setting:7} {len(ratios)} pairs: conntrack {statistics.median(ratios):.3f} "
          f"{list(median_interval(ratios) or ())}, {sum(r >= 0.95 for r in ratios)} at 0.95 or "
          f"more; CPU per session {statistics.median(cpu):.2f}x plain's")
