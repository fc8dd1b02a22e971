"""Counters on a real switch: they move by the right amounts for known traffic."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_5_parser
from prometheus_client.parser import text_string_to_metric_families

from lbrp_app import ofmsg
from lbrp_app import pipeline as pl
from lbrp_app.model import parse_config
from tests.integration.conftest import controller_on_lab, pinning_modes
from topologies.controller import Controller, wait_for

pytestmark = pytest.mark.integration

VIP = "13.13.13.13"
UDP_REPLY_FRAME = 14 + 20 + 8 + 3  # Ethernet + IPv4 + UDP + "bN\n"
CONFIG = {
    "stats_interval": 1,
    "tcp_fin_timeout": 1,
    "udp_idle_timeout": 3,
    "conntrack_dump_interval": 1,  # active sessions per backend in conntrack mode too
    "services": [
        {"vip": VIP, "proto": "udp", "port": 8100, "backends": [
            {"ip": "10.0.1.2", "port": 8002}, {"ip": "10.0.1.3", "port": 8002}]},
        {"vip": VIP, "proto": "tcp", "port": 8101, "backends": [
            {"ip": "10.0.1.3", "port": 8003}, {"ip": "10.0.1.4", "port": 8003, "weight": 3}]},
        {"vip": VIP, "proto": "tcp", "port": 8102},  # no backend: rejects
    ],
}


@pytest.fixture(scope="module", params=pinning_modes())
def lab(request: pytest.FixtureRequest, lbrp_lab: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with controller_on_lab(lbrp_lab, tmp_path_factory.mktemp("counters"), CONFIG,
                           request.param) as net:
        yield net


def service(ctl: Controller, port: int) -> dict[str, Any]:
    doc = ctl.request("GET", "/stats")[1]
    return next(s for s in doc["services"] if s["port"] == port)


def test_udp_counters_exact_and_kept_after_expiry(lab: Any) -> None:
    ctl: Controller = lab.ctl
    # distinct source ports: a reused ephemeral port would be the same session, not a new one
    res = lab.run_client(lab.clients[0], VIP, "udp", 8100, sessions=30, concurrency=5, timeout=2,
                         extra=("--src-port-base", "41000"))
    assert res["ok"] == 30, res
    # Switch counters are eventually consistent: a packet that hits an existing datapath
    # flow reaches its OpenFlow rules' counters at the next revalidation, not at once.
    want = {"new_sessions": 30, "packets_in": 30, "packets_out": 30,
            "bytes_out": 30 * UDP_REPLY_FRAME}
    seen: dict[str, Any] = {}

    def settled() -> bool:
        seen.update(service(ctl, 8100))
        return all(seen[k] == v for k, v in want.items())

    wait_for(settled, 30, lambda: f"counters {want}, last seen {seen}")
    svc = dict(seen)
    per_backend = {b["ip"]: b["new_sessions"] for b in svc["backends"]}
    assert per_backend == {"10.0.1.2": res["by_backend"].get("b1", 0),
                           "10.0.1.3": res["by_backend"].get("b2", 0)}
    if lab.mode == "learn":
        assert svc["active_sessions"] == 30
    # the sessions expire (udp_idle_timeout 3 s); flow-removed keeps their counts
    wait_for(lambda: service(ctl, 8100)["active_sessions"] == 0, 20, "sessions to expire")
    if lab.mode == "conntrack":
        def dump() -> list[str]:
            return subprocess.run(["ovs-appctl", "dpctl/dump-conntrack", f"zone={pl.CT_ZONE}"],
                                  capture_output=True, text=True, check=True).stdout.splitlines()

        def zone_count() -> int:
            return ctl.request("GET", "/stats")[1]["controller"]["conntrack_sessions"]

        # the controller's zone count follows the switch's connections, both ways
        wait_for(lambda: zone_count() >= 30, 15, "the 30 connections in the zone count")
        wait_for(lambda: not any("dport=8100" in ln for ln in dump()), 20,
                 "connections to expire")
        wait_for(lambda: zone_count() == len(dump()), 20,
                 lambda: f"zone count {zone_count()} to match the dump {len(dump())}")
    svc = service(ctl, 8100)
    assert svc["packets_out"] == 30 and svc["bytes_out"] == 30 * UDP_REPLY_FRAME
    assert svc["new_sessions"] == 30


def test_tcp_sessions_rejects_and_echo(lab: Any, run_in: Any) -> None:
    ctl: Controller = lab.ctl
    res = lab.run_client(lab.clients[1], VIP, "tcp", 8101, sessions=40, concurrency=10)
    assert res["ok"] == 40, res
    wait_for(lambda: service(ctl, 8101)["new_sessions"] >= 40, 15, "40 new sessions counted")
    svc = service(ctl, 8101)
    assert svc["new_sessions"] <= 42  # a retransmitted SYN would count again
    by = {b["ip"]: b["new_sessions"] for b in svc["backends"]}
    assert by["10.0.1.3"] >= res["by_backend"].get("b2", 0)
    assert by["10.0.1.4"] >= res["by_backend"].get("b3", 0)
    # each session: SYN, ACK, request, FIN and ACK at least from the client
    assert svc["packets_in"] >= 5 * 40
    before = ctl.request("GET", "/stats")[1]["controller"]["echo_replies"]
    rej = lab.run_client(lab.clients[0], VIP, "tcp", 8102, sessions=4, concurrency=1)
    assert rej["errors"] == {"refused": 4}, rej
    assert run_in(lab.clients[0], f"ping -c 3 -i 0.2 -W 2 {VIP}", timeout=10).returncode == 0
    doc = ctl.request("GET", "/stats")[1]
    assert doc["controller"]["echo_replies"] - before == 3
    assert next(s for s in doc["services"] if s["port"] == 8102)["rejected_sessions"] == 4


def test_a_poll_skips_idle_backends_in_learn_mode_only(lab: Any) -> None:
    """With learn pinning a poll does not ask a backend with no session flow and no new
    session since the last poll for its session flows (two requests a backend). The next
    test then shows that a skipped backend's new sessions are counted."""
    ctl: Controller = lab.ctl
    cfg = parse_config({**CONFIG, "session_pinning": lab.mode})
    every = (len(ofmsg.group_and_meter_requests(ofproto_v1_5_parser, cfg))
             + len(list(ofmsg.counter_requests(cfg))))
    backends = sum(len(s.backends) for s in cfg.services.values())
    seen: list[int] = []

    def requests() -> int | None:
        n = ctl.request("GET", "/stats")[1]["controller"]["last_poll_requests"]
        seen.append(n)
        return n

    wait_for(lambda: all(service(ctl, p)["active_sessions"] == 0 for p in (8100, 8101)), 30,
             "earlier sessions to leave the active count")
    if lab.mode == "conntrack":
        wait_for(lambda: requests() is not None, 15, "a poll")
        assert all(n == every for n in seen[-1:] + [requests() for _ in range(3)]), seen
        return
    # each backend is still read once every 16 polls, so most polls skip all four
    wait_for(lambda: requests() == every - 2 * backends, 30,
             lambda: f"a poll of {every - 2 * backends} requests, seen {seen[-10:]}")
    doc = ctl.request("GET", "/stats")[1]["controller"]
    assert 0 < doc["last_poll_seconds"] < 5, doc


def test_active_sessions_follow_held_sessions_per_backend(lab: Any) -> None:
    ctl: Controller = lab.ctl
    # the earlier tests' sessions to 8101 must have gone first (tcp_fin_timeout 1 s)
    wait_for(lambda: service(ctl, 8101)["active_sessions"] == 0, 30,
             "earlier sessions to leave the active count")
    result: dict[str, Any] = {}
    client = threading.Thread(target=lambda: result.update(lab.run_client(
        lab.clients[1], VIP, "tcp", 8101, sessions=6, concurrency=6, extra=("--hold", "8"))))
    client.start()
    seen: dict[str, int] = {}

    def all_held() -> bool:
        svc = service(ctl, 8101)
        seen.clear()
        seen.update({b["ip"]: b["active_sessions"] for b in svc["backends"]})
        return svc["active_sessions"] == 6

    try:
        wait_for(all_held, 15, lambda: f"6 active sessions, last seen {seen}")
    finally:
        client.join(60)
    assert result.get("ok") == 6, result
    assert seen == {"10.0.1.3": result["by_backend"].get("b2", 0),
                    "10.0.1.4": result["by_backend"].get("b3", 0)}
    # closed (tcp_fin_timeout 1 s): learned flows and connections go away
    wait_for(lambda: service(ctl, 8101)["active_sessions"] == 0, 30,
             "the closed sessions to leave the active count")


def test_metrics_match_stats_and_parse(lab: Any) -> None:
    ctl: Controller = lab.ctl
    with urllib.request.urlopen(f"http://127.0.0.1:{ctl.rest_port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stats = ctl.request("GET", "/stats")[1]
    svc = next(s for s in stats["services"] if s["port"] == 8100)
    want = {b["ip"] + ":8002": b["new_sessions"] for b in svc["backends"]}
    got = {s.labels["backend"]: s.value for s in families["lbrp_backend_sessions"].samples
           if s.labels["port"] == "8100"}
    assert got == want
    assert families["lbrp_switches_programmed"].samples[0].value == 1


def test_lbrpctl_stats_table(lab: Any) -> None:
    ctl: Controller = lab.ctl
    out = subprocess.run([str(Path(sys.executable).with_name("lbrpctl")), "--url",
                          f"http://127.0.0.1:{ctl.rest_port}", "stats"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert "Prot LocalAddress:Port" in out and f"UDP  {VIP}:8100" in out
    assert "-> 10.0.1.2:8002" in out
