"""Per-round figures of the twenty-third session's A/B (learn only, the lookup against the
code before it): ``python3 bench/results/probe23/summary.py``."""
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent


def rows(name: str) -> list[tuple]:
    d = json.loads((HERE / f"{name}.json").read_text())
    rounds = d["phases"]["traffic"]["rounds"]
    plain = {r["round"]: r for r in rounds if r["setup"] == "plain"}
    out = []
    for r in rounds:
        if r["setup"] != "lbrp-learn":
            continue
        p, q = r["paced"], plain[r["round"]]["paced"]
        out.append((name, r["round"], p["connect_ms_p50"], p["connect_ms_p99"],
                    p["connect_ms_p999"], p["late_starts"],
                    round(p["connect_ms_p99"] / q["connect_ms_p99"], 2),
                    r["costs"]["per_session"].get("xlate_actions"),
                    r["ovs"]["dp_flows_after"]["lab"]))
    return out


def main() -> None:
    print("run, round, learn at 500/s: p50 / p99 / p99.9 ms, late starts, p99 / plain's "
          "p99 in the round, translations per session (saturated run), datapath flows "
          "after it")
    for code in ("after", "before"):
        all_rows = [row for i in (1, 2) for row in rows(f"traffic-{code}-{i}")]
        for row in all_rows:
            print(*row)
        print(f"{code}: median p99 {statistics.median(r[3] for r in all_rows)} ms, "
              f"p99.9 {statistics.median(r[4] for r in all_rows)} ms, "
              f"p99 ratio {statistics.median(r[6] for r in all_rows)}, "
              f"late starts {sum(r[5] for r in all_rows)}")
    for code in ("after", "before"):
        for i in (1, 2):
            for kind in ("rate", "traffic"):
                d = json.loads((HERE / f"{kind}-{code}-{i}.json").read_text())
                for s in d["summary"]:
                    if s.get("ratios") and "ratio to the same round" in s["measure"]:
                        print(f"{kind}-{code}-{i}", s["measure"], s["ratios"]["lbrp-learn"])


if __name__ == "__main__":
    main()
