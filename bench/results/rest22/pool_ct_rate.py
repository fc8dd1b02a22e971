"""Pool the conntrack rate A/B of the twenty-second session per code (run from the
repository root): conntrack's paired ratios to plain, with the bench's 90 % interval of
the median, and how many pairs were at or above 0.95."""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from run import median_interval

here = Path(__file__).parent
for code in ("a3e", "head"):
    ratios = []
    for f in sorted(here.glob(f"ct-rate-{code}-*.json")):
        by_round: dict[int, dict[str, dict]] = {}
        for rec in json.loads(f.read_text())["phases"]["rate"]["runs"]:
            by_round.setdefault(rec["round"], {})[rec["setup"]] = rec
        for pair in by_round.values():
            plain, ct = pair.get("plain"), pair.get("lbrp-conntrack")
            if plain and ct and plain["sessions"]["ok_per_s"]:
                ratios.append(ct["sessions"]["ok_per_s"] / plain["sessions"]["ok_per_s"])
    lo, hi = median_interval(ratios)
    print(f"{code}: {len(ratios)} pairs, conntrack {statistics.median(ratios):.3f}x "
          f"[{lo:.3f}, {hi:.3f}], "
          f"{sum(r >= 0.95 for r in ratios)} at or above 0.95")
