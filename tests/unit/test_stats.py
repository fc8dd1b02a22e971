"""Counters: monotonic totals, flow-removed accounting, JSON and Prometheus output."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbrp_app import pipeline as pl
from lbrp_app.metrics import render
from lbrp_app.model import Backend, Config, Service, ServiceKey
from lbrp_app.ofmsg import GroupCounts
from lbrp_app.stats import Monotonic, Reading, StatsBook, fold_flows, fold_reply

WEB = ServiceKey("13.13.13.13", "tcp", 8000)
B1, B2 = Backend("10.0.1.2", 8002, 1), Backend("10.0.1.3", 8003, 0)
CFG = Config().with_service(Service(WEB, "web", (B1, B2)))
SID = WEB.service_id


def test_monotonic_survives_resets() -> None:
    m = Monotonic()
    assert m.update("s", "k", 5) == 5
    assert m.update("s", "k", 9) == 9
    assert m.update("s", "k", 2) == 11  # counter was reset (flow replaced): keep the 9
    assert m.update("s", "k", 4) == 13
    assert m.total("s", "k") == 13
    # a whole space at once: each counter's reset on its own; other spaces untouched
    m.update_all("s", {"k": 6, "j": 3}.items())
    m.update_all("s", [("k", 1), ("j", 5)])
    assert (m.total("s", "k"), m.total("s", "j"), m.total("t", "k")) == (16, 5, 0)
    assert m.forget("s", ["k", "x"]) == 1 and m.total("s", "k") == 0


def reading(new: int, fwd: tuple[int, int, int], rev: tuple[int, int, int],
            svc_in: tuple[int, int] = (0, 0)) -> Reading:
    return Reading(
        sessions={(SID, B1.backend_id, pl.SESSION_FWD): fwd,
                  (SID, B1.backend_id, pl.SESSION_REV): rev},
        buckets={(SID, B1.backend_id): (new, new * 60)},
        counted={pl.cookie(pl.KIND_NOT_SYN, SID): 3, pl.vip_cookie(pl.KIND_FRAG, WEB.vip): 6},
        service_in={SID: svc_in}, meter_dropped=7)


def backend(doc: dict, ip: str) -> dict:
    return next(b for b in doc["services"][0]["backends"] if b["ip"] == ip)


def test_snapshot_counts_sessions_and_traffic() -> None:
    book = StatsBook()
    book.counters.rejects[SID] = 2
    book.counters.resets[SID] = 1
    book.counters.echo_replies = 4
    book.on_reading(1, reading(10, (10, 40, 4000), (10, 50, 5000), (50, 4600)), now=100.0)
    doc = book.snapshot(CFG, switches=1, last_reconcile=90.0)
    b1 = backend(doc, "10.0.1.2")
    assert b1["new_sessions"] == 10 and b1["active_sessions"] == 10
    assert (b1["packets_in"], b1["bytes_in"]) == (50, 4600)  # 10 first packets + 40 learned
    assert (b1["packets_out"], b1["bytes_out"]) == (50, 5000)
    assert backend(doc, "10.0.1.3")["new_sessions"] == 0
    svc = doc["services"][0]
    assert (svc["packets_in"], svc["rejected_sessions"], svc["dropped_not_syn"]) == (50, 2, 3)
    assert svc["not_syn_resets"] == 1
    assert doc["vips"] == [{"vip": "13.13.13.13", "fragments_dropped": 6}]
    ctl = doc["controller"]
    assert (ctl["echo_replies"], ctl["packet_ins_dropped_by_meter"], ctl["last_poll"]) == \
        (4, 7, 100.0)


def test_expired_sessions_stay_in_the_totals() -> None:
    book = StatsBook()
    book.on_reading(1, reading(10, (10, 40, 4000), (10, 50, 5000)), now=1.0)
    # all ten sessions expire: their flow-removed messages carry the counts away
    ck = pl.cookie(pl.KIND_SESSION, SID, B1.backend_id)
    book.on_flow_removed(1, ck, pl.SESSION_FWD, 40, 4000)
    book.on_flow_removed(1, ck, pl.SESSION_REV, 50, 5000)
    book.on_flow_removed(1, pl.cookie(pl.KIND_STATIC), pl.SESSION_FWD, 99, 99)  # not a session
    # the next poll's aggregate replies (no live flow left) are filed with the removed counts
    fwd = book.session_total(1, (SID, B1.backend_id, pl.SESSION_FWD), 0, 0, 0)
    rev = book.session_total(1, (SID, B1.backend_id, pl.SESSION_REV), 0, 0, 0)
    book.on_reading(1, reading(10, fwd, rev), now=2.0)
    b1 = backend(book.snapshot(CFG, 1, None), "10.0.1.2")
    assert b1["active_sessions"] == 0
    assert (b1["packets_in"], b1["packets_out"], b1["bytes_out"]) == (50, 50, 5000)


def test_flow_removed_after_the_reply_is_not_counted_twice() -> None:
    book = StatsBook()
    key = (SID, B1.backend_id, pl.SESSION_REV)
    live = book.session_total(1, key, 10, 50, 5000)  # reply handled: flows still live
    book.on_flow_removed(1, pl.cookie(pl.KIND_SESSION, SID, B1.backend_id),
                         pl.SESSION_REV, 50, 5000)  # they expire right after
    book.on_reading(1, reading(10, (10, 40, 4000), live), now=1.0)
    assert backend(book.snapshot(CFG, 1, None), "10.0.1.2")["packets_out"] == 50
    later = book.session_total(1, key, 0, 0, 0)  # next poll: only the removed counts
    book.on_reading(1, reading(10, (0, 40, 4000), later), now=2.0)
    assert backend(book.snapshot(CFG, 1, None), "10.0.1.2")["packets_out"] == 50


def test_group_replaced_on_reconnect_keeps_new_session_total() -> None:
    book = StatsBook()
    book.on_reading(1, reading(10, (0, 0, 0), (0, 0, 0)), now=1.0)
    book.on_reading(1, reading(3, (0, 0, 0), (0, 0, 0)), now=2.0)  # counters restarted at 0
    assert backend(book.snapshot(CFG, 1, None), "10.0.1.2")["new_sessions"] == 13


def test_two_switches_add_up() -> None:
    book = StatsBook()
    book.on_reading(1, reading(10, (1, 1, 1), (1, 1, 1)), now=1.0)
    book.on_reading(2, reading(5, (2, 2, 2), (2, 2, 2)), now=1.0)
    b1 = backend(book.snapshot(CFG, 2, None), "10.0.1.2")
    assert b1["new_sessions"] == 15 and b1["active_sessions"] == 3


def test_prune_forgets_removed_backends_and_services_and_keeps_the_rest() -> None:
    book = StatsBook()
    book.counters.rejects[SID] = 2
    book.counters.resets[SID] = 5
    reads = reading(10, (10, 40, 4000), (10, 50, 5000), (50, 4600))
    reads.buckets[(SID, B2.backend_id)] = (4, 240)
    book.on_reading(1, reads, now=1.0)
    book.on_flow_removed(1, pl.cookie(pl.KIND_SESSION, SID, B1.backend_id), pl.SESSION_FWD, 5, 500)
    assert book.prune(CFG) == 0  # everything is still configured

    only_b2 = CFG.with_service(Service(WEB, "web", (B2,)))
    # b1's packets and bytes of 2 session tables and of its bucket, and its removed flows
    assert book.prune(only_b2) == 2 * 2 + 2 + 1
    assert backend(book.snapshot(only_b2, 1, None), "10.0.1.3")["new_sessions"] == 4
    # b1 added back starts from zero (its switch counters restart with its new flows too)
    b1 = backend(book.snapshot(CFG, 1, None), "10.0.1.2")
    assert (b1["new_sessions"], b1["packets_out"], b1["bytes_in"]) == (0, 0, 0)
    assert book.snapshot(CFG, 1, None)["services"][0]["rejected_sessions"] == 2

    gone = CFG.without_service(WEB)
    book.prune(gone)
    assert book.counters.rejects == {} and book.counters.resets == {} and book.removed == {}
    assert book.snapshot(CFG, 1, None)["services"][0]["packets_in"] == 0
    assert book.snapshot(CFG, 1, None)["controller"]["packet_ins_dropped_by_meter"] == 7


def test_metrics_parse_with_prometheus_parser_and_follow_conventions() -> None:
    book = StatsBook()
    book.counters.resets[SID] = 3
    book.on_reading(1, reading(10, (10, 40, 4000), (10, 50, 5000), (50, 4600)), now=1.0)
    text = render(book.snapshot(CFG, 1, 1.0)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sessions = families["lbrp_backend_sessions"]
    assert sessions.type == "counter"
    sample = next(s for s in sessions.samples if s.labels["backend"] == "10.0.1.2:8002")
    assert sample.name == "lbrp_backend_sessions_total" and sample.value == 10
    assert sample.labels == {"vip": "13.13.13.13", "proto": "tcp", "port": "8000",
                             "backend": "10.0.1.2:8002"}
    assert families["lbrp_backend_active_sessions"].type == "gauge"
    directions = {s.labels["direction"] for s in families["lbrp_backend_packets"].samples}
    assert directions == {"in", "out"}
    for name in ("lbrp_switches_connected", "lbrp_switches_programmed",
                 "lbrp_last_reconcile_timestamp_seconds", "lbrp_echo_replies",
                 "lbrp_packet_ins_dropped_by_meter", "lbrp_vip_dropped_fragments",
                 "lbrp_service_rejected_sessions"):
        assert name in families, name
    (resets,) = families["lbrp_service_not_syn_resets"].samples
    assert resets.name == "lbrp_service_not_syn_resets_total" and resets.value == 3
    assert "lbrp_last_stats_poll_requests" not in families  # no poll timed yet
    book.poll_cost = (0.25, 16)
    families = {f.name: f for f in text_string_to_metric_families(
        render(book.snapshot(CFG, 1, 1.0)).decode())}
    assert families["lbrp_last_stats_poll_duration_seconds"].samples[0].value == 0.25
    assert families["lbrp_last_stats_poll_requests"].samples[0].value == 16


def test_conntrack_zone_count_is_reported_in_conntrack_mode_only() -> None:
    from dataclasses import replace

    from lbrp_app.ctdump import parse_zone_count

    out = "default limit=0\nzone=19522,limit=200000,count=60000\nzone=7,limit=10,count=3"
    assert parse_zone_count(out, 19522) == 60000 and parse_zone_count(out, 7) == 3
    assert parse_zone_count("default limit=0", 19522) is None
    book = StatsBook()
    book.conntrack_sessions = 42
    assert book.snapshot(CFG, 1, None)["controller"]["conntrack_sessions"] is None  # learn
    ct = replace(CFG, settings=replace(CFG.settings, session_pinning="conntrack"))
    doc = book.snapshot(ct, 1, None)
    assert doc["controller"]["conntrack_sessions"] == 42
    assert backend(doc, "10.0.1.2")["active_sessions"] is None  # not read per backend
    families = {f.name: f for f in text_string_to_metric_families(render(doc).decode())}
    assert families["lbrp_conntrack_sessions"].samples[0].value == 42


def test_drops_after_the_commit_are_totalled_reported_and_never_pruned() -> None:
    from dataclasses import replace

    full = pl.cookie(pl.KIND_CT_AFTER_COMMIT, pl.CT_DROP_FULL)
    gone = pl.cookie(pl.KIND_CT_AFTER_COMMIT, pl.CT_DROP_GONE)
    again = pl.cookie(pl.KIND_CT_AFTER_COMMIT, pl.CT_REPICK)
    ct = replace(CFG, settings=replace(CFG.settings, session_pinning="conntrack"))
    book = StatsBook()
    for dpid, packets in ((1, 5), (2, 2), (1, 9)):  # two switches; switch 1 read twice
        book.on_reading(dpid, Reading(counted={full: packets, gone: 1, again: 3 * dpid}),
                        now=1.0)
    assert (book.counted(pl.CT_DROP_FULL_COOKIE), book.counted(pl.CT_DROP_GONE_COOKIE),
            book.counted(pl.CT_REPICK_COOKIE)) == (11, 2, 9)
    ctl = book.snapshot(CFG, 2, None)["controller"]
    assert all(ctl[k] is None for k in ("conntrack_zone_full_drops",
                                        "conntrack_backend_gone_drops",
                                        "conntrack_backend_gone_repicks"))
    doc = book.snapshot(ct, 2, None)
    assert doc["controller"]["conntrack_zone_full_drops"] == 11
    assert doc["controller"]["conntrack_backend_gone_drops"] == 2
    assert doc["controller"]["conntrack_backend_gone_repicks"] == 9
    families = {f.name: f for f in text_string_to_metric_families(render(doc).decode())}
    samples = {s.labels["reason"]: (s.name, s.value)
               for s in families["lbrp_conntrack_dropped_new_session_packets"].samples}
    name = "lbrp_conntrack_dropped_new_session_packets_total"
    assert samples == {"zone_full": (name, 11), "backend_gone": (name, 2)}
    assert [(s.name, s.value) for s in families["lbrp_conntrack_repicked_new_sessions"]
            .samples] == [("lbrp_conntrack_repicked_new_sessions_total", 9)]
    assert "lbrp_conntrack_dropped_new_session_packets" not in {
        f.name for f in text_string_to_metric_families(render(book.snapshot(CFG, 2, None))
                                                          .decode())}
    book.prune(ct.without_service(WEB))  # no service left: these counters stay
    assert (book.counted(pl.CT_DROP_FULL_COOKIE), book.counted(pl.CT_DROP_GONE_COOKIE),
            book.counted(pl.CT_REPICK_COOKIE)) == (11, 2, 9)


def test_conntrack_dump_gives_active_sessions_per_backend_when_asked_for() -> None:
    from dataclasses import replace

    from lbrp_app.stats import count_conntrack_labels

    label = pl.ct_label(WEB, B1)
    ours = ("tcp,orig=(src=10.0.0.1,dst=13.13.13.13,sport={},dport=8000),zone=19522,"
            "labels=0x{:x},protoinfo=(state={})")
    dump = "\n".join([
        ours.format(1, label, "ESTABLISHED"),
        ours.format(2, label, "TIME_WAIT"),
        "udp,orig=(src=10.0.0.9,dst=10.0.1.2,sport=5,dport=53),zone=19522",  # not ours
    ])
    assert count_conntrack_labels(dump) == {(SID, B1.backend_id): 2}
    ct = replace(CFG, settings=replace(CFG.settings, session_pinning="conntrack"))
    book = StatsBook()
    book.conntrack_active = count_conntrack_labels(dump)
    doc = book.snapshot(ct, 1, None)
    assert backend(doc, "10.0.1.2")["active_sessions"] == 2
    assert backend(doc, "10.0.1.3")["active_sessions"] == 0
    assert doc["services"][0]["active_sessions"] == 2


def test_labelled_connections_lists_original_tuples_by_label() -> None:
    from lbrp_app.ctdump import labelled_connections
    mine, other = pl.ct_label(WEB, B1), pl.ct_label(WEB, B1) + 1
    dump = "\n".join([
        ("tcp,orig=(src=10.0.0.1,dst=13.13.13.13,sport=40000,dport=8000),reply=(src=10.0.1.2,"
        f"dst=10.0.0.1,sport=8002,dport=40000),zone=19522,labels=0x{mine:x},"
        "protoinfo=(state=ESTABLISHED)"),
        ("tcp,orig=(src=10.0.0.2,dst=13.13.13.15,sport=40001,dport=80),reply=(src=10.0.1.2,"
        f"dst=10.0.0.2,sport=8002,dport=40001),zone=19522,labels=0x{other:x},"
        "protoinfo=(state=ESTABLISHED)"),
        ("udp,orig=(src=10.0.0.3,dst=13.13.13.13,sport=5353,dport=8000),reply=(src=10.0.1.2,"
        f"dst=10.0.0.3,sport=8003,dport=5353),zone=19522,mark=1,labels=0x{mine:x}"),
        ("icmp,orig=(src=10.0.0.1,dst=10.0.1.2,id=1,type=8,code=0),reply=(src=10.0.1.2,"
        "dst=10.0.0.1,id=1,type=0,code=0),zone=19522"),
    ])
    assert labelled_connections(dump, {mine}) == [
        ("tcp", "10.0.0.1", "13.13.13.13", 40000, 8000),
        ("udp", "10.0.0.3", "13.13.13.13", 5353, 8000)]
    assert labelled_connections(dump, set()) == []


def test_a_full_zone_is_warned_about_at_most_once_a_minute_and_only_when_it_dropped_more(
) -> None:
    full = pl.cookie(pl.KIND_CT_AFTER_COMMIT, pl.CT_DROP_FULL)
    book = StatsBook()
    book.on_reading(1, Reading(counted={full: 0}), now=0.0)
    assert book.zone_full_news(now=100.0) is None  # nothing dropped
    book.on_reading(1, Reading(counted={full: 40}), now=1.0)
    assert book.zone_full_news(now=100.0) == (40, 40)
    book.on_reading(1, Reading(counted={full: 55}), now=2.0)
    assert book.zone_full_news(now=159.0) is None  # within the minute: later
    assert book.zone_full_news(now=160.0) == (55, 15)
    assert book.zone_full_news(now=500.0) is None  # no new drop since


def test_a_reading_taken_in_steps_gives_the_totals_of_one_taken_at_once() -> None:
    """The app takes a big poll's reading a few thousand counters at a time."""
    sessions = {(sid, bid, table): (1, sid + bid, 10 * bid) for sid in range(1, 40)
                for bid in range(1, 9) for table in pl.SESSION_TABLES}
    big = Reading(sessions=sessions, buckets={(s, b): (b, 60 * b) for s, b, _ in sessions},
                  counted={7: 3}, service_in={s: (s, s) for s, _, _ in sessions},
                  meter_dropped=5)
    at_once, stepped = StatsBook(), StatsBook()
    at_once.on_reading(1, big, 1.0)
    steps = 0
    for _ in stepped.on_reading_steps(1, big, 1.0, step=100):
        steps += 1
        assert stepped.polled_at is None  # the poll counts as read once every step is done
    assert steps >= 2 * len(sessions) // 100
    assert stepped.polled_at == 1.0
    for attr in ("active", "seen_pairs", "seen_sids", "seen_counted", "dpids"):
        assert getattr(stepped, attr) == getattr(at_once, attr), attr
    assert stepped.mono._last == at_once.mono._last
    assert stepped.snapshot(CFG, 1, None) == at_once.snapshot(CFG, 1, None)


def test_a_prune_taken_in_steps_forgets_what_one_taken_at_once_forgets() -> None:
    """The app prunes a few hundred services at a time, letting REST changes in between."""
    services = [Service(ServiceKey(f"13.13.14.{i}", "tcp", 80), "", (
        Backend(f"10.0.2.{i}", 80), Backend(f"10.0.3.{i}", 80))) for i in range(1, 11)]
    cfg = Config()
    for svc in services:
        cfg = cfg.with_service(svc)
    sessions = {(s.key.service_id, b.backend_id, table): (1, 2, 3) for s in services
                for b in s.backends for table in pl.SESSION_TABLES}
    big = Reading(sessions=sessions, buckets={(s, b): (1, 60) for s, b, _ in sessions},
                  service_in={s: (1, 1) for s, _, _ in sessions})
    smaller = cfg.without_service(services[0].key).with_service(
        Service(services[1].key, "", services[1].backends[:1]))
    at_once, stepped = StatsBook(), StatsBook()
    for book in (at_once, stepped):
        book.on_reading(1, big, 1.0)
    dropped = at_once.prune(smaller)
    assert dropped == 2 * (2 * 2 + 2) + 2 + (2 * 2 + 2)  # service 1: 2 backends and its own
    steps = stepped.prune_steps(smaller, step=3)
    assert sum(1 for _ in steps) == 3  # 9 services, 3 at a time
    for attr in ("seen_pairs", "seen_sids", "seen_counted"):
        assert getattr(stepped, attr) == getattr(at_once, attr), attr
    assert stepped.mono._last == at_once.mono._last


def idle_reading(book: StatsBook, cfg: Config, buckets: dict, live: dict) -> tuple[Reading, set]:
    """A poll as the app takes it: buckets first, then the session flows of the backends
    that are not idle (``live``: (sid, bid, table) -> the switch's live (flows, pkts, bytes)).
    Idle backends are found and filled in steps, as the app does, of a few at a time."""
    r = Reading(buckets=dict(buckets))
    idle: set = set()
    steps = sum(1 for _ in book.idle_backends_steps(1, cfg, r.buckets, idle, step=3))
    assert idle == book.idle_backends(1, cfg, r.buckets)
    assert steps == (len(cfg.services) // 3 if 1 in book.last_read else 0)
    for svc in cfg.services.values():
        for be in svc.backends:
            if (svc.key.service_id, be.backend_id) in idle:
                continue
            for t in pl.SESSION_TABLES:
                k = (svc.key.service_id, be.backend_id, t)
                r.sessions[k] = book.session_total(1, k, *live.get(k, (0, 0, 0)))
    filled = sum(1 for _ in book.fill_idle_steps(1, r, idle, step=5))
    assert filled == len(idle) // 5
    assert r.sessions.keys() == {(s.key.service_id, b.backend_id, t) for s in cfg.services.values()
                                 for b in s.backends for t in pl.SESSION_TABLES}  # all read
    return r, idle


def test_a_backend_is_idle_with_no_session_flow_and_no_bucket_hit_since_the_last_read(
) -> None:
    book = StatsBook()
    b1 = (SID, B1.backend_id)
    fwd, rev = (*b1, pl.SESSION_FWD), (*b1, pl.SESSION_REV)
    assert book.idle_backends(1, CFG, {b1: (0, 0)}) == set()  # never read: read everything
    book.on_reading(1, Reading(buckets={b1: (4, 240)}, sessions={fwd: (1, 5, 500),
                                                                  rev: (0, 3, 300)}), 1.0)
    assert book.idle_backends(1, CFG, {b1: (4, 240)}) == set()  # no cfg given: no memory
    for _ in book.on_reading_steps(1, Reading(buckets={b1: (4, 240)}, sessions={
            fwd: (1, 5, 500), rev: (0, 3, 300)}), 2.0, cfg=CFG):
        pass
    book.readings = 1  # not a recheck poll of either backend
    assert (SID + B1.backend_id + 1) % 16 and (SID + B2.backend_id + 1) % 16
    # B1 had a live flow; B2 (weight 0: no bucket) had none and can get none
    assert book.idle_backends(1, CFG, {b1: (4, 240)}) == {(SID, B2.backend_id)}
    for _ in book.on_reading_steps(1, Reading(buckets={b1: (4, 240)}, sessions={
            fwd: (0, 5, 500), rev: (0, 3, 300)}), 3.0, cfg=CFG):
        pass
    book.readings = 1
    assert book.idle_backends(1, CFG, {b1: (4, 240)}) == {b1, (SID, B2.backend_id)}
    assert book.idle_backends(1, CFG, {b1: (5, 300)}) == {(SID, B2.backend_id)}  # a new one
    # the expired flows' counts are what a read would find
    book.on_flow_removed(1, pl.cookie(pl.KIND_SESSION, *b1), pl.SESSION_FWD, 7, 700)
    r = Reading()
    book.fill_idle(1, r, {b1})
    assert r.sessions == {fwd: (0, 7, 700), rev: (0, 0, 0)}
    # a changed service is read whole, even for an unchanged backend; other services not
    dns = Service(ServiceKey("13.13.13.14", "udp", 53), "dns", (Backend("10.0.1.4", 53),))
    both = CFG.with_service(dns)
    dns_b = (dns.key.service_id, dns.backends[0].backend_id)
    for _ in book.on_reading_steps(1, Reading(buckets={b1: (4, 240), dns_b: (0, 0)}),
                                   4.0, cfg=both):
        pass
    book.readings = 1
    assert dns_b in book.idle_backends(1, both, {b1: (4, 240), dns_b: (0, 0)})
    reweighted = both.with_service(Service(WEB, "web", (B1, replace(B2, weight=2))))
    assert book.idle_backends(1, reweighted, {b1: (4, 240), dns_b: (0, 0)}) == {dns_b}
    # conntrack pinning learns nothing; a switch that went away is read whole again
    ct = replace(both, settings=replace(both.settings, session_pinning="conntrack"))
    assert book.idle_backends(1, ct, {b1: (4, 240), dns_b: (0, 0)}) == set()
    book.forget_switch(1)
    assert book.idle_backends(1, both, {b1: (4, 240), dns_b: (0, 0)}) == set()


@pytest.mark.parametrize("seed", range(6))
def test_polls_that_skip_idle_backends_give_the_totals_of_polls_that_read_them(
        seed: int) -> None:
    """A simulated switch: sessions start through buckets, carry traffic, expire (flow
    removed), services are reweighted (group replaced: bucket counters restart). A book
    that skips idle backends reports what a book that reads every backend reports."""
    rng = random.Random(seed)
    services = [Service(ServiceKey(f"13.13.15.{i}", "tcp", 80), "", tuple(
        Backend(f"10.0.4.{4 * i + j}", 80, 1) for j in range(4))) for i in range(1, 9)]
    cfg = Config()
    for svc in services:
        cfg = cfg.with_service(svc)
    buckets: dict[tuple[int, int], list[int]] = {}
    flows: dict[tuple[int, int, int], list[list[int]]] = {}  # key -> [packets, bytes] each
    full, skipping = StatsBook(), StatsBook()
    skipped = reweights = 0
    read_at: dict[tuple[int, int], int] = {}
    for poll in range(60):
        for _ in range(rng.choice((0, 0, 1, 3))):  # new sessions, on a few services
            svc = rng.choice(services[:3])
            be = rng.choice(svc.active_backends)
            k = (svc.key.service_id, be.backend_id)
            buckets.setdefault(k, [0, 0])
            buckets[k][0] += 1
            buckets[k][1] += 60
            for t in pl.SESSION_TABLES:
                flows.setdefault((*k, t), []).append([0, 0])
        for session in flows.values():  # traffic, then expiries
            for f in session:
                f[0] += 2
                f[1] += 200
        for key, session in flows.items():
            for f in [f for f in session if rng.random() < 0.3]:
                session.remove(f)
                for book in (full, skipping):
                    book.on_flow_removed(1, pl.cookie(pl.KIND_SESSION, *key[:2]), key[2], *f)
        if rng.random() < 0.15:  # a reweight: the group and its counters are replaced
            reweights += 1
            i = rng.randrange(3)
            svc = services[i]
            services[i] = Service(svc.key, "", tuple(replace(b, weight=rng.randint(0, 3))
                                                     for b in svc.backends))
            cfg = cfg.with_service(services[i])
            for be in services[i].backends:  # a bucket per backend of weight > 0
                k = (svc.key.service_id, be.backend_id)
                buckets.pop(k, None)
                if be.weight:
                    buckets[k] = [0, 0]
        raw = {k: tuple(v) for k, v in buckets.items()}
        live = {k: (len(s), sum(f[0] for f in s), sum(f[1] for f in s))
                for k, s in flows.items()}
        for book in (full, skipping):
            if book is full:
                r, idle = idle_reading(StatsBook(), cfg, raw, live)  # a book with no memory
                r.sessions = {k: book.session_total(1, k, *live.get(k, (0, 0, 0)))
                              for k in r.sessions}
            else:
                r, idle = idle_reading(book, cfg, raw, live)
                skipped += len(idle)
                for s in cfg.services.values():
                    for be in s.backends:
                        k = (s.key.service_id, be.backend_id)
                        if k not in idle:
                            read_at[k] = poll
                        assert poll - read_at.get(k, poll) < 16  # the recheck
            for _ in book.on_reading_steps(1, r, float(poll), cfg=cfg):
                pass
        assert skipping.snapshot(cfg, 1, None) == full.snapshot(cfg, 1, None), poll
    assert skipped > 60 * 4 * 5  # most backends had no session most of the time
    assert reweights


def test_flow_desc_counts_are_filed_by_cookie_and_summed_over_a_replys_parts() -> None:
    sid, bid = SID, B1.backend_id
    classify = pl.cookie(pl.KIND_SERVICE, sid)
    not_syn, frag = pl.cookie(pl.KIND_NOT_SYN, sid), pl.vip_cookie(pl.KIND_FRAG, WEB.vip)
    backend = pl.cookie(pl.KIND_BACKEND, sid, bid)
    r = Reading()
    fold_flows(r, [(pl.CLASSIFY, classify, 5, 500), (pl.CLASSIFY, frag, 2, 120),
                   (pl.SERVICE, classify, 99, 9900),  # the service's group flow: not read
                   (pl.CLASSIFY, 0x1234, 7, 7)])  # not lbrp's
    fold_flows(r, [(pl.CLASSIFY, classify, 3, 180), (pl.SERVICE, not_syn, 4, 240),
                   (pl.CT_FWD, pl.CT_DROP_FULL_COOKIE, 6, 360),
                   (pl.CT_FWD, backend, 10, 1000), (pl.CT_REV, backend, 20, 3000)])
    assert r.service_in == {sid: (8, 680)}
    assert r.counted == {frag: 2, not_syn: 4, pl.CT_DROP_FULL_COOKIE: 6}
    assert r.sessions == {(sid, bid, pl.SESSION_FWD): (1, 10, 1000),
                          (sid, bid, pl.SESSION_REV): (1, 20, 3000)}


def test_group_counts_are_filed_per_backend_summing_its_split_buckets() -> None:
    """Each bucket's counts go to its owner (in bucket order); the two buckets of a
    backend whose weight was split add up; a group the poll has no owners for is left
    out, and so are buckets beyond its owners (a group changed since the request)."""
    svc = Service(WEB, "web", (Backend("10.0.1.2", 8002, 1), Backend("10.0.1.3", 8003, 2)))
    owners = pl.bucket_owners(svc)
    assert len(owners) == 3 and owners[1] == owners[2]  # the heavier one split in two
    r = Reading()
    counts = ((5, 300), (7, 420), (1, 60), (9, 9))
    fold_reply(StatsBook(), 1, r, ("groups", {SID: owners}),
               SimpleNamespace(body=[GroupCounts(SID, counts), GroupCounts(77, ((3, 3),))]))
    assert r.buckets == {(SID, owners[0]): (5, 300), (SID, owners[1]): (8, 480)}
