"""OpenFlow 1.5 encoding of the pipeline (serialised without a switch)."""

from __future__ import annotations

import struct
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbrp_app import ofmsg
from lbrp_app import pipeline as pl
from lbrp_app.model import Backend, Config, Service, ServiceKey

DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)
WEB = ServiceKey("13.13.13.13", "tcp", 8000)


def serialize(msg: object) -> bytes:
    msg.datapath = DP
    msg.xid = 7
    msg.serialize()
    return bytes(msg.buf)


def decoded(msg: object) -> Any:
    """``msg`` serialised, then parsed back by os-ken."""
    raw = serialize(msg)
    return parser.msg_parser(DP, ofp.OFP_VERSION, raw[1], len(raw), 7, raw)


def test_selection_method_property_layout() -> None:
    raw = ofmsg.SelectionMethodProp().serialize()
    assert len(raw) == 40
    typ, length, vendor, exp_type = struct.unpack_from("!HHII", raw)
    assert (typ, length, vendor, exp_type) == (0xFFFF, 40, 0x154D, 1)
    assert raw[16:32].rstrip(b"\0") == b"dp_hash"
    assert struct.unpack_from("!Q", raw, 32)[0] == 0  # OVS_HASH_ALG_L4: whole 5-tuple


def test_every_message_of_a_full_state_serialises() -> None:
    c = Config().with_service(Service(WEB, "web", (Backend("10.0.1.2", 8002, 3),
                                                    Backend("10.0.1.3", 8003, 0))))
    c = c.with_service(Service(ServiceKey("13.13.13.13", "udp", 53), "", ()))
    msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(c, pl.Ports(1, 2)))
    assert isinstance(msgs[0], parser.OFPFlowMod) and msgs[0].command == ofp.OFPFC_DELETE
    assert msgs[0].cookie_mask == pl.OWN_FLOWS_MASK  # learned sessions are kept
    assert isinstance(msgs[1], parser.OFPGroupMod) and msgs[1].command == ofp.OFPGC_DELETE
    for m in msgs:
        assert len(serialize(m)) >= 16


def test_group_mod_has_weighted_buckets_and_selection_method() -> None:
    g = pl.Group(42, (pl.Bucket(77, 5, (pl.SetField("reg0", 1), pl.Resubmit(30))),))
    m = ofmsg.group_mod(parser, ofp, g, ofp.OFPGC_ADD)
    raw = serialize(m)
    assert b"dp_hash" in raw
    back = parser.OFPGroupMod.parser(DP, ofp.OFP_VERSION, ofp.OFPT_GROUP_MOD, len(raw), 7, raw)
    assert back.group_id == 42
    assert back.buckets[0].properties[0].weight == 5
    assert back.buckets[0].bucket_id == 77  # the backend id


def test_match_keeps_prerequisite_order() -> None:
    f = pl.Flow(0, 500, (("in_port", 1), ("eth_type", 0x800), ("ipv4_dst", "1.2.3.4"),
                         ("ip_frag", (1, 1))), (), 0)
    m = decoded(ofmsg.flow_mod(parser, ofp, f, ofp.OFPFC_ADD))
    assert [k for k, _ in m.match._fields2] == ["in_port", "eth_type", "ipv4_dst", "ip_frag"]


def test_diff_orders_groups_before_flows_and_purges_last() -> None:
    old = Config().with_service(Service(WEB, "", (Backend("10.0.1.2", 8002),
                                                   Backend("10.0.1.3", 8003))))
    new = Config().with_service(Service(WEB, "", (Backend("10.0.1.2", 8002),)))
    ports = pl.Ports(1, 2)
    d = pl.diff(pl.desired_state(old, ports), pl.desired_state(new, ports),
                pl.purged_sessions(old, new))
    msgs, after = ofmsg.diff_messages(parser, ofp, d)
    assert after == []
    msgs = [decoded(m) for m in msgs]
    kinds = [(type(m).__name__, m.command) for m in msgs]
    assert kinds[0] == ("OFPGroupMod", ofp.OFPGC_MODIFY)
    assert kinds[1] == ("OFPFlowMod", ofp.OFPFC_DELETE_STRICT)
    purges = msgs[2:]
    assert {m.table_id for m in purges} == set(pl.SESSION_TABLES)
    assert all(m.cookie == pl.session_cookie(WEB, Backend("10.0.1.3", 8003))[0] for m in purges)


def test_conntrack_service_purge_is_a_ct_flush_after_the_bundle() -> None:
    """``ovs-ofctl ofp-print`` (3.1) reads these bytes as NXT_CT_FLUSH zone=19522
    'ct_nw_dst=13.13.13.13,ct_tp_dst=8000,ct_nw_proto=6' (the rest of both tuples empty)."""
    ref = ("06040048000000020000232000000020060000000000000000000028000000000001001400000000"
           "000000000000ffff0d0d0d0d00000000000300081f400000000200084c420000")
    old = Config().with_service(Service(WEB, "", (Backend("10.0.1.2", 8002),)))
    ports = pl.Ports(1, 2)
    d = pl.diff(pl.desired_state(old, ports), pl.desired_state(Config(), ports),
                pl.purged_sessions(old, Config()))
    bundle, after = ofmsg.diff_messages(parser, ofp, d, conntrack=True)
    assert all(not isinstance(m, parser.OFPExperimenter) for m in bundle)
    assert len(after) == 1
    m = after[0]
    m.datapath, m.xid = DP, 2
    m.serialize()
    assert bytes(m.buf).hex() == ref


def test_conntrack_state_serialises() -> None:
    c = Config(settings=replace(Config().settings, session_pinning="conntrack"))
    c = c.with_service(Service(WEB, "", (Backend("10.0.1.2", 8002, 3),)))
    msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(c, pl.Ports(1, 2)))
    for m in msgs:
        assert len(serialize(m)) >= 16


def _reference_learn_action(a: pl.Learn) -> Any:
    """The same action as os-ken's NXActionLearn (the slow, general encoder)."""
    spec_cls = {"match": parser.NXFlowSpecMatch, "load": parser.NXFlowSpecLoad,
                "output": parser.NXFlowSpecOutput}
    specs = [spec_cls[kind](src=src, dst=dst if dst is not None else "", n_bits=n_bits)
             for kind, src, dst, n_bits in a.specs]
    return parser.NXActionLearn(table_id=a.table, specs=specs, idle_timeout=a.idle_timeout,
                                priority=a.priority, cookie=a.cookie,
                                flags=ofmsg.NX_LEARN_F_SEND_FLOW_REM if a.send_flow_removed
                                else 0, fin_idle_timeout=a.fin_idle_timeout)


def _reference_learn(a: pl.Learn) -> bytes:
    act = _reference_learn_action(a)
    buf = bytearray()
    act.serialize(buf, 0)
    return bytes(buf).ljust(act.len, b"\0")  # os-ken leaves the trailing pad unwritten


def test_packed_learn_is_byte_identical_to_os_kens_encoder() -> None:
    for proto, stats in (("tcp", 10), ("udp", 0)):
        cfg = Config().with_service(Service(ServiceKey("13.13.13.13", proto, 53), "",
                                            (Backend("10.0.1.2", 8002, 1),)))
        cfg = replace(cfg, settings=replace(cfg.settings, stats_interval=stats))
        svc = cfg.services[ServiceKey("13.13.13.13", proto, 53)]
        flow = pl.learn_flow(svc, svc.backends[0], pl.Ports(1, 2), cfg.settings)
        learns = [a for a in flow.actions if isinstance(a, pl.Learn)]
        assert len(learns) == 2
        for a in learns:
            packed = ofmsg.PackedLearn(ofp, a)
            assert packed.len % 8 == 0
            buf = bytearray(b"xx")  # written at an offset, as inside a flow mod
            packed.serialize(buf, 2)
            assert bytes(buf[2:]) == _reference_learn(a)
        # and inside a whole flow mod, parsed back by os-ken
        raw = serialize(ofmsg.flow_mod(parser, ofp, flow, ofp.OFPFC_ADD))
        back = parser.msg_parser(DP, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(raw), 7, raw)
        acts = back.instructions[0].actions
        assert [type(x).__name__ for x in acts].count("NXActionLearn") == 2


def test_ct_flush_of_one_connection_by_its_original_tuple() -> None:
    """``ovs-ofctl ofp-print`` (3.1) reads these bytes as NXT_CT_FLUSH zone=19522
    'ct_nw_src=10.0.0.1,ct_nw_dst=13.13.13.13,ct_tp_src=40000,ct_tp_dst=8000,ct_nw_proto=6'
    with an empty reply tuple."""
    ref = ("06040068000000020000232000000020060000000000000000000048000000000000001400000000"
           "000000000000ffff0a000001000000000001001400000000000000000000ffff0d0d0d0d00000000"
           "000200089c400000000300081f400000000200084c420000")
    m = ofmsg.ct_flush_connection(parser, "tcp", "10.0.0.1", "13.13.13.13", 40000, 8000)
    m.datapath, m.xid = DP, 2
    m.serialize()
    assert bytes(m.buf).hex() == ref


def test_backend_purge_is_left_to_the_app_in_conntrack_mode() -> None:
    """No tuple of a connection holds its backend: the app lists them by label."""
    d = pl.Diff(purge_sessions=(pl.Purge(WEB, Backend("10.0.1.3", 8003)),))
    bundle, after = ofmsg.diff_messages(parser, ofp, d, conntrack=True)
    assert bundle == [] and after == []
    # learn pinning: cookies are per service and backend
    bundle, _ = ofmsg.diff_messages(parser, ofp, d, conntrack=False)
    assert len(bundle) == len(pl.SESSION_TABLES)


def _reference_flow_mod(f: pl.Flow) -> Any:
    """``f`` through os-ken's general classes only (no cached or packed encodings)."""
    acts = [_reference_learn_action(a) if isinstance(a, pl.Learn)
            else ofmsg.os_ken_action(parser, ofp, a)
            for a in f.actions if not isinstance(a, pl.GotoTable)]
    insts: list[Any] = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts)] if acts \
        else []
    insts += [parser.OFPInstructionGotoTable(a.table) for a in f.actions
              if isinstance(a, pl.GotoTable)]
    return parser.OFPFlowMod(datapath=None, cookie=f.cookie, cookie_mask=0, table_id=f.table,
                             command=ofp.OFPFC_ADD, priority=f.priority,
                             buffer_id=ofp.OFP_NO_BUFFER, out_port=ofmsg.OFPP_ANY,
                             out_group=ofmsg.OFPG_ANY,
                             match=parser.OFPMatch(_ordered_fields=list(f.match)),
                             instructions=insts)


def test_packed_flow_and_group_mods_are_byte_identical_to_os_kens_encoders() -> None:
    """Every flow and group of both modes, for services that use every kind of flow (a
    backend shared by two services, one of weight 0, a service with no backend, UDP),
    encodes to the same bytes as os-ken's general classes give; a second encoding, from
    the caches, too."""
    shared = Backend("10.0.1.2", 8002, 3)
    cfg = Config()
    for key, backends in ((WEB, (shared, Backend("10.0.1.3", 8003, 0))),
                          (ServiceKey("13.13.13.14", "tcp", 8000), (shared,)),
                          (ServiceKey("13.13.13.13", "udp", 53), (Backend("10.0.1.4", 53),)),
                          (ServiceKey("13.13.13.15", "tcp", 80), ())):
        cfg = cfg.with_service(Service(key, "", backends))
    for pinning in ("learn", "conntrack"):
        c = replace(cfg, settings=replace(cfg.settings, session_pinning=pinning))
        state = pl.desired_state(c, pl.Ports(1, 2))
        kinds = {type(a) for f in state.flows.values() for a in f.actions}
        assert {pl.SetField, pl.Output, pl.Controller, pl.Meter, pl.GroupAction} <= kinds
        assert ({pl.Learn, pl.GotoTable} if pinning == "learn"
                else {pl.Conntrack, pl.CtClear, pl.Move}) <= kinds
        for _ in range(2):
            for f in state.flows.values():
                assert serialize(ofmsg.flow_mod(parser, ofp, f, ofp.OFPFC_ADD)) == \
                    serialize(_reference_flow_mod(f)), f
            for g in state.groups.values():
                packed = ofmsg.group_mod(parser, ofp, g, ofp.OFPGC_ADD)
                ref = ofmsg.group_mod(parser, ofp, g, ofp.OFPGC_ADD)
                for bucket, b in zip(ref.buckets, g.buckets, strict=True):
                    bucket.actions = [ofmsg.os_ken_action(parser, ofp, a) for a in b.actions]
                assert serialize(packed) == serialize(ref), g


def test_conntrack_commit_and_reply_restore_encode_as_ovs_reads_them() -> None:
    """``ovs-ofctl ofp-print`` (3.1) reads these bytes as
    ``table:42 priority=100,ip actions=set_field:0x1->reg3,ct(commit,table=40,zone=19522,
    exec(move:NXM_NX_REG1[0..23]->NXM_NX_CT_LABEL[0..23],
    move:NXM_NX_REG0[0..30]->NXM_NX_CT_LABEL[24..54]))`` and
    ``table:41 priority=0,tcp actions=move:NXM_NX_REG4[]->NXM_OF_IP_SRC[],
    move:NXM_NX_REG5[0..15]->NXM_OF_TCP_SRC[],output:1`` (OF1.5 copy_field: OVS refuses
    NX reg_move in OpenFlow 1.5)."""
    ref = {
        (pl.CT_COMMIT, pl.PRIO_LEARN):
            "060e00a000000002a10000000000000000000000000000002a00000000000064ffffffffffffffff"
            "ffffffff000000000001000a80000a020800000000000000000400600000000000190010000106"
            "040000000100000000ffff00480000232000230001000000004c42280000000000001c00180018"
            "000000000000000102040001d81000000000001c0018001f000000180000000100040001d81000"
            "000000",
        (pl.CT_REV, pl.PRIO_MISS):
            "060e008800000002a10000000000000000000000000000002900000000000000ffffffffffffffff"
            "ffffffff000000000001000f80000a0208008000140106000004004800000000001c0018002000"
            "0000000000000108048000160400000000001c0018001000000000000000010a0480001a020000"
            "00000000001000000001ffe5000000000000",
    }
    flows = [f for f in pl.static_flows(pl.Ports(1, 2), conntrack=True)
             if (f.table, f.priority) in ref and ("ip_proto", 17) not in f.match]
    assert len(flows) == 2
    for f in flows:
        m = ofmsg.flow_mod(parser, ofp, f, ofp.OFPFC_ADD)
        m.datapath, m.xid = DP, 2
        m.serialize()
        assert bytes(m.buf).hex() == ref[(f.table, f.priority)]


def test_counter_poll_reads_the_drops_after_the_commit_in_conntrack_mode_only() -> None:
    """The counted flows after the commit (table CT_FWD: zone full, backend gone twice,
    backend gone and picked again) are read with conntrack pinning; learn has no such
    flows and no such request."""
    svc = Service(ServiceKey("13.13.13.13", "tcp", 80), "web", (Backend("10.0.1.2", 8080, 1),))
    learn = Config().with_service(svc)
    ct = replace(learn, settings=replace(learn.settings, session_pinning="conntrack"))

    def selected(cfg: Config) -> set[int]:
        return {ck for _, msg in ofmsg.counter_requests(cfg) for ck in pl.CT_AFTER_COMMIT_COOKIES
                if msg.table_id == pl.CT_FWD and ck & msg.cookie_mask == msg.cookie}

    assert selected(learn) == set()
    assert selected(ct) == set(pl.CT_AFTER_COMMIT_COOKIES)


def test_counter_poll_files_group_stats_by_every_groups_bucket_owners() -> None:
    """The group stats request comes first, its key holding each group's bucket owners;
    then the meter's."""
    web = Service(ServiceKey("13.13.13.13", "tcp", 80), "web",
                  (Backend("10.0.1.2", 8080, 1), Backend("10.0.1.3", 8080, 0)))
    dns = Service(ServiceKey("13.13.13.14", "udp", 53), "dns", (Backend("10.0.1.4", 53, 2),))
    cfg = Config().with_service(web).with_service(dns)
    (key, msg), (meter_key, meter) = ofmsg.group_and_meter_requests(parser, cfg)
    assert isinstance(msg, parser.OFPGroupStatsRequest) and key == ("groups", {
        svc.key.service_id: pl.bucket_owners(svc) for svc in (web, dns)})
    assert isinstance(meter, parser.OFPMeterStatsRequest) and meter_key == ("meter", None)


def test_bucket_owners_follow_each_change_of_a_service_between_polls() -> None:
    """Owners are derived again only for a service object the last poll did not see: a
    change (a backend added, a reweight, a removal) replaces the object, and the next
    poll files the group's buckets by the new owners; a deleted service's are gone."""
    web = Service(ServiceKey("13.13.13.13", "tcp", 80), "web",
                  (Backend("10.0.1.2", 8080, 1), Backend("10.0.1.3", 8080, 1)))
    dns = Service(ServiceKey("13.13.13.14", "udp", 53), "dns", (Backend("10.0.1.4", 53, 2),))
    cfg = Config().with_service(web).with_service(dns)

    memo = ofmsg.BucketOwners()  # the app keeps one across its polls

    def owners(c: Config) -> dict[int, list[int]]:
        return ofmsg.group_and_meter_requests(parser, c, memo)[0][0][1]

    assert owners(cfg) == {s.key.service_id: pl.bucket_owners(s) for s in (web, dns)}
    for backends in ((Backend("10.0.1.2", 8080, 1), Backend("10.0.1.3", 8080, 9)),
                     (Backend("10.0.1.2", 8080, 1), Backend("10.0.1.3", 8080, 9),
                      Backend("10.0.1.5", 8080, 3)),
                     (Backend("10.0.1.5", 8080, 3),)):
        before = pl.bucket_owners(web)
        web = replace(web, backends=backends)
        assert pl.bucket_owners(web) != before
        cfg = cfg.with_service(web)
        assert owners(cfg) == {s.key.service_id: pl.bucket_owners(s) for s in (web, dns)}
    cfg = cfg.without_service(dns.key)
    assert owners(cfg) == {web.key.service_id: pl.bucket_owners(web)}
    assert memo.by_service.keys() == {web.key.service_id}  # nor kept in memory


def test_aggregate_requests_are_the_bytes_os_kens_request_writes() -> None:
    for table, ck in ((pl.SESSION_REV, pl.cookie(pl.KIND_SESSION, 0x7FFFFFFF, 0xABCDEF)),
                      (pl.CLASSIFY, pl.vip_cookie(pl.KIND_FRAG, "13.13.13.13"))):
        ref = parser.OFPAggregateStatsRequest(None, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                              ck, pl.ALL_ONES, parser.OFPMatch())
        assert serialize(ofmsg.AggregateRequest(table, ck)) == serialize(ref)


def test_a_batch_is_the_bytes_of_its_messages_each_with_its_own_xid() -> None:
    echo = parser.OFPEchoRequest(DP, data=b"hi")
    agg = ofmsg.AggregateRequest(pl.SESSION_FWD, 5)
    echo.xid, agg.xid = 11, 12
    batch = ofmsg.Batch([echo, agg])
    batch.serialize()
    one, two = parser.OFPEchoRequest(DP, data=b"hi"), ofmsg.AggregateRequest(pl.SESSION_FWD, 5)
    one.xid, two.xid = 11, 12
    one.serialize()
    two.serialize()
    assert bytes(batch.buf) == bytes(one.buf) + bytes(two.buf)
    assert struct.unpack_from("!I", batch.buf, 4)[0] == 11


def test_a_poll_asks_for_every_backends_session_flows_but_the_idle_ones() -> None:
    web = Service(ServiceKey("13.13.13.13", "tcp", 80), "web",
                  (Backend("10.0.1.2", 8080, 1), Backend("10.0.1.3", 8080, 0)))
    cfg = Config().with_service(web)
    sid, (b1, b2) = web.key.service_id, (b.backend_id for b in web.backends)

    def sessions(cfg: Config, idle: frozenset = frozenset()) -> dict[Any, Any]:
        return {key[1]: msg for key, msg in ofmsg.counter_requests(cfg, idle)
                if key[0] == "session"}

    every = sessions(cfg)
    assert {k: (m.table_id, m.cookie) for k, m in every.items()} == {
        (sid, b, t): (t, pl.cookie(pl.KIND_SESSION, sid, b))
        for b in (b1, b2) for t in pl.SESSION_TABLES}
    assert set(sessions(cfg, frozenset({(sid, b1)}))) == {(sid, b2, t) for t in pl.SESSION_TABLES}
    others = [k for k, _ in ofmsg.counter_requests(cfg, frozenset({(sid, b1), (sid, b2)}))]
    assert others == [k for k, _ in ofmsg.counter_requests(cfg) if k[0] != "session"]
    assert {k[0] for k in others} == {"flows"}
    # conntrack pinning: a backend's flows are not learned, so none is ever idle; they
    # are read with the other flows lbrp installs
    ct = replace(cfg, settings=replace(cfg.settings, session_pinning="conntrack"))
    assert sessions(ct, frozenset({(sid, b1), (sid, b2)})) == {}


def test_flow_count_requests_ask_for_one_5_tuples_session_and_for_the_guard() -> None:
    """The RST check's and the guard's flow counts: aggregate requests with a match or a
    cookie, the same bytes as os-ken's encoder writes (fields in the pipeline's order)."""
    guard = ofmsg.AggregateRequest(pl.LEARN, pl.guard_cookie(1))
    assert serialize(guard) == serialize(parser.OFPAggregateStatsRequest(
        None, 0, pl.LEARN, ofp.OFPP_ANY, ofp.OFPG_ANY, pl.guard_cookie(1), pl.ALL_ONES,
        parser.OFPMatch()))
    match = pl.tcp_session_match("10.0.0.1", 40000, WEB.vip, WEB.port)
    req = ofmsg.AggregateRequest(pl.SESSION_FWD, 0, 0, match)
    raw = serialize(req)
    assert raw == serialize(parser.OFPAggregateStatsRequest(
        None, 0, pl.SESSION_FWD, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0,
        parser.OFPMatch(_ordered_fields=list(match))))
    assert struct.unpack_from("!BBHIHH", raw) == (
        ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REQUEST, len(raw), 7, ofp.OFPMP_AGGREGATE_STATS, 0)
    # table, out_port, out_group, cookie and mask (every session, whatever its backend)
    assert struct.unpack_from("!B3xII4xQQ", raw, 16) == (
        pl.SESSION_FWD, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0)
    assert dict(parser.OFPMatch.parser(raw, 48).items()) == {
        "eth_type": 0x800, "ip_proto": 6, "ipv4_src": "10.0.0.1", "ipv4_dst": WEB.vip,
        "tcp_src": 40000, "tcp_dst": WEB.port}


def flow_removed_bytes(stats: bytes, cookie: int = 0xA8123456789ABC) -> bytes:
    """An OFPT_FLOW_REMOVED as OVS sends one for a learned session flow."""
    match = parser.OFPMatch(eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.2",
                            ipv4_dst="13.13.13.13", tcp_src=40000, tcp_dst=8000,
                            tcp_flags=(0, 2))
    buf = bytearray(24)
    match.serialize(buf, 24)
    buf += stats
    struct.pack_into("!BBHIBBHHHQ", buf, 0, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED, len(buf),
                     7, pl.SESSION_FWD, ofp.OFPRR_IDLE_TIMEOUT, 100, 300, 0, cookie)
    return bytes(buf)


def oxs(field: int, fmt: str, *values: int) -> bytes:
    return struct.pack("!HBB" + fmt, ofp.OFPXSC_OPENFLOW_BASIC, field << 1,
                       struct.calcsize("!" + fmt), *values)


def stats_block(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return struct.pack("!HH", 0, 4 + len(body)) + body + bytes(-(4 + len(body)) % 8)


def test_flow_removed_decodes_as_os_kens_parser_does_and_its_match_on_demand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    known = stats_block(oxs(0, "II", 5, 7), oxs(1, "II", 1, 2), oxs(3, "I", 1),
                        oxs(4, "Q", 10), oxs(5, "Q", 1000))
    unknown = stats_block(oxs(0, "II", 5, 7), oxs(6, "Q", 99), oxs(4, "Q", 10))  # os-ken's
    os_kens_stats = parser.OFPStats.parser
    for stats in (known, unknown, b""):
        raw = flow_removed_bytes(stats)
        want = parser.OFPFlowRemoved.parser(DP, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED,
                                            len(raw), 7, raw)
        with monkeypatch.context() as m:
            if stats is known:  # every field decoded by hand, none left to os-ken
                m.setattr(parser.OFPStats, "parser", None)
            got = ofmsg.OFPFlowRemoved.parser(DP, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED,
                                              len(raw), 7, raw)
        assert parser.OFPStats.parser == os_kens_stats
        for attr in ("version", "msg_type", "msg_len", "xid", "table_id", "reason",
                     "priority", "idle_timeout", "hard_timeout", "cookie"):
            assert getattr(got, attr) == getattr(want, attr), attr
        if stats:
            assert got.stats.fields == want.stats.fields
            assert got.stats.length == want.stats.length
        else:
            assert got.stats is None and want.stats is None
        assert got._match is None  # not decoded until read
        assert got.match.to_jsondict() == want.match.to_jsondict()
    assert got.cookie == 0xA8123456789ABC and got.table_id == pl.SESSION_FWD


def test_the_fast_flow_removed_decoder_reaches_the_app_as_os_kens_event() -> None:
    from os_ken.controller import ofp_event
    from os_ken.ofproto import ofproto_parser

    ofmsg.decode_flow_removed_fast()
    ofmsg.decode_flow_removed_fast()  # idempotent
    raw = flow_removed_bytes(stats_block(oxs(0, "II", 5, 7), oxs(4, "Q", 10), oxs(5, "Q", 1000)))
    msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED, len(raw), 7, raw)
    assert type(msg) is ofmsg.OFPFlowRemoved
    assert isinstance(ofp_event.ofp_msg_to_ev(msg), ofp_event.EventOFPFlowRemoved)
    assert (msg.stats.get("packet_count"), msg.stats.get("byte_count")) == (10, 1000)


def test_a_bundles_adds_are_the_bytes_os_kens_bundle_add_messages_write() -> None:
    """Every message of a switch's programming, in one BundleAdds, is what os-ken's
    OFPBundleAddMsg writes for it, message by message, each with the BundleAdds' xid."""
    cfg = Config().with_service(Service(WEB, "web", (Backend("10.0.1.2", 8002, 3),
                                                      Backend("10.0.1.3", 8003, 0))))
    for pinning in ("learn", "conntrack"):
        c = replace(cfg, settings=replace(cfg.settings, session_pinning=pinning))
        msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(c, pl.Ports(1, 2)))
        assert {type(m) for m in msgs} == {parser.OFPFlowMod, parser.OFPGroupMod, ofmsg.Encoded}
        adds = ofmsg.BundleAdds(9, 3, msgs)
        assert len(adds) == len(msgs)
        raw = serialize(adds)  # xid 7
        expected = b""
        for m in ofmsg.reconcile_messages(parser, ofp, pl.desired_state(c, pl.Ports(1, 2))):
            inner = ofmsg.encoded(m)  # os-ken's own message, or our encoding of a flow mod
            inner.datapath = DP
            ref = parser.OFPBundleAddMsg(DP, 9, 3, inner, [])
            expected += serialize(ref)
        assert raw == expected
        # each add: its header, the bundle, then the message (same xid), which os-ken reads
        at = n = 0
        while at < len(raw):
            _, kind, length, xid, bid, flags = struct.unpack_from("!BBHII2xH", raw, at)
            inner = raw[at + 16:at + length]
            assert (kind, xid, bid, flags) == (ofp.OFPT_BUNDLE_ADD_MESSAGE, 7, 9, 3)
            assert struct.unpack_from("!BxHI", inner) == (ofp.OFP_VERSION, len(inner), 7)
            if pinning == "learn":  # os-ken cannot read back its own copy_field (conntrack)
                assert parser.msg_parser(DP, ofp.OFP_VERSION, inner[1], len(inner), 7, inner)
            at, n = at + length, n + 1
        assert n == len(msgs)


def multipart_reply_bytes(kind: int, body: bytes, flags: int = 0) -> bytes:
    """A multipart reply of type ``kind`` as OVS sends one (xid 7)."""
    body = struct.pack("!HH4x", kind, flags) + body
    return struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, 8 + len(body),
                       7) + body


def aggregate_reply_bytes(stats: bytes, flags: int = 0) -> bytes:
    """An OFPMP_AGGREGATE_STATS reply as OVS sends one."""
    return multipart_reply_bytes(ofp.OFPMP_AGGREGATE_STATS, stats, flags)


def test_aggregate_replies_decode_as_os_kens_parser_does_and_reach_the_app() -> None:
    """The counts OVS sends (flow_count, packet_count, byte_count), OXS fields os-ken
    knows but lbrp does not ask for, and one it does not know: the same message as
    os-ken's parser gives, and os-ken's event; other multipart replies stay os-ken's."""
    from os_ken.controller import ofp_event
    from os_ken.ofproto import ofproto_parser

    osken = ofmsg._OS_KEN_MULTIPART_REPLY
    ofmsg.decode_multipart_replies_fast()
    ofmsg.decode_multipart_replies_fast()  # idempotent
    for stats in (stats_block(oxs(3, "I", 5), oxs(4, "Q", 10), oxs(5, "Q", 1000)),
                  stats_block(oxs(0, "II", 5, 7), oxs(3, "I", 0), oxs(4, "Q", 0),
                              oxs(5, "Q", 0)),
                  stats_block(oxs(3, "I", 2**32 - 1), oxs(4, "Q", 2**64 - 1)),
                  stats_block(oxs(3, "I", 1), oxs(9, "I", 4))):  # 9: not an OXS field
        raw = aggregate_reply_bytes(stats, flags=1)
        msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 7, raw)
        ref = osken(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 7, raw)
        assert type(msg) is ofmsg.OFPAggregateStatsReply
        assert isinstance(ofp_event.ofp_msg_to_ev(msg), ofp_event.EventOFPAggregateStatsReply)
        assert (msg.xid, msg.type, msg.flags, msg.body.length) == (
            ref.xid, ref.type, ref.flags, ref.body.length)
        assert dict(msg.body.stats.items()) == dict(ref.body.stats.items())
    # a meter stats reply (a poll's, too) is os-ken's own
    raw = struct.pack("!BBHIHH4x", ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, 16, 9,
                      ofp.OFPMP_METER_STATS, 0)
    msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 9, raw)
    assert type(msg) is parser.OFPMeterStatsReply and msg.body == []


def test_group_stats_replies_decode_each_buckets_counts_as_os_kens_parser_does() -> None:
    """Groups of one to three buckets, counters up to 2**64 - 1, as OVS writes them
    (ofp_group_stats, then a counter per bucket): each group's id and its buckets'
    (packets, bytes) in order, as os-ken's parser reads them, and os-ken's event."""
    from os_ken.controller import ofp_event
    from os_ken.ofproto import ofproto_parser

    ofmsg.decode_multipart_replies_fast()
    groups = [(0x7FFFFFFF, [(2**64 - 1, 2**63)]), (5, [(1, 60), (0, 0), (7, 420)]),
              (123456, [(3, 180), (4, 240)]), (9, [])]
    body = b"".join(struct.pack("!H2xII4xQQII", 40 + 16 * len(b), gid, 1, 99, 9999, 3, 4)
                    + b"".join(struct.pack("!QQ", *c) for c in b) for gid, b in groups)
    raw = multipart_reply_bytes(ofp.OFPMP_GROUP_STATS, body, flags=1)
    msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 7, raw)
    ref = ofmsg._OS_KEN_MULTIPART_REPLY(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                                        len(raw), 7, raw)
    assert type(msg) is ofmsg.OFPGroupStatsReply
    assert isinstance(ofp_event.ofp_msg_to_ev(msg), ofp_event.EventOFPGroupStatsReply)
    assert (msg.xid, msg.type, msg.flags) == (7, ofp.OFPMP_GROUP_STATS, 1)
    assert msg.body == [(gid, tuple(b)) for gid, b in groups]
    assert msg.body == [(g.group_id, tuple((c.packet_count, c.byte_count)
                                           for c in g.bucket_stats)) for g in ref.body]


def test_flow_desc_requests_are_the_bytes_os_kens_request_writes() -> None:
    mask = (0xFF << 56) | (7 << 24)
    ref = parser.OFPFlowDescStatsRequest(None, 0, pl.CT_REV, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         pl.cookie(pl.KIND_BACKEND, 5), mask, parser.OFPMatch())
    assert serialize(ofmsg.FlowDescRequest(pl.CT_REV, pl.cookie(pl.KIND_BACKEND, 5), mask)) \
        == serialize(ref)


def big_config(mode: str, services: int = 700) -> Config:
    cfg = Config()
    for i in range(services):
        vip = f"13.13.{i // 200}.{i % 200 + 1}"
        cfg = cfg.with_service(Service(ServiceKey(vip, "udp" if i % 5 == 0 else "tcp", 80), "",
                                       tuple(Backend(f"10.1.{i // 200}.{i % 200 + 1}", 8000 + b)
                                             for b in range(3))))
    return replace(cfg, settings=replace(cfg.settings, session_pinning=mode))


@pytest.mark.parametrize("mode", ["learn", "conntrack"])
def test_a_polls_flow_desc_requests_select_each_counted_flow_once_a_few_hundred_at_a_time(
        mode: str) -> None:
    """Every installed flow the poll counts (classifier, drops, conntrack's forwarding
    flows after ct() and checks after the commit) is selected by exactly one flow-desc
    request, and no request selects many more than FLOWS_PER_DESC flows."""
    cfg = big_config(mode)
    state = pl.desired_state(cfg, pl.Ports(1, 2))
    counted = {(pl.CLASSIFY, pl.KIND_SERVICE), (pl.CLASSIFY, pl.KIND_FRAG)}
    if mode == "conntrack":
        counted |= {(pl.CT_FWD, pl.KIND_NOT_SYN), (pl.CT_FWD, pl.KIND_BACKEND),
                    (pl.CT_REV, pl.KIND_BACKEND), (pl.CT_FWD, pl.KIND_CT_AFTER_COMMIT)}
    else:
        counted.add((pl.SERVICE, pl.KIND_NOT_SYN))
    flows = [f for f in state.flows.values()
             if (f.table, (pl.decode_cookie(f.cookie) or (None,))[0]) in counted]
    requests = [m for k, m in ofmsg.counter_requests(cfg) if k[0] == "flows"]
    assert all(isinstance(m, ofmsg.FlowDescRequest) for m in requests)
    picked = {id(m): 0 for m in requests}
    for f in flows:
        by = [m for m in requests
              if m.table_id == f.table and f.cookie & m.cookie_mask == m.cookie]
        assert len(by) == 1, (f, by)
        picked[id(by[0])] += 1
    assert max(picked.values()) <= 2 * ofmsg.FLOWS_PER_DESC
    assert len(requests) < len(flows) / 100  # a few requests, not one per flow
    assert {(f.table, pl.decode_cookie(f.cookie)[0]) for f in flows} == counted


def flow_desc_reply_bytes(entries: list[bytes], flags: int = 0) -> bytes:
    return multipart_reply_bytes(ofp.OFPMP_FLOW_DESC, b"".join(entries), flags)


@pytest.mark.parametrize("mode", ["learn", "conntrack"])
def test_flow_desc_replies_decode_each_flows_table_cookie_and_counts_and_reach_the_app(
        mode: str) -> None:
    """Every flow lbrp installs, in a flow-desc reply as OVS writes one (the flow's
    match, its counts among other OXS fields, its instructions): its table, cookie and
    counts, as os-ken's event. os-ken's own parser reads the same where it can parse the
    flows at all (it cannot parse conntrack mode's ct() with nested actions)."""
    from os_ken.controller import ofp_event
    from os_ken.ofproto import ofproto_parser

    ofmsg.decode_multipart_replies_fast()
    state = pl.desired_state(big_config(mode, 20), pl.Ports(1, 2))
    entries, want = [], []
    for n, f in enumerate(state.flows.values()):
        packets, nbytes = n * 7, n * 900 + 2**40
        stats = (stats_block(oxs(0, "II", 5, 7), oxs(1, "II", 1, 2), oxs(3, "I", 1),
                             oxs(4, "Q", packets), oxs(5, "Q", nbytes))
                 if n % 3 else stats_block(oxs(4, "Q", packets), oxs(5, "Q", nbytes)))
        rest = ofmsg._match_bytes(ofp, f.match) + stats \
            + ofmsg._instruction_bytes(parser, ofp, f.actions)
        entries.append(struct.pack("!H2xBxHHHHHQ", 24 + len(rest), f.table, f.priority, 0, 0,
                                   0, 0, f.cookie) + rest)
        want.append((f.table, f.cookie, packets, nbytes))
    assert len(entries) > 80
    for part, expected in ((entries[:40], want[:40]), (entries[40:], want[40:])):
        raw = flow_desc_reply_bytes(part, flags=1)
        msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 7, raw)
        assert type(msg) is ofmsg.OFPFlowDescStatsReply
        assert isinstance(ofp_event.ofp_msg_to_ev(msg), ofp_event.EventOFPFlowDescStatsReply)
        assert (msg.xid, msg.type, msg.flags) == (7, ofp.OFPMP_FLOW_DESC, 1)
        assert msg.body == expected
        if mode == "learn":
            ref = ofmsg._OS_KEN_MULTIPART_REPLY(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                                                len(raw), 7, raw)
            assert msg.body == [(d.table_id, d.cookie, d.stats.get("packet_count", 0),
                                 d.stats.get("byte_count", 0)) for d in ref.body]


def test_a_reconcile_purges_stale_sessions_in_both_session_tables() -> None:
    c = Config().with_service(Service(WEB, "web", (Backend("10.0.1.2", 8002, 3),)))
    stale = [(pl.cookie(pl.KIND_SESSION, 7, 9), pl.ALL_ONES)]
    msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(c, pl.Ports(1, 2)), stale)
    purges = [(m.table_id, m.cookie, m.cookie_mask) for m in msgs
              if isinstance(m, parser.OFPFlowMod) and m.command == ofp.OFPFC_DELETE
              and m.cookie_mask == pl.ALL_ONES]
    assert purges == [(t, *stale[0]) for t in pl.SESSION_TABLES]
    # what the switch is asked for: its LEARN table's backend flows, by kind
    reqs = ofmsg.learn_backend_requests(3)
    assert [(r.table_id, r.cookie >> 56, r.cookie_mask >> 56) for r in reqs] == [
        (pl.LEARN, pl.cookie(pl.KIND_BACKEND) >> 56, 0xFF)]
