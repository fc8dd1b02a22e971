"""bench/oncpu.py: what ovs-vswitchd's threads do, from perf's call graphs."""

from bench import oncpu

OVS = "/usr/sbin/ovs-vswitchd"


def sample(comm: str, *frames: str) -> str:
    """One ``perf script -F comm,ip,sym,dso`` sample; frames leaf first, as perf prints them."""
    lines = [f"{comm} "]
    for i, f in enumerate(frames):
        dso = "[kernel.kallsyms]" if f.startswith("k:") else OVS
        lines.append(f"\t{0x1000 + i:x} {f.removeprefix('k:')} ({dso})")
    return "\n".join(lines) + "\n\n"


TEXT = "".join([
    # main thread: an upcall running learn
    sample("ovs-vswitchd", "rule_actions_create+0x53", "ofproto_rule_create",
           "xlate_learn_action", "do_xlate_actions", "upcall_cb", "dp_netdev_input__",
           "dpif_netdev_run", "type_run", "main"),
    # main thread: the expiry walk, and a sendmmsg with its kernel frames
    sample("ovs-vswitchd", "run", "ofproto_run", "bridge_run", "main"),
    sample("ovs-vswitchd", "k:packet_sendmsg", "__sendmmsg", "netdev_linux_send",
           "netdev_send", "dp_netdev_pmd_flush_output_packets.part.0", "main"),
    # main thread: a malloc whose callers are lost, and a sample in the kernel only
    sample("ovs-vswitchd", "_int_malloc", "[unknown]"),
    sample("ovs-vswitchd", "k:tick_sched_timer"),
    # main thread: the kernel delivering packets (softirq) during an accept() poll
    sample("ovs-vswitchd", "k:tcp_v4_rcv", "k:net_rx_action", "k:__do_softirq", "accept",
           "pstream_accept", "connmgr_run", "ofproto_run", "main"),
    # revalidator: learn inside a re-translation, then the sweep
    sample("revalidator15", "learn_execute", "xlate_learn_action", "xlate_actions",
           "revalidate_ukey__", "revalidate_ukey.constprop.0", "revalidate.isra.0",
           "udpif_revalidator"),
    sample("revalidator15", "ukey_delete", "revalidator_sweep__", "udpif_revalidator"),
    sample("python", "_PyEval_EvalFrameDefault"),
])


def test_samples_are_split_by_thread_and_by_what_the_thread_was_doing() -> None:
    parsed = oncpu.parse(TEXT)
    assert len(parsed) == 9
    assert parsed[1] == ("ovs-vswitchd", ["main", "bridge_run", "ofproto_run", "run"])
    assert parsed[2][1][-1] == "__sendmmsg"  # kernel frames dropped
    assert parsed[6][1][1] == "revalidate"  # .isra.0 and the like dropped
    assert parsed[5] == ("ovs-vswitchd", ["main", "ofproto_run", "connmgr_run",
                                          "pstream_accept", "accept", oncpu.SOFTIRQ])
    got = oncpu.summarize("x.data", parsed)
    assert got["samples"] == 9
    assert got["machine_percent_by_thread"] == {"ovs-vswitchd": 66.7, "revalidator": 22.2,
                                                "python": 11.1}
    assert got["main_thread_percent"] == {
        "upcall: learn action (compose and install the learned flows)": 16.7,
        "ofproto-dpif run(): mostly the flow expiry walk after each revalidator dump": 16.7,
        "send to veths (sendmmsg, veth transmit)": 16.7,
        "malloc/free, caller not recorded": 16.7,
        "kernel only (no user frames)": 16.7,
        "softirq: packets through the kernel (the lab's TCP stacks), on this thread": 16.7,
    }
    assert got["revalidator_percent"] == {"learn action in re-translation": 50.0,
                                          "sweep (delete idle flows, push stats)": 50.0}


def test_a_capture_with_no_samples() -> None:
    got = oncpu.summarize("x.data", oncpu.parse(""))
    assert got["samples"] == 0 and got["machine_percent_by_thread"] == {}


def test_conntrack_checksum_and_the_innermost_functions() -> None:
    text = "".join([
        sample("ovs-vswitchd", "csum_continue", "conn_key_extract", "conntrack_execute",
               "dp_execute_cb", "dp_netdev_input__", "main"),
        sample("ovs-vswitchd", "conn_key_lookup", "conntrack_execute", "dp_netdev_input__",
               "main"),
        sample("ovs-vswitchd", "dpcls_lookup", "dp_netdev_input__", "main"),
        sample("ovs-vswitchd", "k:tcp_v4_rcv", "k:net_rx_action", "k:__do_softirq",
               "__sendmmsg", "netdev_linux_send", "netdev_send", "main"),
    ])
    got = oncpu.summarize("x.data", oncpu.parse(text))
    assert got["main_thread_percent"] == {
        "conntrack: the software checksum check of each packet": 25.0,
        "conntrack (lookup, commit, NAT)": 25.0,
        "datapath fast path (lookups, actions, recirculation)": 25.0,
        "softirq: packets through the kernel (the lab's TCP stacks), on this thread": 25.0,
    }
    # the innermost user frame, never the softirq marker
    assert got["main_thread_top_functions_percent"] == {
        "csum_continue": 25.0, "conn_key_lookup": 25.0, "dpcls_lookup": 25.0,
        "__sendmmsg": 25.0}
    assert oncpu.leaf([]) == "kernel only (no user frames)"
