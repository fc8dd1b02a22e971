"""Start-up times of the control-phase logs here, per code version and mode.

Usage: python3 bench/results/startup20/summarize.py [DIR]. Versions are the middle
part of the log names (start-<version>-<n>.log); the mode is told by the flow count.
"""

import glob
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"programmed after ([0-9.]+) s \(REST up ([0-9.]+) s, switch connected "
                  r"([0-9.]+) s later\); log: ([0-9]+) flows.* in ([0-9.]+) s")
folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
versions = sorted({p.name.split("-")[1] for p in folder.glob("start-*-*.log")})
for version in versions:
    rows: dict[str, list[tuple[float, ...]]] = {}
    for name in sorted(glob.glob(str(folder / f"start-{version}-*.log"))):
        for line in Path(name).read_text().splitlines():
            m = LINE.search(line)
            if m:
                total, rest, wait, flows, prog = m.groups()
                mode = "conntrack" if int(flows) > 40000 else "learn"
                rows.setdefault(mode, []).append(
                    (float(total), float(rest), float(wait), float(prog)))
    for mode, got in rows.items():
        cols = zip(("start to programmed", "REST up", "switch wait", "programming"), zip(*got))
        print(f"{version:8} {mode:9} {len(got)} starts: " + "; ".join(
            f"{name} {min(c):.2f}-{max(c):.2f} s (median {statistics.median(c):.2f})"
            for name, c in cols))
