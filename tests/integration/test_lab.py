"""The lab itself works, without lbrp: lb0 programmed by hand as a plain wire."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("require_root_and_ovs")]


def vsctl(*args: str) -> str:
    """ovs-vsctl output, stripped."""
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True,
                          text=True, check=True, timeout=20).stdout.strip()


@pytest.mark.parametrize("plain", ["ovs", "linux"])
def test_lab_through_hand_programmed_lb0(run_in: Callable[..., Any], free_tcp_port: int,
                                         plain: str) -> None:
    from topologies.lbrp_topo import BE_NAME, FE_NAME, LB_NAME, lab

    # a free OpenFlow port: no controller that happens to run here may touch lb0
    with lab(n_clients=2, n_backends=2, of_port=free_tcp_port, dpid="0000000000000010",
             plain=plain, servers=True, tcp_ports=(8002,), udp_ports=(8002,)) as net:
        procs = list(net._procs)
        c1, c2 = net.clients
        b1, b2 = net.backends

        # lb0 is what lbrp expects
        assert vsctl("get", "Bridge", LB_NAME, "datapath_type") == "netdev"
        assert vsctl("get", "Bridge", LB_NAME, "fail_mode") == "secure"
        assert vsctl("get", "Bridge", LB_NAME, "protocols") == "[OpenFlow13, OpenFlow15]"
        assert vsctl("get", "Bridge", LB_NAME, "other_config:datapath-id") == '"0000000000000010"'
        ctl = vsctl("get", "Bridge", LB_NAME, "controller").strip("[]")
        assert vsctl("get", "Controller", ctl, "target") == f'"tcp:127.0.0.1:{free_tcp_port}"'
        assert vsctl("get", "Interface", f"{LB_NAME}-eth1", "ofport") == "1"
        assert vsctl("get", "Interface", f"{LB_NAME}-eth2", "ofport") == "2"
        assert f"{LB_NAME}-eth1" in vsctl("list-ports", LB_NAME)
        assert vsctl("port-to-br", f"{LB_NAME}-eth2") == LB_NAME
        if plain == "ovs":
            assert vsctl("port-to-br", f"{FE_NAME}-eth3") == FE_NAME  # c1, c2, then lb0
            for br in (FE_NAME, BE_NAME):
                assert vsctl("get", "Bridge", br, "datapath_type") == "netdev"
                assert vsctl("get", "Bridge", br, "controller") == "[]"
                assert vsctl("get", "Bridge", br, "fail_mode") == "standalone"
        else:
            assert not {FE_NAME, BE_NAME} & set(vsctl("list-br").split())
        out = run_in(c1, "ethtool -k c1-eth0", timeout=5).stdout
        assert "tx-checksumming: off" in out
        assert run_in(net.router, "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"

        # secure mode, no controller, no flows: nothing crosses lb0
        assert run_in(c1, "ping -c1 -W1 10.0.1.2", timeout=5).returncode != 0

        net.lb_ofctl("add-flow", "in_port=1,actions=output:2")
        net.lb_ofctl("add-flow", "in_port=2,actions=output:1")

        ping = run_in(c1, "ping -c3 -i0.2 -W1 10.0.1.2", timeout=10)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        ping6 = run_in(c2, "ping -6 -c2 -i0.2 -W1 fd00:b::3", timeout=10)
        assert ping6.returncode == 0, ping6.stdout + ping6.stderr

        tcp = net.run_client(c1, "10.0.1.2", "tcp", 8002, sessions=50, concurrency=10)
        assert tcp["ok"] == 50 and tcp["failed"] == 0, tcp
        assert tcp["by_backend"] == {"b1": 50}
        udp = net.run_client(c1, "10.0.1.3", "udp", 8002, sessions=50, concurrency=10)
        assert udp["ok"] == 50 and udp["by_backend"] == {"b2": 50}, udp
        tcp2 = net.run_client(c2, "10.0.1.3", "tcp", 8002, sessions=5)
        assert tcp2["by_backend"] == {"b2": 5}, tcp2
        held = net.run_client(c2, "10.0.1.2", "tcp", 8002, sessions=3,
                              extra=["--hold", "0.5", "--ping-interval", "0.1"])
        assert held["ok"] == 3 and held["changed_backend"] == 0, held

        # a closed port is refused fast, not timed out
        refused = net.run_client(c1, "10.0.1.2", "tcp", 8999, sessions=2, timeout=1)
        assert refused["errors"] == {"refused": 2}, refused

        # the backend side sees the real client address (no NAT in the lab)
        assert b1.IP() == "10.0.1.2" and b2.IP() == "10.0.1.3"

    # everything is gone afterwards
    assert all(p.poll() is not None for p in procs)
    bridges = vsctl("list-br").split()
    assert not {LB_NAME, FE_NAME, BE_NAME} & set(bridges)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert f"{LB_NAME}-eth" not in links and f"{FE_NAME}" not in links
    assert f"{BE_NAME}" not in links


def test_lb0_ports_opened_as_afxdp_are_polled_by_a_pmd_thread(free_tcp_port: int) -> None:
    from topologies.lbrp_topo import LB_NAME, lab

    if "afxdp" not in vsctl("get", "Open_vSwitch", ".", "iface_types"):
        pytest.skip("this ovs-vswitchd has no AF_XDP")
    with lab(n_clients=1, n_backends=1, of_port=free_tcp_port, plain="linux", servers=True,
             tcp_ports=(8002,), udp_ports=(), lb_ports="afxdp") as net:
        for i in (1, 2):
            assert vsctl("get", "Interface", f"{LB_NAME}-eth{i}", "type") == "afxdp"
            assert vsctl("get", "Interface", f"{LB_NAME}-eth{i}", "ofport") == str(i)
        rxq = subprocess.run(["ovs-appctl", "dpif-netdev/pmd-rxq-show"], capture_output=True,
                             text=True, check=True, timeout=20).stdout
        assert "pmd thread" in rxq and f"port: {LB_NAME}-eth1" in rxq, rxq
        assert f"port: {LB_NAME}-eth2" in rxq, rxq
        net.lb_ofctl("add-flow", "in_port=1,actions=output:2")
        net.lb_ofctl("add-flow", "in_port=2,actions=output:1")
        tcp = net.run_client(net.clients[0], "10.0.1.2", "tcp", 8002, sessions=50,
                             concurrency=10)
        assert tcp["ok"] == 50 and tcp["failed"] == 0, tcp
    # no PMD thread keeps busy-polling lb0's ports once the lab is gone (with no netdev
    # bridge left, pmd-rxq-show fails: there is no userspace datapath at all)
    rxq = subprocess.run(["ovs-appctl", "dpif-netdev/pmd-rxq-show"], capture_output=True,
                         text=True, check=False, timeout=20)
    assert LB_NAME not in rxq.stdout, rxq.stdout
    assert rxq.returncode == 0 or "datapath" in rxq.stderr, rxq.stderr


def test_leftovers_removed_and_stop_on_exception() -> None:
    from topologies.lbrp_topo import FE_NAME, LB_NAME, LabError, build_net, lab

    # a leftover bridge from a "crashed" run does not break the next lab
    vsctl("--may-exist", "add-br", FE_NAME, "--", "set", "bridge", FE_NAME,
          "datapath_type=netdev")
    with pytest.raises(RuntimeError, match="boom"), lab(n_clients=1, n_backends=1) as net:
        assert net.lb.name == LB_NAME
        with pytest.raises(LabError, match="already running in this process"):
            build_net(1, 1)  # one lab at a time, and fail fast instead of waiting
        ping = net.router.cmd("ping -c1 -W1 10.0.1.2")
        assert " 0% packet loss" in ping
        raise RuntimeError("boom")
    assert not {LB_NAME, FE_NAME} & set(vsctl("list-br").split())


CRASHING_LAB = """
import sys, time
sys.path.insert(0, {repo!r})
from topologies.lbrp_topo import build_net
net = build_net(1, 2)
net.start(); net.wait_forwarding()
procs = net.start_backend_servers(tcp_ports=(8002,), udp_ports=())
print("UP", *[p.pid for p in procs], flush=True)
time.sleep(120)
"""


def test_killed_harness_leaves_no_servers_and_next_lab_starts() -> None:
    """SIGKILL the Python driving a lab: servers exit, the next lab cleans the bridges."""
    import select
    import signal
    import sys
    import time
    from pathlib import Path

    from topologies.lbrp_topo import BE_NAME, FE_NAME, LB_NAME, lab

    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_LAB.format(repo=repo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("UP"), line + (proc.stderr.read() if proc.stderr else "")
        server_pids = [int(x) for x in line.split()[1:]]
        assert len(server_pids) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    alive = server_pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in server_pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"backend servers outlived their harness: {alive}"
    assert LB_NAME in vsctl("list-br").split()  # the crash left the bridges
    with lab(n_clients=1, n_backends=1) as net:
        assert " 0% packet loss" in net.router.cmd("ping -c1 -W1 10.0.1.2")
    assert not {LB_NAME, FE_NAME, BE_NAME} & set(vsctl("list-br").split())
