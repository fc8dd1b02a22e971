"""Pool the flow-removed A/B's rate runs per variant (run from the repository root):
learn's paired ratios to plain, its p99 connect, and the controller's CPU per session."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from run import median_interval, paired_ratio_lists

SETUPS = ("plain", "lbrp-learn")
here = Path(__file__).parent
for variant in ("fast", "before"):
    ratios, warm, p99, ctl = [], [], [], []
    for f in sorted(here.glob(f"rate-warm-{variant}-*.json")):
        runs = json.loads(f.read_text())["phases"]["rate"]["runs"]
        for out, get in ((ratios, lambda r: r["sessions"]["ok_per_s"]),
                         (warm, lambda r: r["warmup"]["ok_per_s"]),
                         (p99, lambda r: r["sessions"]["connect_ms_p99"])):
            out += paired_ratio_lists(runs, SETUPS, get)["lbrp-learn"]
        ctl += [r["controller_cpu_ms_per_session"] for r in runs if r["setup"] == "lbrp-learn"]
    print(f"{variant:6} {len(ratios)} pairs: learn {statistics.median(ratios):.3f} "
          f"{list(median_interval(ratios) or ())}; in the warm-ups {statistics.median(warm):.3f}; "
          f"p99 {statistics.median(p99):.2f}x plain's; controller CPU per session "
          f"{statistics.median(ctl):.3f} ms [{min(ctl):.3f}, {max(ctl):.3f}]")
