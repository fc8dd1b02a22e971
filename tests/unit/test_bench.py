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
