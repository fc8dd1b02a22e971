"""Pool the flow-removed A/B's rate runs per variant (run from the repository root):
learn's paired ratios to plain, its p99 connect, and the controller's CPU per session."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from run import median_interval

here = Path(__file__).parent
for variant in ("fast", "before"):
    ratios, ctl, p99, warm = [], [], [], []
    for f in sorted(here.glob(f"rate-warm-{variant}-*.json")):
        by_round: dict[int, dict[str, dict]] = {}
        for rec in json.loads(f.read_text())["phases"]["rate"]["runs"]:
            by_round.setdefault(rec["round"], {})[rec["setup"]] = rec
        for pair in by_round.values():
            plain, lb = pair.get("plain"), pair.get("lbrp-learn")
            if plain and lb and plain["sessions"]["ok_per_s"]:
                ratios.append(lb["sessions"]["ok_per_s"] / plain["sessions"]["ok_per_s"])
                ctl.append(lb["controller_cpu_ms_per_session"])
                p99.append(lb["sessions"]["connect_ms_p99"] / plain["sessions"]["connect_ms_p99"])
                warm.append(lb["warmup"]["ok_per_s"] / plain["warmup"]["ok_per_s"])
    print(f"{variant:6} {len(ratios)} pairs: learn {statistics.median(ratios):.3f} "
          f"{list(median_interval(ratios) or ())}; in the warm-ups {statistics.median(warm):.3f}; "
          f"p99 {statistics.median(p99):.2f}x plain's; controller CPU per session "
          f"{statistics.median(ctl):.3f} ms [{min(ctl):.3f}, {max(ctl):.3f}]")
