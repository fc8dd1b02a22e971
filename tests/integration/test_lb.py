"""lbrp end to end: real ovs-vswitchd (netdev), real osken-manager, real traffic.

Lab (topologies/lbrp_topo.py): clients c1, c2 -- lb0 -- r1 -- backends b1..b3
(10.0.1.2..4), each serving TCP and UDP on 8002-8004 and answering its name.
The tests share one lab and one controller; each test leaves the services as
``BASE`` declares them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbrp_app import config as config_file
from lbrp_app import ctdump
from lbrp_app import pipeline as pl
from lbrp_app.model import Backend, ServiceKey
from tests.integration.conftest import controller_on_lab, pinning_modes
from topologies.controller import Controller, wait_for

pytestmark = pytest.mark.integration

VIP = "13.13.13.13"
WEB = f"/services/{VIP}/tcp/8000"
DNS = f"/services/{VIP}/udp/8000"
B1, B2, B3 = "10.0.1.2", "10.0.1.3", "10.0.1.4"
BASE: dict[str, Any] = {
    "services": [
        {"vip": VIP, "proto": "tcp", "port": 8000, "name": "web",
         "backends": [{"ip": B1, "port": 8002, "weight": 1}, {"ip": B2, "port": 8002, "weight": 2},
                      {"ip": B3, "port": 8002, "weight": 1}]},
        # same VIP and port over UDP, with its own backends (b1 and b3 only)
        {"vip": VIP, "proto": "udp", "port": 8000, "name": "dns",
         "backends": [{"ip": B1, "port": 8003, "weight": 1}, {"ip": B3, "port": 8003, "weight": 1}]},
    ],
}


@pytest.fixture(scope="module", params=pinning_modes())
def env(request: pytest.FixtureRequest, lbrp_lab: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The lab and a controller, once per session pinning mode."""
    with controller_on_lab(lbrp_lab, tmp_path_factory.mktemp("lb"), BASE,
                           request.param) as net:
        yield net


@pytest.fixture
def lb(env: Any) -> Iterator[Any]:
    """The lab with the BASE services; restored after the test."""
    yield env
    ctl: Controller = env.ctl
    if ctl.proc is None or ctl.proc.poll() is not None:  # a test killed it: start again
        ctl.start()
        ctl.wait_programmed(env.lb_dpid)
    _, services = ctl.request("GET", "/services")
    wanted = {(s["vip"], s["proto"], s["port"]) for s in BASE["services"]}
    for s in services:
        if (s["vip"], s["proto"], s["port"]) not in wanted:
            assert ctl.request("DELETE", f"/services/{s['vip']}/{s['proto']}/{s['port']}")[0] == 204
    for s in BASE["services"]:
        status, _ = ctl.request("PUT", f"/services/{s['vip']}/{s['proto']}/{s['port']}",
                                {"name": s["name"], "backends": s["backends"]})
        assert status in (200, 201)


def client(net: Any, proto: str, sessions: int, port: int = 8000, host: int = 0,
           vip: str = VIP, **kw: Any) -> dict[str, Any]:
    return net.run_client(net.clients[host], vip, proto, port, sessions=sessions, **kw)


def hold(net: Any, sessions: int, seconds: float, host: int = 0,
         vip: str = VIP, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Start ``sessions`` long-lived TCP sessions to ``vip``:8000 in the background."""
    from topologies.lbrp_topo import CLIENT

    return net.popen_tracked(
        net.clients[host],
        [sys.executable, str(CLIENT), "--vip", vip, "--proto", "tcp", "--port", "8000",
         "--sessions", str(sessions), "--concurrency", str(sessions), "--timeout", "2",
         "--hold", str(seconds), "--ping-interval", "0.2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hold_result(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    import json

    out, err = proc.communicate(timeout=timeout)
    assert out.strip(), err
    return json.loads(out.strip().splitlines()[-1])


def flows(net: Any, table: int) -> list[str]:
    return [ln for ln in net.lb_ofctl("dump-flows", f"table={table}").splitlines()
            if "cookie=" in ln]


def learn_guard(net: Any) -> list[str]:
    """The LEARN guard flow's match and actions, as ``ovs-ofctl dump-flows`` shows them."""
    return [ln.split(f"priority={pl.PRIO_GUARD},")[1] for ln in flows(net, pl.LEARN)
            if f"priority={pl.PRIO_GUARD}," in ln]


def appctl(*args: str) -> str:
    """``ovs-appctl`` ARGS' output (fails the test on an error)."""
    return subprocess.run(["ovs-appctl", "--timeout=10", *args], capture_output=True, text=True,
                          check=True).stdout


def conntrack_entries(backend: str = "", bport: int = 0) -> list[str]:
    """Conntrack entries of lbrp's zone (of one backend of the TCP service, by label)."""
    out = appctl("dpctl/dump-conntrack", f"zone={pl.CT_ZONE}").splitlines()
    if backend:  # the TCP service's connections (UDP tests also use these backends)
        label = pl.ct_label(ServiceKey(VIP, "tcp", 8000), Backend(backend, bport))
        out = [ln for ln in out
               if (entry := ctdump.labelled_entries(ln)) and entry[0][0] == label]
    return out


def sessions(net: Any) -> int:
    """Pinned sessions on the switch: learned forward flows, or conntrack entries."""
    return len(flows(net, 10)) if net.mode == "learn" else len(conntrack_entries())


def backend_sessions(net: Any, ip: str, port: int) -> int:
    """Pinned sessions of one backend of the TCP service."""
    if net.mode == "conntrack":
        return len(conntrack_entries(ip, port))
    ck = pl.session_cookie(ServiceKey(VIP, "tcp", 8000), Backend(ip, port))[0]
    return sum(f"cookie={ck:#x}," in ln for ln in flows(net, 10) + flows(net, 11))


def n_packets(line: str) -> int:
    return int(re.search(r"n_packets=(\d+)", line).group(1))


def shares(result: dict[str, Any]) -> dict[str, float]:
    total = sum(result["by_backend"].values())
    return {k: v / total for k, v in result["by_backend"].items()}


# --- balancing ----------------------------------------------------------------------------

def test_weighted_split_over_1200_tcp_sessions(lb: Any) -> None:
    """Weights 1:2:1 -> 25/50/25 %; tolerance 5 points (dp_hash uses 16 slots: 4/8/4)."""
    res = client(lb, "tcp", 1200, concurrency=20)
    assert res["failed"] == 0, res
    got = shares(res)
    for name, want in (("b1", 0.25), ("b2", 0.5), ("b3", 0.25)):
        assert abs(got.get(name, 0) - want) <= 0.05, (name, got)
    # every session was pinned (learned flows both ways, or conntrack entries)
    assert sessions(lb) >= 1


@pytest.mark.parametrize(("port", "weights"), [(8201, (1, 1, 1)), (8202, (10, 100, 1)),
                                               (8203, (3, 7, 0))])
def test_weighted_split_of_10000_sessions_within_2_points(lb: Any, port: int,
                                                         weights: tuple[int, ...]) -> None:
    """Precision: every backend's share of 10,000 new sessions within 2 percentage points
    of its weight share (OVS would give 1:1:1 37.5/31.25/31.25 % with one bucket each)."""
    ctl: Controller = lb.ctl
    backends = [{"ip": ip, "port": 8002, "weight": w} for ip, w in zip((B1, B2, B3), weights,
                                                                        strict=True)]
    path = f"/services/{VIP}/udp/{port}"
    assert ctl.request("PUT", path, {"backends": backends})[0] == 201
    try:
        # a lost datagram is resent with its 5-tuple, which keeps its backend (same hash)
        res = client(lb, "udp", 10000, port=port, concurrency=20, timeout=1,
                     extra=["--udp-resends", "2"])
        assert res["ok"] >= 9990, res
        got = shares(res)
        for name, w in zip(("b1", "b2", "b3"), weights, strict=True):
            want = w / sum(weights)
            assert abs(got.get(name, 0) - want) <= 0.02, (weights, got)
        print(f"weights {weights}: " + ", ".join(f"{k} {100 * v:.2f}%"
                                                 for k, v in sorted(got.items()))
              + f"; {res['udp_resends']} datagrams resent")
    finally:
        ctl.request("DELETE", path)


def test_udp_service_on_same_vip_port_spreads_by_5_tuple_to_its_own_backends(lb: Any) -> None:
    """One client, many source ports: dp_hash over the 5-tuple spreads UDP (not sym_l4)."""
    res = client(lb, "udp", 600, concurrency=10, timeout=1)
    assert res["ok"] >= 590, res
    got = shares(res)
    assert set(got) == {"b1", "b3"}, got  # b2 serves the TCP service only
    assert abs(got["b1"] - 0.5) <= 0.1, got


def test_udp_replies_come_from_the_vip(lb: Any, run_in: Any) -> None:
    """A connected UDP socket only accepts replies from VIP:8000: reverse rewrite works."""
    script = ("import socket;s=socket.socket(2,2);s.settimeout(2);"
              f"s.connect(('{VIP}',8000));s.send(b'x');print(s.recv(100).decode().strip())")
    out = run_in(lb.clients[1], [sys.executable, "-c", script], timeout=10)
    assert out.stdout.strip() in ("b1", "b3"), out


# --- ICMP and pass-through -----------------------------------------------------------------

def test_ping_to_vip_is_answered_by_the_controller(lb: Any, run_in: Any) -> None:
    before = [n_packets(ln) for ln in flows(lb, 0) if "icmp_type=8" in ln]
    out = run_in(lb.clients[0], f"ping -c 3 -i 0.2 -W 2 -s 100 {VIP}", timeout=15)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 received" in out.stdout and f"from {VIP}" in out.stdout
    wait_for(lambda: sum(n_packets(ln) for ln in flows(lb, 0) if "icmp_type=8" in ln)
             - sum(before) >= 3, 10, "the echo flow's counter (stats lag the datapath)")


def test_non_vip_traffic_arp_and_ipv6_pass_unchanged(lb: Any, run_in: Any) -> None:
    """Straight to a backend, ARP and IPv6 cross lb0 unchanged.

    The client ports are fixed and used by no other test: a random port that an earlier
    test's VIP session to the same backend ip:port still holds is the same 4-tuple to
    that backend, and its reply would rightly be rewritten to the VIP (3 of 20 UDP
    datagrams once, in conntrack mode).
    """
    ports = ["--src-port-base", "26000"]
    res = client(lb, "tcp", 20, vip=B2, port=8004, extra=ports)  # straight to a backend
    assert res["by_backend"] == {"b2": 20}, res
    res = client(lb, "udp", 20, vip=B3, port=8002, extra=ports)
    assert set(res["by_backend"]) == {"b3"} and res["ok"] >= 18, res  # UDP: allow a loss
    run_in(lb.clients[0], "ip neigh flush all")  # force ARP through lb0
    assert run_in(lb.clients[0], f"ping -c 2 -W 2 {B1}", timeout=10).returncode == 0
    from topologies.lbrp_topo import backend_ip6

    out = run_in(lb.clients[0], f"ping -6 -c 2 -W 2 {backend_ip6(1)}", timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tcp_to_vip_on_a_port_without_service_is_not_rewritten(lb: Any) -> None:
    before = sessions(lb)
    res = client(lb, "tcp", 3, port=9, timeout=1)
    assert res["ok"] == 0
    assert sessions(lb) <= before  # nothing pinned, nothing balanced


def test_backends_see_the_clients_own_address_and_port(lb: Any, run_in: Any) -> None:
    """Only the destination is rewritten on the way in: no mode translates the client's
    source (OVS's conntrack NAT rewrote reused client ports; lbrp uses none)."""
    base, n = 31000, 20  # below the ephemeral range: no other session uses these ports
    client_ip = lb.clients[0].IP()
    proc = hold(lb, n, 4, extra=("--src-port-base", str(base)))

    def peers() -> set[tuple[str, int]]:
        """Peers of the backends' established connections (dual-stack sockets list
        an IPv4 peer as [::ffff:a.b.c.d]:port). Earlier tests' sessions that lbrp cut
        stay established at the backends, so only this test's ports are kept."""
        out = set()
        for b in lb.backends:
            for ln in run_in(b, "ss -Htn state established '( sport = :8002 )'").stdout.splitlines():
                host, _, port = ln.split()[-1].rpartition(":")
                if base <= int(port) < base + n:
                    out.add((host.strip("[]").removeprefix("::ffff:"), int(port)))
        return out

    want = {(client_ip, p) for p in range(base, base + n)}
    wait_for(lambda: peers() == want, 10,
             lambda: f"the backends to see {client_ip}:{base}-{base + n - 1}, "
                     f"saw {sorted(peers())}")
    held = hold_result(proc)
    assert held["ok"] == n and held["changed_backend"] == 0, held


# --- run-time changes and affinity --------------------------------------------------------

def test_long_lived_sessions_keep_backend_while_backends_are_added(lb: Any) -> None:
    ctl: Controller = lb.ctl
    proc = hold(lb, 30, 6)
    time.sleep(2)
    assert ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 500})[0] == 201
    assert ctl.request("PUT", f"{WEB}/backends/{B1}/8002", {"weight": 7})[0] == 200
    fresh = client(lb, "tcp", 100, host=1)
    held = hold_result(proc)
    assert held["ok"] == 30 and held["changed_backend"] == 0, held
    # the new backend (b3:8004, weight 500 of 510) takes almost every new session
    assert fresh["by_backend"].get("b3", 0) >= 85, fresh


def test_a_client_port_reused_after_its_session_closed_connects_at_once(lb: Any) -> None:
    """A new connection from the source port of a session that closed 7 s earlier.

    OVS may still cache the old SYN's datapath flow (max-idle 10 s), which forwards the
    new SYN without running ``learn``. With a FIN timeout shorter than that, the old
    learned flows were gone and the SYN-ACK left un-rewritten: a SYN retransmission.
    """
    port = ["--src-port-base", "47123"]
    first = client(lb, "tcp", 1, host=1, extra=port)
    time.sleep(7)
    again = client(lb, "tcp", 1, host=1, extra=port)
    assert first["ok"] == 1 and again["ok"] == 1, (first, again)
    assert again["connects_over_1s"] == 0 and again["connect_ms_max"] < 500, again
    assert again["by_backend"] == first["by_backend"]  # the same 5-tuple hashes alike


def test_a_client_port_reused_after_a_reweight_moved_it_reaches_the_new_backend_at_once(
        lb: Any) -> None:
    """A new connection from the source port of a session that closed just before the
    weights moved every new session from b1 to b2.

    In learn mode OVS used to revalidate the old SYN's cached datapath flow (after the
    group's recirculation, exact on the 5-tuple) to b2's bucket and keep it, so the new
    SYN reached b2 without running ``learn``: b2's SYN-ACK left un-rewritten, the client
    reset it and retransmitted into the same flow. The LEARN guard, swapped with the
    group, makes OVS delete that flow instead.
    """
    ctl: Controller = lb.ctl

    def only(ip: str) -> dict[str, Any]:
        return {"name": "web", "backends": [{"ip": b, "port": 8002, "weight": int(b == ip)}
                                            for b in (B1, B2, B3)]}

    port = ["--src-port-base", "47311"]
    assert ctl.request("PUT", WEB, only(B1))[0] == 200
    first = client(lb, "tcp", 1, host=1, extra=port)
    assert first["by_backend"] == {"b1": 1}, first
    before = learn_guard(lb)
    assert ctl.request("PUT", WEB, only(B2))[0] == 200
    if lb.mode == "learn":  # the guard swapped fields with the group change
        assert {*before, *learn_guard(lb)} == {"pkt_mark=0x1 actions=drop",
                                               "ct_state=+trk actions=drop"}, before
    else:
        assert before == learn_guard(lb) == []
    time.sleep(1)  # OVS's revalidators go over the cached flows after the change
    again = client(lb, "tcp", 1, host=1, extra=port)
    assert again["ok"] == 1 and again["connect_ms_max"] < 500, again
    assert again["by_backend"] == {"b2": 1}, again


def test_a_sessions_first_datapath_flow_goes_once_the_session_is_learned(lb: Any) -> None:
    """50 sessions, then 50 more from the same client ports at once: the same backends.

    Learn mode: the datapath flow that forwarded a session's SYN, after the group's
    recirculation and exact on its 5-tuple, used to stay cached for OVS's max-idle
    (10 s), translated again on every revalidation pass (both learned flows composed
    anew each time) though no later packet used it. The LEARN table's lookup of
    SESSION_FWD makes OVS delete it at the first pass after the ``learn``. The second
    50 SYNs then find their ports' sessions (closed, within their FIN timeout) in that
    lookup and learn them again.
    """
    base, n = 28000, 50  # below the ephemeral range (32768 up): no other test uses these
    ports = ["--src-port-base", str(base), "--failures", "10"]

    def syn_flows() -> list[str]:
        return [ln for ln in appctl("dpctl/dump-flows").splitlines()
                for m in [re.search(r"tcp\(src=(\d+),dst=8000\)", ln)]
                if m and base <= int(m.group(1)) < base + n and "recirc_id(0)" not in ln]

    res = client(lb, "tcp", n, concurrency=10, extra=ports)
    assert res["ok"] == n, (res["errors"], res.get("failures"))
    if lb.mode == "learn":
        wait_for(lambda: not syn_flows(), 5, "the sessions' SYN datapath flows to be deleted")
    again = client(lb, "tcp", n, concurrency=10, extra=ports)
    assert again["ok"] == n and again["connects_over_1s"] == 0, (again["errors"],
                                                                  again.get("failures"))
    assert again["by_backend"] == res["by_backend"]  # the same 5-tuples hash alike


def test_a_client_port_reused_after_a_purge_gets_its_first_reply_rewritten(lb: Any) -> None:
    """Service A's sessions are purged (A deleted); service B, on the same backends, is
    then reached from the same client ports: the same 4-tuples at the backends.

    In learn mode OVS used to re-point the purged sessions' cached reply flows to
    pass-through and keep them (max-idle 10 s), so B's first replies on those 4-tuples
    left un-rewritten until a revalidation pass reached them (180 of 2,000 first replies
    lost in a probe of this shape).
    """
    ctl: Controller = lb.ctl
    backends = [{"ip": ip, "port": 8002, "weight": 1} for ip in (B1, B2, B3)]
    base, n = 30000, 1000  # below the ephemeral range: no other session uses these ports
    ports = ["--src-port-base", str(base)]

    def cached_replies() -> list[str]:
        out = appctl("dpctl/dump-flows").splitlines()
        return [ln for ln in out for m in [re.search(r"udp\(src=8002,dst=(\d+)\)", ln)]
                if m and base <= int(m.group(1)) < base + n]

    for svc in (8211, 8212):
        path = f"/services/{VIP}/udp/{svc}"
        assert ctl.request("PUT", path, {"backends": backends})[0] == 201
        try:
            res = client(lb, "udp", n, port=svc, concurrency=20, timeout=1, extra=ports)
            assert res["ok"] >= n - 2, (svc, res)  # UDP: allow a lost datagram or two
        finally:
            assert ctl.request("DELETE", path)[0] == 204
        # well within OVS's 10 s max-idle, after which the flows would go anyway
        wait_for(lambda: not cached_replies(), 5,
                 "the purged sessions' cached reply flows to be deleted")


def test_weight_zero_drains(lb: Any) -> None:
    ctl: Controller = lb.ctl
    proc = hold(lb, 30, 5)
    time.sleep(1.5)
    assert ctl.request("PUT", f"{WEB}/backends/{B2}/8002", {"weight": 0})[0] == 200
    fresh = client(lb, "tcp", 200, host=1)
    held = hold_result(proc)
    assert held["ok"] == 30 and held["changed_backend"] == 0, held
    assert held["by_backend"].get("b2", 0) > 0  # some held sessions were on b2 and survived
    assert "b2" not in fresh["by_backend"] and fresh["ok"] == 200, fresh


def test_all_weights_zero_rejects_new_sessions(lb: Any) -> None:
    """With every weight 0 a new 5-tuple is refused.

    The client ports are fixed below the ephemeral range: a port an earlier test used
    would still be pinned to b1, and a weight-0 backend keeps its sessions (drain).
    """
    ctl: Controller = lb.ctl
    ctl.request("PUT", DNS, {"backends": [{"ip": B1, "port": 8003, "weight": 0}]})
    res = client(lb, "udp", 5, timeout=1, extra=["--src-port-base", "24000"])
    assert res["ok"] == 0 and res["errors"].get("refused") == 5, res


def test_removing_a_backend_purges_its_sessions_only(lb: Any) -> None:
    ctl: Controller = lb.ctl
    proc = hold(lb, 40, 6)
    time.sleep(2)
    assert backend_sessions(lb, B2, 8002) > 0
    assert ctl.request("DELETE", f"{WEB}/backends/{B2}/8002")[0] == 204
    assert backend_sessions(lb, B2, 8002) == 0
    fresh = client(lb, "tcp", 200, host=1)
    held = hold_result(proc)
    on_b2 = held["by_backend"].get("b2", 0)
    assert "b2" not in fresh["by_backend"] and fresh["ok"] == 200, fresh
    # sessions pinned to b2 are cut (never re-balanced mid-stream), each by a RST at its
    # next packet rather than a timeout; the others live on
    assert held["changed_backend"] == 0, held
    assert held["ok"] == 40 - held["failed"] and held["failed"] >= 1, held
    assert held["errors"] == {"reset": held["failed"]}, held
    assert held["ok"] >= sum(v for k, v in held["by_backend"].items() if k != "b2") - on_b2
    time.sleep(1)  # a revalidator must not bring the purged sessions back
    assert backend_sessions(lb, B2, 8002) == 0


def test_removing_a_shared_backend_keeps_the_other_services_sessions(lb: Any) -> None:
    """b2:8002 serves WEB and a second TCP service; leaving WEB ends WEB's sessions only."""
    ctl: Controller = lb.ctl
    other = "13.13.13.15"
    assert ctl.request("PUT", f"/services/{other}/tcp/8000",
                       {"backends": [{"ip": B2, "port": 8002, "weight": 1}]})[0] == 201
    web, kept = hold(lb, 40, 6), hold(lb, 10, 6, host=1, vip=other)
    time.sleep(2)
    assert ctl.request("DELETE", f"{WEB}/backends/{B2}/8002")[0] == 204
    web_held, kept_held = hold_result(web), hold_result(kept)
    assert kept_held["ok"] == 10 and kept_held["by_backend"] == {"b2": 10}, kept_held
    # WEB's sessions on b2 are cut, the others live on
    assert web_held["failed"] >= 1 and web_held["changed_backend"] == 0, web_held
    assert "b2" not in web_held["by_backend"], web_held


ASK_SCRIPT = """
import json, socket, sys
socks = {}
out = []
for sport, ip, port in json.loads(sys.argv[1]):
    if sport not in socks:
        socks[sport] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks[sport].bind(("", sport))
        socks[sport].settimeout(1)
    for _ in range(3):  # a lost datagram is resent on the same 5-tuple
        socks[sport].sendto(b"x", (ip, port))
        try:
            data, src = socks[sport].recvfrom(100)
            break
        except socket.timeout:
            continue
    else:
        raise SystemExit(f"no reply from {ip}:{port} to port {sport}")
    out.append([src[0], src[1], data.decode().strip()])
print(json.dumps(out))
"""


def udp_replies(net: Any, run_in: Any, asks: list[tuple[int, str, int]]) -> list[tuple[str, int, str]]:
    """Send one datagram per (client port, ip, port), in order, from the first client; each
    reply's source ip, port and the answering backend's name."""
    import json

    out = run_in(net.clients[0], [sys.executable, "-c", ASK_SCRIPT, json.dumps(asks)], timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return [tuple(r) for r in json.loads(out.stdout)]


def test_one_client_port_on_two_services_sharing_a_backend_gets_the_documented_replies(
        lb: Any, run_in: Any) -> None:
    """The one collision a shared backend allows (README, Limits): the same client ip:port
    in a session with two services that share a backend ip:port. The backend sees one
    4-tuple for both, so its replies can carry only one service's VIP:port.

    Learn: the later session's learned reverse flow replaces the earlier one's (same
    match), so both sessions' replies come from the later service, once OVS has
    revalidated the datapath's cached reply flow; until then they still come from the
    earlier one. Conntrack: they come from the first service, in service order, that has
    a connection from that client port. Other client ports are not affected.
    """
    ctl: Controller = lb.ctl
    svc_a, svc_b = ("13.13.13.21", 7000), ("13.13.13.22", 7000)  # A comes first in order
    for vip, port in (svc_a, svc_b):
        assert ctl.request("PUT", f"/services/{vip}/udp/{port}",
                           {"backends": [{"ip": B2, "port": 8004, "weight": 1}]})[0] == 201
    both, only_a, only_b = 32000, 32001, 32002  # below the ephemeral range, used by no other test

    def sources(*asks: tuple[int, str, int]) -> list[tuple[str, int]]:
        replies = udp_replies(lb, run_in, list(asks))
        assert all(name == "b2" for *_, name in replies), replies
        return [(ip, port) for ip, port, _ in replies]

    first, second, alone_a, alone_b = sources((both, *svc_a), (both, *svc_b),
                                              (only_a, *svc_a), (only_b, *svc_b))
    assert (first, alone_a, alone_b) == (svc_a, svc_a, svc_b)
    if lb.mode == "learn":
        assert second in (svc_a, svc_b)  # B's own first reply: A's cached flow, or B's
        wait_for(lambda: sources((both, *svc_a)) == [svc_b], 10,
                 "A's session's replies to come from B (OVS revalidating the cached flow)")
    else:
        assert second == svc_a
        assert sources((both, *svc_b), (both, *svc_a)) == [svc_a, svc_a]


def test_a_client_port_in_a_vip_session_gets_its_backends_direct_replies_from_the_vip(
        lb: Any, run_in: Any) -> None:
    """README, Limits: a client that talks straight to a backend from a port that has a
    session through the VIP to that backend ip:port is the same 4-tuple for the backend,
    so the direct replies are rewritten to the VIP. From another port they pass unchanged."""
    ctl: Controller = lb.ctl
    svc = ("13.13.13.21", 7000)
    assert ctl.request("PUT", f"/services/{svc[0]}/udp/{svc[1]}",
                       {"backends": [{"ip": B2, "port": 8004, "weight": 1}]})[0] == 201
    in_session, other = 32003, 32004
    replies = udp_replies(lb, run_in, [(in_session, *svc), (in_session, B2, 8004),
                                       (other, B2, 8004)])
    assert [(ip, port) for ip, port, _ in replies] == [svc, svc, (B2, 8004)], replies


def fixed_ports(net: Any) -> int:
    """The first of 3,300 client ports below the ephemeral range (an earlier test's TCP
    connection from the same port could still be in TIME_WAIT), one block per mode."""
    return 16_000 if net.mode == "learn" else 20_000


AFTER_COMMIT = re.compile(r"ct_label\(0x[0-9a-f]+\).*in_port\(lb0-eth1\)")
"""A client packet's datapath flow that matches one exact ct_label: the pass after the
commit (``ovs-appctl dpctl/dump-flows -m`` prints every other label with a mask)."""


def delete_datapath_flows(key: re.Pattern[str]) -> int:
    """Delete the cached datapath flows whose match ``key`` finds; how many."""
    deleted = 0
    for line in appctl("dpctl/dump-flows", "-m").splitlines():
        match = line.split(", packets:")[0]
        if line.startswith("ufid:") and key.search(match):
            appctl("dpctl/del-flow", match)
            deleted += 1
    return deleted


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_new_session_that_picks_a_backend_being_removed_goes_to_a_live_one(
        lb: Any, proto: str) -> None:
    """The window between a REST change and OVS's revalidation of its cached flows, held.

    With the revalidators paused, the datapath keeps the flows that picked among the old
    buckets. Conntrack: a new session's first packet picks the removed backend there and
    is committed with its label; the pass after the commit, which the race leaves
    uncached (the test deletes its cached flows), finds no flow for that label. It must
    be balanced again, not dropped (a lost SYN costs a connect 1 s; in soaks about one
    new session per change met this). Learn: every new 5-tuple is translated afresh, so
    none can pick it.
    """
    ctl: Controller = lb.ctl
    base = fixed_ports(lb)
    path, gone, port, live = ((DNS, B1, 8003, {"b3"}) if proto == "udp"
                              else (WEB, B2, 8002, {"b1", "b3"}))

    def counted(ck: int) -> int:  # packets of a flow of CT_FWD
        return sum(n_packets(ln) for ln in flows(lb, pl.CT_FWD) if f"cookie={ck:#x}," in ln)

    before = [counted(ck) for ck in (pl.CT_REPICK_COOKIE, pl.CT_DROP_GONE_COOKIE)]
    appctl("revalidator/pause")
    try:
        warm = client(lb, proto, 1500, extra=["--src-port-base", str(base)])
        assert warm["ok"] == 1500 and set(warm["by_backend"]) == live | {
            "b1" if proto == "udp" else "b2"}, warm
        assert ctl.request("DELETE", f"{path}/backends/{gone}/{port}")[0] == 204
        uncached = delete_datapath_flows(AFTER_COMMIT)
        res = client(lb, proto, 600, timeout=1, extra=["--src-port-base", str(base + 2000)])
    finally:
        appctl("revalidator/resume")
    print(f"\n{lb.mode} {proto}: {uncached} datapath flows after a commit deleted; "
          f"new sessions {res}")
    assert res["ok"] == 600 and set(res["by_backend"]) <= live, res
    if lb.mode == "conntrack":
        repicked, dropped = (counted(ck) - n for ck, n in zip(
            (pl.CT_REPICK_COOKIE, pl.CT_DROP_GONE_COOKIE), before, strict=True))
        print(f"re-picked: {repicked}, dropped: {dropped}")
        assert repicked > 0 and dropped == 0
        total = repicked + before[0]
        wait_for(lambda: ctl.request("GET", "/stats")[1]["controller"][
            "conntrack_backend_gone_repicks"] >= total, 30, f"{total} re-picked in /stats")


def test_a_udp_flow_left_on_a_removed_backend_moves_to_a_live_one(lb: Any) -> None:
    """A UDP flow committed to a backend after its removal purged the backend's sessions.

    With the revalidators paused, new flows keep going to the removed backend b1 through
    the datapath's cached flows, and their connections, committed after the purge, keep
    b1's label. Once the cache is revalidated, the next datagram of such a flow must go
    to a live backend (as after a purge), not be dropped until the flow falls silent for
    udp_idle_timeout. Learn: the purge and the fresh translation of every new 5-tuple
    leave nothing on b1.
    """
    ctl: Controller = lb.ctl
    base = ["--src-port-base", str(fixed_ports(lb) + 3000)]
    appctl("revalidator/pause")
    try:
        warm = client(lb, "udp", 1500, extra=["--src-port-base", str(fixed_ports(lb))])
        assert warm["ok"] == 1500 and set(warm["by_backend"]) == {"b1", "b3"}, warm
        assert ctl.request("DELETE", f"{DNS}/backends/{B1}/8003")[0] == 204
        stale = client(lb, "udp", 300, timeout=1, extra=base)
    finally:
        appctl("revalidator/resume")
    appctl("revalidator/wait")
    again = client(lb, "udp", 300, timeout=1, extra=base)  # the same 300 flows
    print(f"\n{lb.mode}: while the cache was stale {stale['by_backend']}; "
          f"the same flows after {again}")
    if lb.mode == "conntrack":  # the cache did send new flows to b1
        assert stale["by_backend"].get("b1", 0) > 0, stale
    assert again["ok"] == 300 and set(again["by_backend"]) == {"b3"}, again


def test_service_without_backends_rejects_tcp_with_rst_and_udp_with_icmp(lb: Any) -> None:
    ctl: Controller = lb.ctl
    assert ctl.request("PUT", f"/services/{VIP}/tcp/7000", {})[0] == 201
    assert ctl.request("PUT", f"/services/{VIP}/udp/7000", {})[0] == 201
    t0 = time.monotonic()
    tcp = client(lb, "tcp", 5, port=7000, timeout=3)
    udp = client(lb, "udp", 5, port=7000, timeout=3)
    assert tcp["errors"] == {"refused": 5}, tcp
    assert udp["errors"] == {"refused": 5}, udp
    assert time.monotonic() - t0 < 10  # fail fast, no timeouts


def test_non_syn_without_session_is_answered_with_a_rst_never_balanced(lb: Any,
                                                                      run_in: Any) -> None:
    """Three ACKs of no session: counted, each answered by a RST from the VIP:port, none
    forwarded or learned. (The RST's numbers are checked in tests/unit/test_packets.py;
    hping3 prints its own probe number as seq, and DUP! for replies to one source port.)"""
    ctl: Controller = lb.ctl
    table = 20 if lb.mode == "learn" else 40

    def not_syn_flow() -> str:
        (line,) = [ln for ln in flows(lb, table) if "priority=100" in ln and "tp_dst=8000" in ln]
        return line

    def resets() -> int:
        _, stats = ctl.request("GET", "/stats")
        (svc,) = [s for s in stats["services"] if s["proto"] == "tcp" and s["port"] == 8000]
        return svc["not_syn_resets"]

    before, resets_before, learned = n_packets(not_syn_flow()), resets(), sessions(lb)
    out = run_in(lb.clients[0], f"hping3 -c 3 -i u200000 -A -s 41000 -k -p 8000 {VIP}",
                 timeout=15)
    replies = [ln for ln in out.stdout.splitlines() if "len=" in ln]
    assert len(replies) == 3, out.stdout + out.stderr
    assert all(f"ip={VIP} " in ln and "sport=8000 " in ln and "flags=R " in ln
               for ln in replies), replies
    wait_for(lambda: n_packets(not_syn_flow()) - before >= 3, 10,
             "3 packets counted by the not-SYN flow")
    assert resets() - resets_before == 3
    assert sessions(lb) <= learned


def test_a_new_session_on_a_port_just_answered_with_a_rst_is_not_reset(lb: Any,
                                                                     run_in: Any) -> None:
    """A stray ACK of no session, answered with a RST, leaves a datapath flow that sends
    that 5-tuple's non-SYNs to the controller; OVS keeps it for up to its max-idle (10 s).
    A new session from the same client port must not be reset: with learn, its first
    packets meet that flow until OVS revalidates it, so the app sends a RST only once the
    switch confirms that no session holds the 5-tuple. The test holds that window open
    with the revalidators paused (without the check, every session here was reset)."""
    base, n = 32100, 5  # below the ephemeral range, used by no other test
    with ThreadPoolExecutor(1) as pool:
        appctl("revalidator/pause")
        try:
            out = run_in(lb.clients[0], f"hping3 -c {n} -i u20000 -A -s {base} -p 8000 {VIP}",
                         timeout=15)  # one ACK from each of ports base .. base + n - 1
            assert sum("flags=R " in ln for ln in out.stdout.splitlines()) == n, out.stdout
            later = pool.submit(client, lb, "tcp", n, concurrency=n, timeout=6,
                                extra=["--src-port-base", str(base)])
            time.sleep(1.5)  # the sessions' first non-SYNs meet the stale flows meanwhile
        finally:
            # exactly once: OVS 3.1's main thread hangs for good on a resume without a pause
            appctl("revalidator/resume")
        res = later.result()
    assert res["ok"] == n and res["errors"] == {}, res


def test_fragments_to_a_vip_are_dropped_and_counted(lb: Any, run_in: Any) -> None:
    frag = [ln for ln in flows(lb, 0) if "nw_frag=yes" in ln]
    before = n_packets(frag[0])
    out = run_in(lb.clients[0], f"ping -c 2 -W 1 -s 3000 {VIP}", timeout=10)
    assert "0 received" in out.stdout
    # 2 datagrams x 3 fragments each
    wait_for(lambda: n_packets(next(ln for ln in flows(lb, 0) if "nw_frag=yes" in ln))
             - before >= 6, 10, "6 fragments counted by the fragment drop flow")


# --- REST input, persistence, restart -----------------------------------------------------

def test_bad_rest_input_is_refused_and_changes_nothing(lb: Any) -> None:
    ctl: Controller = lb.ctl
    flows_before = {t: sorted(re.sub(r"duration=[^,]+, |n_packets=\d+, |n_bytes=\d+, |"
                                     r"idle_age=\d+, ", "", ln) for ln in flows(lb, t))
                    for t in (0, 20, 30, 40, 41, 42)}
    file_before = ctl.config_path.read_text()
    bad = [
        ("PUT", f"/services/{VIP}/tcp/8000", {"backends": [{"ip": "10.0.1", "port": 1}]}),
        ("PUT", f"/services/{VIP}/tcp/8000", {"backends": [{"ip": B1, "port": 0}]}),
        ("PUT", f"/services/{VIP}/tcp/8000", {"backends": [{"ip": B1, "port": 1, "weight": -1}]}),
        ("PUT", f"/services/{VIP}/sctp/8000", {}),
        ("PUT", f"/services/{VIP}/tcp/8000", {"unknown": 1}),
        ("PUT", f"/services/{VIP}/tcp/8000/backends/{B1}/8002", {"weight": 65536}),
        ("PUT", f"/services/{VIP}/tcp/8000/backends/{B1}/8002", {"weight": "heavy"}),
    ]
    for method, path, body in bad:
        status, out = ctl.request(method, path, body)
        assert status == 400 and out["error"], (path, body, status, out)
    status, out = ctl.request("PUT", f"/services/{VIP}/tcp/8000", raw=b"{oops")
    assert status == 400
    assert ctl.request("PUT", "/services/1.2.3.4/tcp/1/backends/10.0.0.1/1", {})[0] == 404
    flows_after = {t: sorted(re.sub(r"duration=[^,]+, |n_packets=\d+, |n_bytes=\d+, |"
                                    r"idle_age=\d+, ", "", ln) for ln in flows(lb, t))
                   for t in (0, 20, 30, 40, 41, 42)}
    assert flows_after == flows_before
    assert ctl.config_path.read_text() == file_before


def test_concurrent_rest_changes_are_all_kept(lb: Any) -> None:
    """Changes sent at once, each to the same service, all land: none undoes another."""
    ctl: Controller = lb.ctl
    ports = range(9200, 9212)
    with ThreadPoolExecutor(len(ports)) as pool:
        results = list(pool.map(
            lambda p: ctl.request("PUT", f"{WEB}/backends/{B3}/{p}", {"weight": 1}), ports))
    assert [status for status, _ in results] == [201] * len(ports), results
    kept = {b["port"] for b in ctl.request("GET", WEB)[1]["backends"] if b["ip"] == B3}
    assert kept >= set(ports), sorted(set(ports) - kept)
    saved = yaml.safe_load(ctl.config_path.read_text())
    web = next(s for s in saved["services"] if s["port"] == 8000 and s["proto"] == "tcp")
    assert {b["port"] for b in web["backends"] if b["ip"] == B3} >= set(ports)
    rewrites = " ".join(flows(lb, pl.CT_FWD if lb.mode == "conntrack" else pl.LEARN))
    on_switch = {p for p in ports if re.search(rf"\b{p}->tcp_dst", rewrites)}
    assert on_switch == set(ports), sorted(set(ports) - on_switch)
    with ThreadPoolExecutor(len(ports)) as pool:
        results = list(pool.map(
            lambda p: ctl.request("DELETE", f"{WEB}/backends/{B3}/{p}"), ports))
    assert [status for status, _ in results] == [204] * len(ports), results
    left = {b["port"] for b in ctl.request("GET", WEB)[1]["backends"] if b["ip"] == B3}
    assert not left & set(ports), sorted(left & set(ports))
    rewrites = " ".join(flows(lb, pl.CT_FWD if lb.mode == "conntrack" else pl.LEARN))
    assert not [p for p in ports if re.search(rf"\b{p}->tcp_dst", rewrites)]


def test_a_change_the_switch_refuses_is_503_and_the_next_one_lands(lb: Any) -> None:
    """OVS refuses the bundle (its backend table is full): nothing changes, on the switch
    or in the file, and the changes that follow land as usual."""
    ctl: Controller = lb.ctl
    table = pl.CT_FWD if lb.mode == "conntrack" else pl.LEARN
    groups_before, flows_before = lb.lb_ofctl("dump-groups"), len(flows(lb, table))
    file_before = ctl.config_path.read_text()
    subprocess.run(["ovs-vsctl", "--", "--id=@ft", "create", "Flow_Table",
                    "name=lbrp-test-full", f"flow_limit={flows_before}",
                    "overflow_policy=refuse", "--", "set", "Bridge", "lb0",
                    f"flow_tables:{table}=@ft"], check=True)
    try:
        status, out = ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 9})
        assert status == 503 and "refused" in out["error"], out
    finally:
        subprocess.run(["ovs-vsctl", "remove", "Bridge", "lb0", "flow_tables", str(table)],
                       check=True)
    assert lb.lb_ofctl("dump-groups") == groups_before
    assert len(flows(lb, table)) == flows_before
    assert ctl.config_path.read_text() == file_before
    # the config stayed as it was, so the next changes are diffed from what the switch has
    assert ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 9})[0] == 201
    assert len(flows(lb, table)) == flows_before + 1
    assert ctl.request("DELETE", f"{WEB}/backends/{B3}/8004")[0] == 204
    assert len(flows(lb, table)) == flows_before
    assert lb.lb_ofctl("dump-groups") == groups_before


def test_failed_save_is_503_and_rolled_back_on_the_switch(lb: Any,
                                                          tmp_path: Path) -> None:
    """The file cannot be written: the change is undone on the switch and not kept."""
    ctl: Controller = lb.ctl
    groups_before = lb.lb_ofctl("dump-groups")
    services_before = ctl.request("GET", "/services")[1]
    folder = ctl.config_path.parent
    hidden = folder.with_name(folder.name + ".moved")
    folder.rename(hidden)
    folder.write_text("a file where the config folder was")
    try:
        status, out = ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 9})
        assert status == 503 and "save" in out["error"], out
    finally:
        folder.unlink()
        hidden.rename(folder)
    assert lb.lb_ofctl("dump-groups") == groups_before
    assert ctl.request("GET", "/services")[1] == services_before


def _max_idle() -> str:
    """ovs-vswitchd's other_config:max-idle, "" when unset."""
    return subprocess.run(["ovs-vsctl", "--if-exists", "get", "Open_vSwitch", ".",
                           "other_config:max-idle"], capture_output=True, text=True,
                          check=True).stdout.strip().strip('"')


def _set_max_idle(value: str) -> None:
    args = (["set", "Open_vSwitch", ".", f"other_config:max-idle={value}"] if value
            else ["remove", "Open_vSwitch", ".", "other_config", "max-idle"])
    subprocess.run(["ovs-vsctl", *args], check=True)


def test_datapath_max_idle_is_set_and_taken_back_when_removed(lb: Any) -> None:
    """``datapath_max_idle_ms`` sets ovs-vswitchd's max-idle; once it is gone from the
    YAML, a restart puts the OVS default back, but leaves a value someone else set."""
    ctl: Controller = lb.ctl
    original, before = ctl.config_path.read_text(), _max_idle()

    def restart(extra: dict[str, Any]) -> None:
        ctl.stop()
        ctl.config_path.write_text(yaml.safe_dump({**yaml.safe_load(original), **extra}))
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)

    try:
        _set_max_idle("")
        restart({"datapath_max_idle_ms": 1234})
        assert _max_idle() == "1234"
        restart({})
        assert _max_idle() == ""
        _set_max_idle("4321")  # not lbrp's: kept
        restart({})
        assert _max_idle() == "4321"
    finally:
        _set_max_idle(before)
        ctl.stop()
        ctl.config_path.write_text(original)
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)


def test_kill_9_restart_keeps_sessions_and_acknowledged_config(lb: Any) -> None:
    ctl: Controller = lb.ctl
    assert ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 3})[0] == 201
    acknowledged = ctl.request("GET", "/services")[1]
    proc = hold(lb, 50, 8)
    time.sleep(2)
    guard = learn_guard(lb)
    ctl.stop(kill=True)
    ctl.start()
    t0 = time.monotonic()
    ctl.wait_programmed(lb.lb_dpid, timeout=30)
    reconnect_s = time.monotonic() - t0
    # a reconcile installs the other LEARN guard: the groups may differ from the cached
    assert len(learn_guard(lb)) == len(guard) == (lb.mode == "learn")
    assert not set(guard) & set(learn_guard(lb)), guard
    held = hold_result(proc)
    assert held["ok"] == 50 and held["changed_backend"] == 0, held
    assert ctl.request("GET", "/services")[1] == acknowledged
    assert config_file.load(ctl.config_path).sorted_services() == \
        config_file.load(ctl.config_path).sorted_services()
    fresh = client(lb, "tcp", 50)
    assert fresh["ok"] == 50, fresh
    print(f"controller restart: switch reprogrammed {reconnect_s:.2f} s after the REST API")


def test_frontend_and_backend_ports_by_interface_name(lb: Any, tmp_path: Path) -> None:
    ctl: Controller = lb.ctl
    names = {int(m.group(1)): m.group(2) for m in re.finditer(
        r"^\s*(\d+)\((\S+)\):", lb.lb_ofctl("show"), re.MULTILINE)}
    doc = yaml.safe_load(ctl.config_path.read_text())
    doc["frontend_port"], doc["backend_port"] = names[1], names[2]
    ctl.stop()
    ctl.config_path.write_text(yaml.safe_dump(doc))
    try:
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)
        _, health = ctl.request("GET", "/health")
        sw = health["switches"][0]
        assert (sw["frontend_port"], sw["backend_port"]) == (1, 2)
        assert client(lb, "tcp", 30)["ok"] == 30
    finally:
        ctl.stop()
        doc["frontend_port"], doc["backend_port"] = 1, 2
        ctl.config_path.write_text(yaml.safe_dump(doc))


def test_every_bridge_that_connects_gets_the_full_configuration(lb: Any) -> None:
    ctl: Controller = lb.ctl
    br = "lbrpx0"  # our own extra bridge, removed below
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], check=True)
    subprocess.run(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br,
                    "datapath_type=netdev", "fail_mode=secure",
                    "protocols=OpenFlow13,OpenFlow15", "other_config:datapath-id=00000000000000ee",
                    "--", "set-controller", br, f"tcp:127.0.0.1:{lb.of_port}"], check=True)
    try:
        ctl.wait_programmed("00000000000000ee", timeout=30)
        assert ctl.programmed(lb.lb_dpid)
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", "dump-groups", br],
                             capture_output=True, text=True, check=True).stdout
        assert out.count("type=select") == 2
        # a change reaches both bridges
        assert ctl.request("PUT", f"/services/{VIP}/tcp/7100", {})[0] == 201
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", "dump-groups", br],
                             capture_output=True, text=True, check=True).stdout
        assert out.count("type=select") == 3
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], check=True)
    wait_for(lambda: not ctl.programmed("00000000000000ee"), 30, "the extra bridge to go")


def test_session_bound_is_applied(lb: Any) -> None:
    """Learn: OVSDB Flow_Table flow_limit + evict on both session tables; conntrack: a
    connection limit on lbrp's zone."""
    out = subprocess.run(["ovs-vsctl", "--columns=flow_limit,overflow_policy", "list",
                          "Flow_Table"], capture_output=True, text=True, check=True).stdout
    assert "200000" in out and "evict" in out, out
    tables = subprocess.run(["ovs-vsctl", "get", "Bridge", "lb0", "flow_tables"],
                            capture_output=True, text=True, check=True).stdout
    assert "10=" in tables and "11=" in tables
    if lb.mode == "conntrack":
        limits = subprocess.run(["ovs-appctl", "dpctl/ct-get-limits", f"zone={pl.CT_ZONE}"],
                                capture_output=True, text=True, check=True).stdout
        assert f"zone={pl.CT_ZONE},limit=200000" in limits, limits
