"""Pool rate runs per variant: conntrack's paired ratios to plain, with the bench's 90 %
interval of the median, and its ovs-vswitchd CPU per session over plain's (run from the
repository root).

    python3 bench/results/smc/pool.py [DIR VARIANT...]

reads DIR/VARIANT-*.json (default: this folder, the SMC A/B's "smc-on" and
"smc-default"; the twenty-second session's conntrack A/B: bench/results/rest22
ct-rate-a3e ct-rate-head)."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from run import median_interval

here, variants = Path(__file__).parent, ["smc-on", "smc-default"]
if len(sys.argv) > 2:
    here, variants = Path(sys.argv[1]), sys.argv[2:]
for variant in variants:
    ratios, cpu = [], []
    for f in sorted(here.glob(f"{variant}-*.json")):
        by_round: dict[int, dict[str, dict]] = {}
        for rec in json.loads(f.read_text())["phases"]["rate"]["runs"]:
            by_round.setdefault(rec["round"], {})[rec["setup"]] = rec
        for pair in by_round.values():
            plain, ct = pair.get("plain"), pair.get("lbrp-conntrack")
            if plain and ct and plain["sessions"]["ok_per_s"]:
                ratios.append(ct["sessions"]["ok_per_s"] / plain["sessions"]["ok_per_s"])
                cpu.append(ct["vswitchd_cpu_ms_per_session"] / plain["vswitchd_cpu_ms_per_session"])
    print(f"{variant:12} {len(ratios)} pairs: conntrack {statistics.median(ratios):.3f} "
          f"{list(median_interval(ratios) or ())}, {sum(r >= 0.95 for r in ratios)} at 0.95 or "
          f"more; CPU per session {statistics.median(cpu):.2f}x plain's")
