"""The benchmark's pure parts: which setups run, in which order."""

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


def test_cpu_per_gb_is_vswitchd_cpu_over_the_bytes_delivered() -> None:
    from bench.run import cpu_per_gb
    cpu = {"ovs-vswitchd": 4.0, "revalidator": 1.0, "urcu": 0.0}
    # 0.5 Gbit/s for 8 s = 0.5 GB
    assert cpu_per_gb({"received_gbps": 0.5}, cpu, 8.0) == 10.0
    assert cpu_per_gb({"error": "iperf3 rc=1"}, cpu, 8.0) is None


def test_phases_include_throughput_and_refuse_unknown_ones() -> None:
    import pytest
    assert parse_args([]).phases == ["traffic", "throughput", "held", "control"]
    assert parse_args(["--phases", "throughput", "--quick"]).throughput_reps == 2
    with pytest.raises(SystemExit):
        parse_args(["--phases", "traffic,speed"])
