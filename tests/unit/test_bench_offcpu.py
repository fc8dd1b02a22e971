"""bench/offcpu.py: why a thread is off the CPU, from perf's scheduler events."""

from bench import offcpu

SWITCH = ("{comm} {tid} {t}: sched:sched_switch: prev_comm={comm} prev_pid={tid} prev_prio=110 "
          "prev_state={state} ==> next_comm={nc} next_pid={np} next_prio=110\n")


def switch(t: str, comm: str, tid: int, state: str, nc: str, np: int, *frames: str) -> str:
    stack = "".join(f"\t    ffff {f}\n" for f in frames)
    return SWITCH.format(comm=comm, tid=tid, t=t, state=state, nc=nc, np=np) + stack + "\n"


TEXT = "".join([
    # preempted by urcu for 20 us
    switch("100.000000", "ovs-vswitchd", 1722, "R", "urcu3", 1938, "__schedule", "__sendmmsg"),
    switch("100.000020", "urcu3", 1938, "S", "ovs-vswitchd", 1722, "__schedule"),
    # a contended lock for 0.6 ms, released by a revalidator
    switch("100.001000", "ovs-vswitchd", 1722, "S", "swapper/1", 0, "__schedule", "futex_wait",
           "__GI___lll_lock_wait"),
    ("revalidator12 1800 100.001500: sched:sched_waking: comm=ovs-vswitchd pid=1722 prio=110 "
     "target_cpu=001\n\tffff try_to_wake_up\n\n"),
    switch("100.001600", "swapper", 0, "R", "ovs-vswitchd", 1722),
    # idle in poll() for 1 ms
    switch("100.002000", "ovs-vswitchd", 1722, "S", "swapper/1", 0, "__schedule",
           "do_sys_poll", "__poll"),
    switch("100.003000", "swapper", 0, "R", "ovs-vswitchd", 1722),
    # waiting 0.4 ms in ovsrcu_synchronize() (its poll), until a revalidator quiesces
    switch("100.003100", "ovs-vswitchd", 1722, "S", "swapper/1", 0, "__schedule",
           "do_sys_poll", "__poll", "poll_block", "ovsrcu_synchronize.part.0",
           "xlate_txn_commit", "type_run"),
    ("revalidator12 1800 100.003400: sched:sched_waking: comm=ovs-vswitchd pid=1722 prio=110 "
     "target_cpu=001\n\tffff try_to_wake_up\n\n"),
    switch("100.003500", "swapper", 0, "R", "ovs-vswitchd", 1722),
    # another thread's switches do not count
    switch("100.004000", "revalidator12", 1800, "R", "python", 4000, "__schedule"),
])


def test_off_cpu_time_is_split_by_reason_and_by_whom() -> None:
    events = offcpu.parse(TEXT)
    assert len(events) == 11
    assert events[2].stack == ("__schedule", "futex_wait", "__GI___lll_lock_wait")
    assert offcpu.busiest(events, "ovs-vswitchd") == 1722
    got = offcpu.off_cpu(events, 1722)
    assert got["span_s"] == 0.004
    r = got["reasons"]
    assert set(r) == {"preempted", "mutex", "poll", "rcu"}
    assert r["preempted"]["n"] == 1 and r["preempted"]["total_ms"] == 0.0  # 0.02 ms, 1 decimal
    assert r["preempted"]["p50_ms"] == 0.02
    assert r["preempted"]["by"] == {"urcu": {"n": 1, "total_ms": 0.0}}
    assert r["mutex"]["max_ms"] == 0.6 and r["mutex"]["by"] == {"revalidator": {"n": 1, "total_ms": 0.6}}
    assert r["poll"]["total_ms"] == 1.0 and r["poll"]["share_of_time"] == 0.25
    assert r["poll"]["by"] == {}
    assert r["rcu"]["n"] == 1 and r["rcu"]["max_ms"] == 0.4
    assert r["rcu"]["by"] == {"revalidator": {"n": 1, "total_ms": 0.4}}


def test_no_events_of_the_thread_means_no_reasons() -> None:
    events = offcpu.parse(TEXT)
    assert offcpu.off_cpu(events, 9999)["reasons"] == {}
    assert offcpu.busiest(events, "nginx") is None
    assert offcpu.parse("") == []


def test_a_trailing_star_picks_the_busiest_thread_by_name_prefix() -> None:
    events = offcpu.parse(TEXT)
    assert offcpu.busiest(events, "revalidator*") == 1800
    assert offcpu.busiest(events, "ovs-*") == 1722
    assert offcpu.busiest(events, "pmd*") is None
    assert offcpu.busiest(events, "revalidator") is None  # without the star: exact names
