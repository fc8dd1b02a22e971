"""Classify the lag probe's episodes by what held the thread: classify.py LAG_LOG.

Start-up programming (holds over 300 ms) is left out. An episode that includes a REST
change counts as the change's own."""

import sys
from collections import defaultdict

CLASSES = [("REST change", ("apply@app.py",)), ("prune", ("prune",)),
           ("reading steps", ("on_reading_steps",)),
           ("counter requests", ("counter_requests", "request_paced")),
           ("os-ken recv/parse", ("_recv_loop@controller",)),
           ("fold", ("fold_reply", "_read_counters")), ("REST other", ("rest.py", "wsgi.py"))]

episodes: list[tuple[float, list[str]]] = []
with open(sys.argv[1]) as log:
    for line in log:
        if " LAG " in line:
            episodes.append((float(line.split()[2]), []))
        else:
            episodes[-1][1].append(line.strip())
by_class: dict[str, list[float]] = defaultdict(list)
for lag, samples in episodes:
    if lag >= 300:
        continue
    text = " ".join(samples)
    name = next((c for c, marks in CLASSES if any(m in text for m in marks)), "other")
    by_class[name].append(lag)
for name, lags in sorted(by_class.items(), key=lambda kv: -max(kv[1])):
    lags.sort()
    print(f"{len(lags):4d} episodes, max {lags[-1]:6.1f} ms, median {lags[len(lags) // 2]:5.1f}"
          f"  {name}")
