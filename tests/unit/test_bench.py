"""The benchmark's pure parts: which setups run, in which order."""

import pytest

from bench.run import parse_args, round_order


def test_setups_by_default_and_with_the_conntrack_prototype() -> None:
    assert parse_args(["--modes", "learn"]).setups == ["plain", "select", "lbrp-learn"]
    opts = parse_args(["--modes", "learn,conntrack", "--no-select", "--ct-select"])
    assert opts.setups == ["plain", "ct-select", "lbrp-learn", "lbrp-conntrack"]


def test_odd_rounds_run_the_setups_in_reverse() -> None:
    setups = ["plain", "select", "lbrp-learn", "lbrp-conntrack"]
    assert round_order(setups, 0) == setups
    assert round_order(setups, 1) == ["lbrp-conntrack", "lbrp-learn", "select", "plain"]
    assert round_order(setups, 2) == setups
    # what runs right after learn changes from one round to the next
    followers = {b for r in (0, 1) for a, b in zip(round_order(setups, r),
                                                   round_order(setups, r)[1:], strict=False)
                 if a == "lbrp-learn"}
    assert followers == {"lbrp-conntrack", "select"}


def test_rate_blocks_give_each_mode_its_own_rounds_against_the_baselines() -> None:
    args = ["--phases", "rate", "--modes", "learn,conntrack", "--no-select", "--rate-reps", "2"]
    assert parse_args(args).rate_schedule() == [
        (1, ["plain", "lbrp-learn", "lbrp-conntrack"]),
        (2, ["lbrp-conntrack", "lbrp-learn", "plain"])]
    assert parse_args([*args, "--rate-blocks"]).rate_schedule() == [
        (1, ["plain", "lbrp-learn"]), (2, ["lbrp-learn", "plain"]),
        (3, ["plain", "lbrp-conntrack"]), (4, ["lbrp-conntrack", "plain"])]
    with pytest.raises(SystemExit):  # 2 blocks x 2 setups x 28 runs: over 110 addresses
        parse_args([*args[:-1], "28", "--rate-blocks"])
    assert len(parse_args([*args[:-1], "27", "--rate-blocks"]).rate_schedule()) == 54


def test_learned_flows_add_up_the_session_tables() -> None:
    from bench.run import learned_flows
    assert learned_flows({"table10": 100_001, "table11": 100_001, "all": 200_040}) == 200_002
    assert learned_flows({"table10": None, "table11": 3, "all": None}) == 3


def test_paired_ratios_divide_by_the_same_rounds_plain() -> None:
    from bench.run import paired_ratios
    recs = [{"round": 1, "setup": "plain", "v": 100.0}, {"round": 1, "setup": "lbrp-learn", "v": 50.0},
            {"round": 2, "setup": "lbrp-learn", "v": 90.0}, {"round": 2, "setup": "plain", "v": 200.0},
            {"round": 3, "setup": "plain", "v": 100.0}, {"round": 3, "setup": "lbrp-learn", "v": None},
            {"round": 4, "setup": "plain", "v": 400.0}, {"round": 4, "setup": "lbrp-learn", "v": 240.0}]
    ratios = paired_ratios(recs, ["plain", "lbrp-learn", "lbrp-conntrack"], lambda r: r["v"])
    # rounds 1, 2, 4: 0.5, 0.45, 0.6 (round 3 has no learn value); the medians' ratio
    # would be 90 / 150 = 0.6
    assert ratios == {"plain": 1.0, "lbrp-learn": 0.5, "lbrp-conntrack": None}


def test_paired_ratio_lists_keep_every_round_that_has_both_values() -> None:
    from bench.run import paired_ratio_lists
    recs = [{"round": 1, "setup": "plain", "v": 100.0}, {"round": 1, "setup": "lbrp-conntrack", "v": 96.0},
            {"round": 2, "setup": "lbrp-conntrack", "v": 50.0}, {"round": 2, "setup": "plain", "v": None},
            {"round": 3, "setup": "plain", "v": 200.0}, {"round": 3, "setup": "lbrp-conntrack", "v": 210.0}]
    assert paired_ratio_lists(recs, ["plain", "lbrp-conntrack"], lambda r: r["v"]) == {
        "lbrp-conntrack": [0.96, 1.05]}


def test_median_interval_brackets_the_median_and_narrows_with_more_pairs() -> None:
    import statistics

    from bench.run import median_interval
    assert median_interval([0.9, 1.0]) is None
    few = [0.80, 1.10, 0.95, 0.99, 0.90]
    lo, hi = median_interval(few)
    assert lo <= statistics.median(few) <= hi
    assert median_interval(few) == (lo, hi)  # fixed seed: the same file, the same interval
    many = few * 6
    lo6, hi6 = median_interval(many)
    assert lo <= lo6 <= statistics.median(many) <= hi6 <= hi and hi6 - lo6 < hi - lo


def test_the_rate_phase_is_summarized_with_its_paired_ratio_and_interval() -> None:
    from bench.run import summarize
    opts = parse_args(["--modes", "conntrack", "--no-select", "--phases", "rate"])
    runs = []
    for r, (plain, ct) in enumerate([(5000, 4900), (4000, 3700), (4500, 4400), (5200, 5300)]):
        for setup, v in (("plain", plain), ("lbrp-conntrack", ct)):
            runs.append({"round": r + 1, "setup": setup, "vswitchd_cpu_ms_per_session": 0.1,
                         "sessions": {"ok_per_s": float(v), "connect_ms_p99": 3.0, "failed": 0}})
            if setup != "plain":  # plain runs no controller
                runs[-1]["controller_cpu_ms_per_session"] = 0.01 * (r + 1)
    # a traffic phase in the same result must not disturb the rate rows
    traffic = [{"round": 1, "setup": setup, "iperf": {},
                "sessions": {"ok_per_s": 1.0, "connect_ms_p50": 1.0, "connect_ms_p99": 2.0,
                             "failed": 0}} for setup in opts.setups]
    res = {"phases": {"traffic": {"rounds": traffic}, "rate": {"runs": runs}}}
    rows = {row["measure"]: row for row in summarize(res, opts)}
    assert rows["connect p99 ms"]["values"]["plain"] == 2.0
    paired = rows["rate phase: new sessions/s: ratio to the same round's plain, median of rounds"]
    # ratios 0.98, 0.925, 0.978, 1.019: median 0.979
    assert paired["values"]["lbrp-conntrack"] == 0.979
    assert rows["  paired ratios at or above 0.95"]["values"]["lbrp-conntrack"] == 3
    ctl = rows["rate phase: controller CPU ms per session"]["values"]
    assert ctl == {"plain": None, "lbrp-conntrack": 0.025}  # the median of the four runs
    low = rows["  90 % interval of that median: low"]["values"]["lbrp-conntrack"]
    assert 0.925 <= low <= 0.979


def test_cpu_per_gb_is_vswitchd_cpu_over_the_bytes_delivered() -> None:
    from bench.run import cpu_per_gb
    cpu = {"ovs-vswitchd": 4.0, "revalidator": 1.0, "urcu": 0.0}
    # 0.5 Gbit/s for 8 s = 0.5 GB
    assert cpu_per_gb({"received_gbps": 0.5}, cpu, 8.0) == 10.0
    assert cpu_per_gb({"error": "iperf3 rc=1"}, cpu, 8.0) is None


def test_phases_include_throughput_and_refuse_unknown_ones() -> None:
    import pytest
    assert parse_args([]).phases == ["traffic", "rate", "throughput", "held", "control"]
    assert parse_args(["--phases", "throughput", "--quick"]).throughput_reps == 2
    assert parse_args(["--phases", "rate"]).rate_reps == 12
    with pytest.raises(SystemExit):  # 3 setups x 40 runs: more than the 110 source addresses
        parse_args(["--phases", "rate", "--modes", "learn,conntrack", "--no-select",
                    "--rate-reps", "40"])
    with pytest.raises(SystemExit):
        parse_args(["--phases", "traffic,speed"])


def _dump(t: float, src: str, dst: str, flags: str, seq: int = 1) -> str:
    return f"{t:.6f} IP {src} > {dst}: Flags [{flags}], seq {seq}, win 64240, length 0"


def test_hops_split_each_connect_at_lb0s_two_ports() -> None:
    from bench import hops
    c, vip, be = "10.0.0.20.40000", "13.13.13.13.8000", "10.0.1.2.8002"
    frontend = hops.parse([
        "tcpdump: listening on lb0-eth1",
        _dump(100.000000, c, vip, "S"),
        _dump(100.001500, vip, c, "S."),
        _dump(100.002000, c, vip, "S"),  # a retransmitted SYN: the first one counts
        _dump(101.0, "10.0.0.20.40001", vip, "S"),  # never reached the backend: skipped
    ])
    backend = hops.parse([
        _dump(100.000100, c, be, "S"),
        _dump(100.001000, be, c, "S."),
    ])
    assert frontend[0] == hops.Packet(100.0, ("10.0.0.20", 40000), ("13.13.13.13", 8000), "S",
                                      1)
    (row,) = hops.connects(frontend, backend)
    assert {k: round(v, 3) for k, v in row.items()} == {
        "syn_lb0": 0.1, "backend_side": 0.9, "synack_lb0": 0.5, "lb0_round_trip": 1.5}
    split = hops.summary([row, {**row, "syn_lb0": 2.0}])
    assert split["connects"] == 2
    assert split["syn_lb0_ms_p50"] == 0.1 and split["syn_lb0_ms_p99"] == 2.0
    assert hops.summary([])["lb0_round_trip_ms_p99"] is None


def test_hops_skip_a_connect_whose_packets_are_out_of_order() -> None:
    from bench import hops
    c, vip, be = "10.0.0.20.40000", "13.13.13.13.8000", "10.0.1.2.8002"
    # a SYN-ACK on the backend port before the SYN left lb0: another connect's packets
    frontend = hops.parse([_dump(5.0, c, vip, "S"), _dump(5.2, vip, c, "S.")])
    backend = hops.parse([_dump(4.0, be, c, "S."), _dump(5.1, c, be, "S")])
    assert hops.connects(frontend, backend) == []


def test_reuse_counts_ports_lb0_rewrote_and_syns_sent_again() -> None:
    from bench import hops
    vip, be = "13.13.13.13.8000", "10.0.1.2.8002"
    frontend = hops.parse([
        _dump(1.0, "10.0.0.20.40001", vip, "S", seq=7),
        _dump(1.1, "10.0.0.20.40003", vip, "S", seq=9),  # left lb0 from port 40004
        _dump(2.1, "10.0.0.20.40003", vip, "S", seq=9),  # the same SYN again
        _dump(2.2, "10.0.0.20.40001", vip, "S", seq=11),  # port reused: a new SYN
        _dump(2.3, vip, "10.0.0.20.40001", "S.", seq=5),  # SYN-ACKs do not count
    ])
    backend = hops.parse([
        _dump(1.0, "10.0.0.20.40001", be, "S", seq=7),
        _dump(1.1, "10.0.0.20.40004", be, "S", seq=9),
        _dump(2.2, "10.0.0.20.40001", be, "S", seq=11),
    ])
    assert hops.reuse(frontend, backend) == {"syns": 3, "port_rewritten": 1, "syn_resent": 1}
    assert hops.reuse([], []) == {"syns": 0, "port_rewritten": 0, "syn_resent": 0}


def test_lb_ports_afxdp_parses_but_not_with_hops() -> None:
    assert parse_args(["--lb-ports", "afxdp"]).lb_ports == "afxdp"
    assert parse_args([]).lb_ports == "system"
    with pytest.raises(SystemExit):
        parse_args(["--lb-ports", "afxdp", "--hops"])
    with pytest.raises(SystemExit):
        parse_args(["--lb-ports", "dpdk"])


def test_top_cpu_follows_a_process_by_pid_and_start_time_not_by_name() -> None:
    from bench.run import top_cpu
    before = {(7, 100): ("kworker/1:2H-events_highpri", 16.0), (9, 50): ("python", 3.0)}
    after = {(7, 100): ("kworker/1:2H-kblockd", 16.2),  # renamed: only its 0.2 s counts
             (9, 900): ("iperf3", 1.5)}  # pid 9 reused by a new process: all of it counts
    assert [(p["pid"], p["comm"], p["cpu_s"]) for p in top_cpu(before, after)] == [
        (9, "iperf3", 1.5), (7, "kworker/1:2H-kblockd", 0.2)]


def test_busy_fraction_leaves_out_idle_iowait_and_polling() -> None:
    from bench.run import busy_fraction
    assert busy_fraction((100, 1000), (150, 1200)) == 0.25
    # a PMD thread's busy-polling is left out: 150 busy ticks, 100 of them polling
    assert busy_fraction((100, 1000), (250, 1200), polling=100) == 0.25
    assert busy_fraction((100, 1000), (100, 1000)) == 0.0  # no time passed
    assert busy_fraction((100, 1000), (150, 1200), polling=80) == 0.0  # never negative


def test_cpu_times_reads_busy_and_total_ticks() -> None:
    from bench.run import cpu_times
    busy, total = cpu_times()
    assert 0 <= busy <= total and total > 0


def test_a_warm_up_takes_a_second_client_address_per_rate_run() -> None:
    args = ["--phases", "rate", "--modes", "learn", "--no-select", "--rate-reps", "10"]
    assert parse_args(args).rate_sources == 20
    assert parse_args([*args, "--warmup", "15"]).rate_sources == 40
    assert parse_args([*args[:-1], "27", "--warmup", "15"]).rate_sources == 108
    with pytest.raises(SystemExit):  # 2 setups x 28 runs x 2 addresses: over 110
        parse_args([*args[:-1], "28", "--warmup", "15"])
    parse_args([*args[:-1], "28", "--phases", "traffic", "--warmup", "15"])  # no rate phase
