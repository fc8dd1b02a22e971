"""Desired flows and groups from state, and minimal diffs (pure, no switch)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace

import pytest

from lbrp_app import pipeline as pl
from lbrp_app.model import Backend, Config, Service, ServiceKey, Settings, parse_config

PORTS = pl.Ports(frontend=1, backend=2)
WEB = ServiceKey("13.13.13.13", "tcp", 8000)
DNS = ServiceKey("13.13.13.13", "udp", 8000)
B1, B2, B3 = Backend("10.0.1.2", 8002, 10), Backend("10.0.1.3", 8003, 100), \
    Backend("10.0.1.4", 8004, 1)


def cfg(*services: Service) -> Config:
    c = Config()
    for s in services:
        c = c.with_service(s)
    return c


def flows_of(state: pl.State, table: int) -> list[pl.Flow]:
    return [f for f in state.flows.values() if f.table == table]


def test_empty_config_is_pass_through_only() -> None:
    st = pl.desired_state(Config(), PORTS)
    assert st.groups == {}
    table0 = {f.match: f.actions for f in flows_of(st, pl.CLASSIFY)}
    assert table0[(("in_port", 1),)] == (pl.Output(2),)
    assert table0[(("in_port", 2),)] == (pl.Output(1),)
    assert table0[()] == ()  # anything else (LOCAL) is dropped
    assert all(pl.decode_cookie(f.cookie)[0] == pl.KIND_STATIC for f in st.flows.values())


def test_service_programs_classifier_group_and_learn_flows() -> None:
    st = pl.desired_state(cfg(Service(WEB, "web", (B1, B2, B3))), PORTS)
    sid = WEB.service_id
    group = st.groups[sid]
    per_backend: dict[int, int] = {}
    for bucket in group.buckets:
        per_backend[bucket.backend_id] = per_backend.get(bucket.backend_id, 0) + bucket.weight
        assert pl.SetField(pl.REG_BACKEND, bucket.backend_id) in bucket.actions
        assert bucket.actions[-1] == pl.Resubmit(pl.LEARN)
    total = sum(per_backend.values())
    for be in (B1, B2, B3):
        assert abs(per_backend[be.backend_id] / total - be.weight / 111) < 0.005
    svc_flows = flows_of(st, pl.SERVICE)
    syn = [f for f in svc_flows if ("tcp_flags", (pl.TCP_SYN, pl.TCP_SYN_MASK)) in f.match]
    assert len(syn) == 1 and syn[0].actions == (pl.GroupAction(sid),)
    # a non-SYN with no session is never balanced mid-stream: the app answers it (RST)
    not_syn = [f for f in svc_flows if f.priority == pl.PRIO_NOT_SYN]
    assert len(not_syn) == 1
    assert not_syn[0].actions == (pl.Meter(pl.PACKET_IN_METER), pl.Controller())
    assert pl.decode_cookie(not_syn[0].cookie)[:2] == (pl.KIND_NOT_SYN, sid)
    learn = {f.match: f for f in flows_of(st, pl.LEARN) if f.priority == pl.PRIO_LEARN}
    assert len(learn) == 3
    f = learn[(("eth_type", 0x800), ("ip_proto", 6), ("reg0", sid), ("reg1", B1.backend_id))]
    assert pl.SetField("ipv4_dst", "10.0.1.2") in f.actions
    assert pl.SetField("tcp_dst", 8002) in f.actions
    learns = [a for a in f.actions if isinstance(a, pl.Learn)]
    assert [lr.table for lr in learns] == [pl.SESSION_FWD, pl.SESSION_REV]
    assert all(lr.cookie == pl.session_cookie(WEB, B1)[0] for lr in learns)
    assert learns[0].fin_idle_timeout == 12 and learns[0].idle_timeout == 300
    # the switch is asked for a session by the fields the forward learned flow matches;
    # no TCP flags among them: LEARN's lookup finds a SYN's session there
    matched = {dst[0] for kind, _, dst, _ in learns[0].specs if kind == "match"}
    asked = dict(pl.tcp_session_match("10.0.0.1", 40000, WEB.vip, WEB.port))
    assert matched == set(asked)
    assert (asked["ipv4_dst"], asked["tcp_dst"]) == (WEB.vip, WEB.port)
    assert f.actions[-1] == pl.Output(2)


def test_udp_has_no_syn_logic_and_uses_udp_fields() -> None:
    st = pl.desired_state(cfg(Service(DNS, "", (Backend("10.0.1.2", 9000),))), PORTS)
    svc_flows = flows_of(st, pl.SERVICE)
    assert [f.priority for f in svc_flows if f.cookie != pl.cookie(pl.KIND_STATIC)] == [200]
    learn = next(f for f in flows_of(st, pl.LEARN) if f.priority == pl.PRIO_LEARN)
    assert pl.SetField("udp_dst", 9000) in learn.actions
    lr = next(a for a in learn.actions if isinstance(a, pl.Learn))
    assert lr.fin_idle_timeout == 0 and lr.idle_timeout == 60


def test_weight_zero_backends_are_left_out_of_the_group() -> None:
    svc = Service(WEB, "", (Backend("10.0.1.2", 8002, 0), Backend("10.0.1.3", 8003, 3)))
    st = pl.desired_state(cfg(svc), PORTS)
    assert {b.backend_id for b in st.groups[WEB.service_id].buckets} == {
        Backend("10.0.1.3", 8003).backend_id}
    # the drained backend keeps its learn flow (harmless) so its sessions stay valid
    assert len([f for f in flows_of(st, pl.LEARN) if f.priority == pl.PRIO_LEARN]) == 2


def test_no_usable_backend_rejects_through_the_controller() -> None:
    for backends in ((), (Backend("10.0.1.2", 8002, 0),)):
        st = pl.desired_state(cfg(Service(WEB, "", backends)), PORTS)
        new = next(f for f in flows_of(st, pl.SERVICE) if f.priority == pl.PRIO_SERVICE)
        assert new.actions == (pl.Meter(pl.PACKET_IN_METER), pl.Controller())
        assert pl.decode_cookie(new.cookie) == (pl.KIND_REJECT, WEB.service_id, 0)
        assert st.groups[WEB.service_id].buckets == ()


def test_vip_flows_once_per_vip() -> None:
    st = pl.desired_state(cfg(Service(WEB), Service(DNS)), PORTS)
    echo = [f for f in flows_of(st, pl.CLASSIFY) if f.priority == pl.PRIO_ECHO]
    frag = [f for f in flows_of(st, pl.CLASSIFY) if f.priority == pl.PRIO_FRAG]
    assert len(echo) == 1 and len(frag) == 1
    assert frag[0].actions == ()
    assert ("ip_frag", (1, 1)) in frag[0].match


def test_diff_of_identical_states_is_empty() -> None:
    c = cfg(Service(WEB, "", (B1, B2)))
    assert not pl.diff(pl.desired_state(c, PORTS), pl.desired_state(c, PORTS))


def test_adding_a_backend_touches_only_its_flow_and_the_group() -> None:
    old = cfg(Service(WEB, "", (B1, B2)))
    new = cfg(Service(WEB, "", (B1, B2, B3)))
    d = pl.diff(pl.desired_state(old, PORTS), pl.desired_state(new, PORTS),
                pl.purged_sessions(old, new))
    assert len(d.add_flows) == 1 and d.add_flows[0].table == pl.LEARN
    assert [g.group_id for g in d.modify_groups] == [WEB.service_id]
    assert not (d.delete_flows or d.modify_flows or d.add_groups or d.delete_groups)
    assert d.purge_sessions == ()  # established sessions are untouched


def test_reweight_touches_only_the_group() -> None:
    old = cfg(Service(WEB, "", (B1, B2)))
    new = cfg(Service(WEB, "", (B1, Backend(B2.ip, B2.port, 0))))
    d = pl.diff(pl.desired_state(old, PORTS), pl.desired_state(new, PORTS),
                pl.purged_sessions(old, new))
    assert len(d.modify_groups) == 1 and not d.add_flows and not d.delete_flows
    assert d.purge_sessions == ()  # draining keeps sessions


def test_removing_a_backend_purges_exactly_its_sessions() -> None:
    old = cfg(Service(WEB, "", (B1, B2)))
    new = cfg(Service(WEB, "", (B1,)))
    d = pl.diff(pl.desired_state(old, PORTS), pl.desired_state(new, PORTS),
                pl.purged_sessions(old, new))
    assert [f.table for f in d.delete_flows] == [pl.LEARN]
    assert d.purge_sessions == (pl.Purge(WEB, B2),)
    assert d.purge_sessions[0].cookie_mask() == pl.session_cookie(WEB, B2)


def test_removing_the_last_backend_switches_to_reject() -> None:
    old = cfg(Service(WEB, "", (B1,)))
    new = cfg(Service(WEB, "", ()))
    d = pl.diff(pl.desired_state(old, PORTS), pl.desired_state(new, PORTS))
    # the cookie changes (service -> reject), which a modify cannot do: replaced by an add
    assert not d.modify_flows
    assert [f.actions for f in d.add_flows] == [(pl.Meter(1), pl.Controller())]


def test_deleting_a_service_removes_all_it_owns() -> None:
    old = cfg(Service(WEB, "", (B1,)), Service(DNS, "", (Backend("10.0.1.2", 9000),)))
    new = cfg(Service(DNS, "", (Backend("10.0.1.2", 9000),)))
    d = pl.diff(pl.desired_state(old, PORTS), pl.desired_state(new, PORTS),
                pl.purged_sessions(old, new))
    assert d.delete_groups == (WEB.service_id,)
    assert {pl.decode_cookie(f.cookie)[1] for f in d.delete_flows} == {WEB.service_id}
    assert d.purge_sessions == (pl.Purge(WEB),)
    assert d.purge_sessions[0].cookie_mask() == pl.service_sessions_cookie(WEB)
    # the VIP still has a service: its echo/fragment flows stay
    assert not [f for f in d.delete_flows if f.priority in (pl.PRIO_ECHO, pl.PRIO_FRAG)]


def test_cookie_masks_separate_sessions_from_own_flows() -> None:
    own = pl.cookie(pl.KIND_SERVICE, WEB.service_id)
    sess = pl.session_cookie(WEB, B1)[0]
    assert own & pl.OWN_FLOWS_MASK == pl.OWN_FLOWS_COOKIE
    assert sess & pl.OWN_FLOWS_MASK != pl.OWN_FLOWS_COOKIE
    ck, mask = pl.service_sessions_cookie(WEB)
    assert sess & mask == ck
    other = pl.session_cookie(DNS, B1)[0]
    assert other & mask != ck
    assert pl.decode_cookie(0x1234) is None


def test_config_parse_then_state_is_deterministic() -> None:
    doc = {"services": [{"vip": "13.13.13.13", "proto": "tcp", "port": 8000,
                         "backends": [{"ip": "10.0.1.2", "port": 8002}]}]}
    a = pl.desired_state(parse_config(doc), PORTS)
    b = pl.desired_state(parse_config(doc), PORTS)
    assert a == b


def test_conntrack_pinning_commits_with_a_label_and_rewrites_both_ways_without_nat() -> None:
    c = Config(settings=replace(Config().settings, session_pinning="conntrack"))
    c = c.with_service(Service(WEB, "", (B1, B2)))
    st = pl.desired_state(c, PORTS)
    assert not flows_of(st, pl.LEARN) and not flows_of(st, pl.SESSION_FWD)
    classify = next(f for f in flows_of(st, pl.CLASSIFY) if f.priority == pl.PRIO_SERVICE)
    assert classify.actions == (pl.Conntrack(pl.CT_ZONE, table=pl.CT_FWD),)
    fwd = {(f.priority, f.match): f.actions for f in flows_of(st, pl.CT_FWD)}
    new = next(f for f in flows_of(st, pl.CT_FWD) if f.priority == pl.PRIO_SERVICE)
    assert ("ct_state", pl.CT_NEW) in new.match and new.actions == (pl.GroupAction(
        WEB.service_id),)
    # one flow commits every new connection, labels it from the bucket's registers and
    # comes back to CT_FWD, marked as committed
    (commit,) = [f for f in flows_of(st, pl.CT_COMMIT) if f.priority == pl.PRIO_LEARN]
    label = pl.ct_label(WEB, B1)
    assert commit.actions == (pl.SetField(pl.REG_COMMITTED, 1), pl.Conntrack(
        pl.CT_ZONE, table=pl.CT_FWD, commit=True, exec=(
            pl.Move(pl.REG_BACKEND, "ct_label", 24),
            pl.Move(pl.REG_SERVICE, "ct_label", 31, dst_ofs=24))))
    assert label == (WEB.service_id << 24) | B1.backend_id and WEB.service_id < 1 << 31
    # a labelled connection (new or established) is rewritten to its backend...
    assert fwd[(pl.PRIO_CT_EST, (("ct_state", pl.CT_ORIG), ("ct_label", label),
                                 ("eth_type", pl.ETH_IP), ("ip_proto", 6)))] == (
        pl.SetField("ipv4_dst", "10.0.1.2"), pl.SetField("tcp_dst", 8002), pl.Output(2))
    # ...and a committed packet that none of those serves is not sent on: no connection
    # (label 0) means the zone was full (dropped); a label that no flow above serves, a
    # backend removed as the session began: the packet goes through the group again, as
    # a new connection not yet committed (reg3=0), once (reg7=1); then it is dropped
    assert fwd[(pl.PRIO_CT_FULL, ((pl.REG_COMMITTED, 1), ("ct_label", 0)))] == ()
    assert fwd[(pl.PRIO_CT_REPICK, ((pl.REG_COMMITTED, 1),))] == (
        pl.SetField(pl.REG_REPICKED, 1), pl.SetField(pl.REG_COMMITTED, 0),
        pl.Resubmit(pl.CT_FWD))
    assert fwd[(pl.PRIO_CT_GONE, ((pl.REG_COMMITTED, 1), (pl.REG_REPICKED, 1)))] == ()
    # a TCP non-SYN of no connection (or a purged one) goes to the app for a RST; an
    # invalid one (e.g. SYN+FIN) is dropped, as it may be crafted on a live connection's
    # tuple. Both are counted under one cookie.
    l4 = (("eth_type", pl.ETH_IP), ("ip_proto", 6), ("ipv4_dst", WEB.vip), ("tcp_dst", WEB.port))
    assert fwd[(pl.PRIO_NOT_SYN, (("ct_state", pl.CT_ORIG),) + l4)] == (
        pl.Meter(pl.PACKET_IN_METER), pl.Controller())
    assert fwd[(pl.PRIO_CT_INVALID, l4)] == ()
    assert pl.PRIO_CT_INVALID < pl.PRIO_NOT_SYN < pl.PRIO_SERVICE
    assert {pl.decode_cookie(f.cookie)[0] for f in flows_of(st, pl.CT_FWD)
            if f.priority in (pl.PRIO_NOT_SYN, pl.PRIO_CT_INVALID)} == {pl.KIND_NOT_SYN}
    assert (pl.PRIO_SERVICE < pl.PRIO_CT_REPICK < pl.PRIO_CT_GONE < pl.PRIO_CT_FULL
            < pl.PRIO_CT_EST)
    assert {pl.REG_REPICKED, pl.REG_COMMITTED}.isdisjoint(m for m, _ in new.match)
    # UDP: any flow to the service that no backend flow serves goes to the group (a new
    # one, or one committed to a backend as its removal purged it); TCP: new SYNs only
    udp = c.with_service(Service(DNS, "", (B1,)))
    (to_group,) = [f for f in flows_of(pl.desired_state(udp, PORTS), pl.CT_FWD)
                   if f.priority == pl.PRIO_SERVICE and ("ip_proto", 17) in f.match]
    assert ("ct_state", pl.CT_ORIG) in to_group.match and ("ct_state", pl.CT_NEW) in new.match
    # replies: the source becomes the VIP before the lookup, and goes back if not ours
    rev_in = [f for f in flows_of(st, pl.CLASSIFY) if ("ipv4_src", "10.0.1.2") in f.match]
    assert [f.actions for f in rev_in] == [(
        pl.SetField(pl.REG_REPLY_IP, 0x0A000102), pl.SetField(pl.REG_REPLY_PORT, 8002),
        pl.SetField("ipv4_src", WEB.vip), pl.SetField("tcp_src", WEB.port),
        pl.Conntrack(pl.CT_ZONE, table=pl.CT_REV))]
    assert dict(rev_in[0].match) == {"in_port": 2, "eth_type": pl.ETH_IP, "ip_proto": 6,
                                     "ipv4_src": "10.0.1.2", "tcp_src": 8002}
    rev = {(f.priority, f.match): f.actions for f in flows_of(st, pl.CT_REV)}
    assert rev[(pl.PRIO_CT_EST, (("ct_state", pl.CT_EST_REPLY), ("ct_label", label),
                                 (pl.REG_REPLY_IP, 0x0A000102), (pl.REG_REPLY_PORT, 8002)))] == (
        pl.Output(1),)
    assert rev[(pl.PRIO_MISS, (("eth_type", pl.ETH_IP), ("ip_proto", 17)))] == (
        pl.Move(pl.REG_REPLY_IP, "ipv4_src", 32), pl.Move(pl.REG_REPLY_PORT, "udp_src", 16),
        pl.Output(1))
    assert not [f for f in flows_of(st, pl.CT_REV) if f.priority == pl.PRIO_CT_RETRY]
    assert all(b.actions[-1] == pl.Resubmit(pl.CT_COMMIT)
               for b in st.groups[WEB.service_id].buckets)
    assert not [a for f in st.flows.values() for a in f.actions
                if isinstance(a, pl.Conntrack) and a.commit and a.table != pl.CT_FWD]


def test_a_backend_address_serving_several_services_tries_each_service_in_turn() -> None:
    """Conntrack pinning: one reply flow per backend address and protocol; the reply is
    looked up as each of the address's services' in service order until one has it."""
    other = ServiceKey("13.13.13.14", "tcp", 80)
    c = Config(settings=Settings(session_pinning="conntrack"))
    c = c.with_service(Service(WEB, "", (B1,))).with_service(Service(other, "", (B1, B2)))
    c = c.with_service(Service(DNS, "", (B1,)))  # another protocol: another address
    st = pl.desired_state(c, PORTS)
    rev_in = [f for f in flows_of(st, pl.CLASSIFY) if ("ipv4_src", B1.ip) in f.match]
    assert sorted(dict(f.match)["ip_proto"] for f in rev_in) == [6, 17]
    tcp_in = next(f for f in rev_in if ("ip_proto", 6) in f.match)
    first, second = sorted((WEB, other), key=ServiceKey.sort_key)
    assert pl.SetField("ipv4_src", first.vip) in tcp_in.actions
    assert tcp_in.cookie == pl.address_cookie(B1.ip, B1.port)
    retries = [f for f in flows_of(st, pl.CT_REV) if f.priority == pl.PRIO_CT_RETRY]
    assert len(retries) == 1  # two TCP services, one retry; the UDP address has one service
    assert dict(retries[0].match)[pl.REG_TRIED] == 0
    assert retries[0].actions == (
        pl.SetField("ipv4_src", second.vip), pl.SetField("tcp_src", second.port),
        pl.SetField(pl.REG_TRIED, 1), pl.CtClear(), pl.Conntrack(pl.CT_ZONE, table=pl.CT_REV))
    # B2 serves one service: no retry
    assert not [f for f in retries if (pl.REG_REPLY_IP, 0x0A000103) in f.match]


def ovs_slots(weights: list[int]) -> list[int] | None:
    """OVS 3.1's dp_hash table: MAX(16, pow2(ceil(total/min))) slots, filled by Webster's
    method (highest weight / (2 * slots + 1) next); None where that is over 256 slots and
    OVS leaves dp_hash (``group_setup_dp_hash_table``)."""
    total, lo = sum(weights), min(w for w in weights if w)
    n = 16
    while n < -(-total // lo):
        n *= 2
    if n > 256:
        return None
    slots = [0] * len(weights)
    for _ in range(n):
        i = max(range(len(weights)), key=lambda j: weights[j] / (2 * slots[j] + 1))
        slots[i] += 1
    return slots


def _shares(weights: list[int] | tuple[int, ...]) -> list[float]:
    """Each backend's share of the hash slots OVS gives bucket_weights' buckets."""
    backends = tuple(Backend(f"10.{i // 250}.{i % 250}.2", 80, w) for i, w in enumerate(weights))
    buckets = pl.bucket_weights(backends)
    assert sum(w for _, w, _ in buckets) == 256 and min(w for _, w, _ in buckets) == 1
    assert len({bid for _, _, bid in buckets}) == len(buckets)  # bucket ids unique
    slots = ovs_slots([w for _, w, _ in buckets])
    assert slots == [w for _, w, _ in buckets]  # Webster's method gives each its weight
    per = dict.fromkeys(backends, 0)
    for (be, _, _), n in zip(buckets, slots, strict=True):
        per[be] += n
    return [per[be] / 256 for be in backends]


@pytest.mark.parametrize("weights", [
    (1, 1, 1), (10, 100, 1), (3, 7), (1,), (5, 5, 5, 5, 1), (65535, 1), (1, 2, 3, 4, 5, 6, 7, 8),
    # one heavy backend and many light ones: a floor of one slot each gave the heavy one
    # 193 of 256 slots (75 %) against a 94 % share for 1000 + 63 x 1
    (1000, *[1] * 63), (10000, *[10] * 20), (*[1000] * 4, *[1] * 60), (1000, *[1] * 10),
    (100, *[1] * 200),  # past 128 backends, where the weights were given to OVS as they are
    (1,) * 300, (7,) * 257])  # past 256: some backends must get no slot
def test_bucket_weights_give_every_backend_its_share_within_half_a_point(
        weights: tuple[int, ...]) -> None:
    total = sum(weights)
    for share, w in zip(_shares(weights), weights, strict=True):
        assert abs(share - w / total) <= pl.SPLIT_PRECISION, (w, share)


@pytest.mark.parametrize("weights", [(1, 1000), (1, 100, 1000), (65535, 1), (1,) * 256])
def test_every_backend_gets_new_sessions_where_that_stays_precise(
        weights: tuple[int, ...]) -> None:
    """A canary of weight 1 against 1,000 gets its one slot (0.39 % against 0.1 %)."""
    assert all(_shares(weights))


def test_a_backend_goes_without_new_sessions_only_where_precision_needs_it() -> None:
    shares = _shares((1000, *[1] * 63))  # a slot each would leave the 1000 at 75 %
    assert abs(shares[0] - 1000 / 1063) <= 1 / 256
    assert 0 < sum(1 for x in shares[1:] if x) < 63


def test_bucket_weights_are_within_a_slot_for_random_weights() -> None:
    rng = random.Random(4)
    for _ in range(300):
        weights = [rng.choice((1, 2, 3, 10, 100, 1000, 65535)) if rng.random() < 0.3
                   else rng.randint(1, 1000) for _ in range(rng.randint(1, 40))]
        total = sum(weights)
        for share, w in zip(_shares(weights), weights, strict=True):
            assert abs(share - w / total) <= pl.SPLIT_PRECISION, (weights, w, share)


def test_the_default_16_slots_would_be_imprecise() -> None:
    """Why bucket_weights exists: 1:1:1 as configured gets 6/5/5 of 16 slots."""
    assert ovs_slots([1, 1, 1]) == [6, 5, 5]


def _as_sets(d: pl.Diff) -> tuple[frozenset, ...]:
    return tuple(frozenset(x) for x in (d.add_flows, d.modify_flows, d.delete_flows,
                                        d.add_groups, d.modify_groups, d.delete_groups,
                                        d.purge_sessions))


def applied(state: pl.State, d: pl.Diff) -> pl.State:
    """``state`` with ``d`` applied, as a switch applies the diff's messages."""
    flows, groups = dict(state.flows), dict(state.groups)
    for f in d.delete_flows:
        del flows[f.key]
    flows.update((f.key, f) for f in (*d.add_flows, *d.modify_flows))
    for gid in d.delete_groups:
        del groups[gid]
    groups.update((g.group_id, g) for g in (*d.add_groups, *d.modify_groups))
    return pl.State(flows, groups)


OTHER_VIP = ServiceKey("13.13.13.14", "tcp", 80)
B4 = Backend("10.0.1.5", 8005, 3)


@pytest.mark.parametrize("pinning", ["learn", "conntrack"])
@pytest.mark.parametrize("edit", [
    "add_backend", "remove_backend", "reweight", "drain_all", "new_service_new_vip",
    "delete_only_service_of_vip", "delete_service_sharing_vip", "rename", "nothing",
    "settings"])
def test_incremental_change_equals_full_rebuild_and_diff(pinning: str, edit: str) -> None:
    base = parse_config({"session_pinning": pinning})
    old = base
    for s in (Service(WEB, "web", (B1, B2, B3)), Service(DNS, "dns", (B1, B2)),
              Service(OTHER_VIP, "", (B3,))):
        old = old.with_service(s)
    web = old.services[WEB]
    new = {
        "add_backend": lambda: old.with_service(Service(WEB, "web", (B1, B2, B3, B4))),
        "remove_backend": lambda: old.with_service(Service(WEB, "web", (B1, B3))),
        "reweight": lambda: old.with_service(
            Service(WEB, "web", (B1, Backend(B2.ip, B2.port, 7), B3))),
        "drain_all": lambda: old.with_service(
            Service(WEB, "web", tuple(Backend(b.ip, b.port, 0) for b in web.backends))),
        "new_service_new_vip": lambda: old.with_service(
            Service(ServiceKey("13.13.13.15", "udp", 53), "", (B4,))),
        "delete_only_service_of_vip": lambda: old.without_service(OTHER_VIP),
        "delete_service_sharing_vip": lambda: old.without_service(DNS),
        "rename": lambda: old.with_service(Service(WEB, "www", web.backends)),
        "nothing": lambda: old.with_service(web),
        "settings": lambda: parse_config({
            "session_pinning": pinning, "udp_idle_timeout": 7,
            "services": [s.to_dict() for s in old.sorted_services()]}),
    }[edit]()
    # what the config made by one edit says it changed is what comparing every service finds
    plain_old, plain_new = (Config(c.settings, dict(c.services)) for c in (old, new))
    assert plain_new.changed_since(plain_old) is None
    assert (pl.changed_services(old, new) == pl.changed_services(plain_old, plain_new)
            == pl.changed_services(new, old) == pl.changed_services(plain_new, plain_old))
    before = pl.desired_state(old, PORTS, guard=1)
    purge = pl.purged_sessions(old, new)
    d = pl.change(old, new, PORTS, purge, guard=1)
    after = pl.desired_state(new, PORTS, d.guard)
    assert _as_sets(d) == _as_sets(pl.diff(before, after, purge))
    assert applied(before, d) == after
    # the LEARN guard swaps with every modified or deleted group, and only then
    regrouped = edit in ("add_backend", "remove_backend", "reweight", "drain_all",
                         "delete_only_service_of_vip", "delete_service_sharing_vip")
    assert bool(d.modify_groups or d.delete_groups) == regrouped
    assert d.guard == (0 if regrouped and pinning == "learn" else 1)
    if pinning == "learn" and regrouped:
        assert pl.learn_guard(0) in d.add_flows and pl.learn_guard(1) in d.delete_flows
    # and back again (the rollback path)
    back = pl.change(new, old, PORTS, guard=d.guard)
    assert applied(after, back) == pl.desired_state(old, PORTS, back.guard)


def test_tcp_syns_skip_the_session_lookup_in_learn_mode_only() -> None:
    web, dns = Service(WEB, "web", (B1,)), Service(DNS, "dns", (B1,))
    learn = pl.desired_state(cfg(web, dns), PORTS)
    syn = [f for f in flows_of(learn, pl.CLASSIFY) if f.priority == pl.PRIO_SERVICE_SYN]
    assert len(syn) == 1  # TCP only: UDP has no SYN
    assert dict(syn[0].match)["tcp_flags"] == (pl.TCP_SYN, pl.TCP_SYN)
    assert dict(syn[0].match)["tcp_dst"] == WEB.port
    assert syn[0].actions == (pl.GotoTable(pl.SERVICE),)
    # same cookie as the service's other classifier flow: its packets-in counter sums both
    assert syn[0].cookie == pl.cookie(pl.KIND_SERVICE, WEB.service_id)
    ct = pl.desired_state(replace(cfg(web, dns), settings=Settings(session_pinning="conntrack")),
                          PORTS)
    assert not [f for f in flows_of(ct, pl.CLASSIFY) if f.priority == pl.PRIO_SERVICE_SYN]


def test_purged_sessions_are_the_removed_backends_and_services() -> None:
    b1, b2 = Backend("10.0.1.2", 8002), Backend("10.0.1.3", 8002)
    other_tcp = ServiceKey("13.13.13.15", "tcp", 80)
    old = (Config().with_service(Service(WEB, "", (b1, b2)))
           .with_service(Service(other_tcp, "", (b2,))))
    # b2 still serves other_tcp: only WEB's sessions on it end
    new = old.with_service(Service(WEB, "", (b1,)))
    assert pl.purged_sessions(old, new) == [pl.Purge(WEB, b2)]
    # a reweight ends nothing
    assert pl.purged_sessions(old, old.with_service(Service(WEB, "", (b1, replace(b2, weight=5))))) == []
    new = new.without_service(other_tcp)
    assert sorted(pl.purged_sessions(old, new), key=str) == sorted(
        [pl.Purge(WEB, b2), pl.Purge(other_tcp)], key=str)


def test_timeouts_shorter_than_a_cached_datapath_flow_are_named() -> None:
    s = Settings()
    assert pl.short_timeouts(s) == []  # the defaults outlive OVS's 10 s max-idle
    s = replace(s, tcp_fin_timeout=5, udp_idle_timeout=11)
    assert pl.short_timeouts(s) == ["tcp_fin_timeout 5 s < 12 s", "udp_idle_timeout 11 s < 12 s"]
    assert pl.short_timeouts(replace(s, datapath_max_idle_ms=1500)) == []  # 2 + 2 s
    assert pl.short_timeouts(replace(s, session_pinning="conntrack")) == []


def test_no_session_replies_match_the_group_bit_that_sessions_never_match() -> None:
    """Learn mode: below the sessions, table 11 forwards group-addressed frames like its
    miss does, so that no-session translations look at eth_dst's group bit (the reason
    is in the pipeline docstring). Conntrack mode does not use table 11."""
    st = pl.desired_state(cfg(Service(WEB, (B1,))), PORTS)
    rev = {(f.priority, f.match): f.actions for f in flows_of(st, pl.SESSION_REV)}
    assert rev == {(pl.PRIO_REV_GROUP_ADDR, (("eth_dst", pl.GROUP_BIT),)): (pl.Output(1),),
                   (pl.PRIO_MISS, ()): (pl.Output(1),)}
    assert pl.PRIO_MISS < pl.PRIO_REV_GROUP_ADDR < pl.PRIO_SESSION
    learned = [a for f in flows_of(st, pl.LEARN) for a in f.actions if isinstance(a, pl.Learn)]
    assert all("eth_dst" not in str(lr) for lr in learned)
    ct = pl.desired_state(replace(cfg(Service(WEB, (B1,))),
                                  settings=Settings(session_pinning="conntrack")), PORTS)
    assert flows_of(ct, pl.SESSION_REV) == []


@pytest.mark.parametrize("pinning", ["learn", "conntrack"])
def test_a_long_run_of_changes_keeps_the_incremental_state_equal_to_a_rebuild(
        pinning: str) -> None:
    """The soak's churn, in pure form: backends of one host added, reweighted (to 0 too)
    and removed on two services, each change applied to the previous change's state."""
    import random

    rng = random.Random(3)
    keys = [ServiceKey("13.13.13.13", proto, 8000) for proto in ("tcp", "udp")]
    stable = (Backend("10.0.1.2", 8002, 1), Backend("10.0.1.3", 8002, 1))
    cfg = parse_config({"session_pinning": pinning})
    for k in keys:
        cfg = cfg.with_service(Service(k, "", stable))
    state, guard = pl.desired_state(cfg, PORTS), 0
    for _ in range(400):
        key = rng.choice(keys)
        bes = {b.addr: b for b in cfg.services[key].backends}
        port = rng.choice((8010, 8011, 8012, 8013))
        action = rng.choice(("add", "reweight", "remove"))
        if action == "remove":
            bes.pop(("10.0.1.4", port), None)
        else:
            bes[("10.0.1.4", port)] = Backend("10.0.1.4", port, rng.randint(0, 5))
        new = cfg.with_service(Service(key, "", tuple(bes.values())))
        d = pl.change(cfg, new, PORTS, pl.purged_sessions(cfg, new), guard)
        state, cfg, guard = applied(state, d), new, d.guard
        assert state == pl.desired_state(cfg, PORTS, guard)


def test_bucket_owners_follow_the_groups_buckets_in_order() -> None:
    web = ServiceKey("13.13.13.13", "tcp", 80)
    svc = Service(web, "web", (Backend("10.0.1.2", 80, 3), Backend("10.0.1.3", 80, 0),
                               Backend("10.0.1.4", 80, 7)))
    owners = pl.bucket_owners(svc)
    group = pl.service_group(svc)
    assert owners == [b.backend_id for b in group.buckets]
    # the weight-0 backend has no bucket; the heaviest has two (one split off)
    assert sorted(set(owners)) == sorted(b.backend_id for b in svc.backends if b.weight)
    assert len(owners) == 3


def test_the_learn_guard_swaps_fields_with_each_group_change_and_never_matches() -> None:
    """Learn mode: a guard flow in LEARN, swapped between two fields with every change
    that modifies or deletes a group (the pipeline docstring says why)."""
    web = cfg(Service(WEB, "web", (B1, B2)))
    st = pl.desired_state(web, PORTS, guard=1)
    assert [f for f in flows_of(st, pl.LEARN) if f.priority == pl.PRIO_GUARD] == [
        pl.learn_guard(1)]
    assert pl.PRIO_GUARD > max(f.priority for f in st.flows.values() if f != pl.learn_guard(1))
    assert pl.learn_guard(1).actions == ()  # drop, were it ever to match
    # two different datapath fields: a flow cached under one phase ignores the other's
    fields = [{name for name, _ in m} for m in pl.GUARD_MATCHES]
    assert fields == [{"pkt_mark"}, {"ct_state"}]
    # never true in learn mode: nothing sets pkt_mark, nothing goes through conntrack
    actions = [a for f in st.flows.values() for a in f.actions]
    assert not [a for a in actions if isinstance(a, (pl.Conntrack, pl.CtClear))]
    assert not [a for a in actions if isinstance(a, pl.SetField) and a.field == "pkt_mark"]
    assert pl.decode_cookie(pl.guard_cookie(0)) == (pl.KIND_STATIC, 0, 1)
    assert pl.guard_cookie(0) & pl.OWN_FLOWS_MASK == pl.OWN_FLOWS_COOKIE  # a reconcile's own
    # a rename changes no group: the guard stays
    assert pl.change(web, web.with_service(Service(WEB, "www", (B1, B2))), PORTS,
                     guard=1).guard == 1
    # a reconcile installs the phase the switch does not have
    assert (pl.reconcile_guard(True), pl.reconcile_guard(False)) == (0, 1)
    # conntrack has no guard; switching modes regroups (the buckets' resubmit table)
    ct = replace(web, settings=Settings(session_pinning="conntrack"))
    assert not flows_of(pl.desired_state(ct, PORTS), pl.LEARN)
    to_ct = pl.change(web, ct, PORTS, guard=1)
    assert pl.learn_guard(1) in to_ct.delete_flows and to_ct.guard == 1
    to_learn = pl.change(ct, web, PORTS, guard=1)
    assert pl.learn_guard(0) in to_learn.add_flows and to_learn.guard == 0
    assert applied(pl.desired_state(ct, PORTS), to_learn) == pl.desired_state(web, PORTS, 0)


def _mac(v: str) -> int:
    return int(v.replace(":", ""), 16)


def _matches(match: pl.Match, pkt: dict[str, object]) -> bool:
    for k, v in match:
        have = pkt.get(k, 0)
        if isinstance(v, tuple):  # (value, mask)
            val, mask = (_mac(v[0]), _mac(v[1])) if k.startswith("eth_") else v
            have = _mac(have) if isinstance(have, str) else have
            if have & mask != val & mask:  # type: ignore[operator]
                return False
        elif have != v:
            return False
    return True


def _learned(lr: pl.Learn, pkt: dict[str, object]) -> pl.Flow:
    """The flow ``lr`` learns from ``pkt`` (what OVS's learn does, for these specs)."""
    match, actions = [], []
    for kind, src, dst, _ in lr.specs:
        value = pkt[src[0]] if isinstance(src, tuple) else src
        if dst is not None and dst[0].startswith("ipv4") and isinstance(value, int):
            value = str(ipaddress.IPv4Address(value))  # immediates are ints, as OVS has them
        if kind == "match":
            match.append((dst[0], value))
        elif kind == "load":
            actions.append(pl.SetField(dst[0], value))
        else:
            actions.append(pl.Output(value))
    return pl.Flow(lr.table, lr.priority, tuple(match), tuple(actions), lr.cookie)


def _walk(flows: list[pl.Flow], groups: dict[int, pl.Group], pkt: dict[str, object],
          table: int = pl.CLASSIFY) -> tuple[list[int], list[pl.Flow], list[pl.Flow]]:
    """Run ``pkt`` through ``flows`` as OVS would: (ports output to, flows learned,
    flows matched). A group sends it to its first bucket; output to the packet's
    in_port is skipped, as OVS does."""
    out: list[int] = []
    learned: list[pl.Flow] = []
    hit: list[pl.Flow] = []

    def run(t: int) -> None:
        cands = [f for f in flows if f.table == t and _matches(f.match, pkt)]
        if not cands:
            return
        f = max(cands, key=lambda f: f.priority)
        hit.append(f)
        do(f.actions)

    def do(actions: tuple[pl.Action, ...]) -> None:
        for a in actions:
            if isinstance(a, pl.SetField):
                pkt["in_port" if a.field == "in_port_nxm" else a.field] = a.value
            elif isinstance(a, (pl.Resubmit, pl.GotoTable)):
                run(a.table)
            elif isinstance(a, pl.GroupAction):
                do(groups[a.group_id].buckets[0].actions)
            elif isinstance(a, pl.Output) and a.port != pkt["in_port"]:
                out.append(a.port)
            elif isinstance(a, pl.Learn):
                learned.append(_learned(a, pkt))

    run(table)
    return out, learned, hit


def test_learn_looks_up_a_new_sessions_flow_before_it_learns_and_sends_nothing_more() -> None:
    """The LEARN table's lookup of SESSION_FWD (pipeline docstring): a SYN that finds no
    session and one that finds its 5-tuple's session (a reused client port) both go once
    to the backend and learn both flows; only the second passes the flow that looks at
    eth_src, which nothing else on a new session's path looks at, so OVS deletes the
    cached datapath flow of a session's SYN once its flows exist."""
    st = pl.desired_state(cfg(Service(WEB, "web", (B1,))), PORTS)
    flows = list(st.flows.values())
    syn = {"in_port": PORTS.frontend, "eth_type": pl.ETH_IP, "ip_proto": 6,
           "eth_src": "02:00:00:00:00:01", "ipv4_src": "10.0.0.1", "ipv4_dst": WEB.vip,
           "tcp_src": 40000, "tcp_dst": WEB.port, "tcp_flags": pl.TCP_SYN}
    out, learned, hit = _walk(flows, st.groups, dict(syn))
    assert out == [PORTS.backend]
    assert [f.table for f in learned] == [pl.SESSION_FWD, pl.SESSION_REV]
    assert not [f for f in hit if f.priority == pl.PRIO_LEARN_KNOWN]
    assert [f.table for f in hit if f.priority == pl.PRIO_PROBE_MISS] == [pl.SESSION_FWD]
    # the session's flows as learned: the next SYN on that 5-tuple finds them
    out, again, hit = _walk(flows + learned, st.groups, dict(syn))
    assert out == [PORTS.backend]  # the found session's output:B was skipped
    assert again == learned
    assert [f.priority for f in hit if f.table == pl.LEARN] == [
        pl.PRIO_LEARN_PROBE, pl.PRIO_LEARN_KNOWN, pl.PRIO_LEARN]
    assert learned[0] in hit  # counted against the old flow before the learn
    eth_src = [f for f in flows if "eth_src" in dict(f.match)]
    assert [f.priority for f in eth_src] == [pl.PRIO_LEARN_KNOWN]
    # later packets of the session take its learned flow, not the lookup
    ack = {**syn, "tcp_flags": 0x010}
    out, none, hit = _walk(flows + learned, st.groups, dict(ack))
    assert (out, none) == ([PORTS.backend], []) and hit[-1] == learned[0]
    ct = pl.desired_state(replace(cfg(Service(WEB, "web", (B1,))),
                                  settings=Settings(session_pinning="conntrack")), PORTS)
    assert not [f for f in ct.flows.values() if f.cookie == pl.PROBE_COOKIE]


def test_a_reconnect_purges_the_sessions_of_backends_the_config_no_longer_has() -> None:
    """The switch's LEARN flows say which backends it was programmed with: a backend
    removed while no controller ran (or by a change whose confirmation was lost) has
    its learned sessions purged, as a REST removal would."""
    b1, b2, b3 = (Backend(f"10.0.1.{i}", 80, 1) for i in (2, 3, 4))
    web, dns = ServiceKey("13.13.13.13", "tcp", 80), ServiceKey("13.13.13.14", "udp", 53)
    was = Config().with_service(Service(web, "", (b1, b2))).with_service(Service(dns, "", (b3,)))
    on_switch = [f.cookie for f in pl.desired_state(was, pl.Ports(1, 2)).flows.values()
                 if f.table == pl.LEARN and (pl.decode_cookie(f.cookie) or (0,))[0]
                 == pl.KIND_BACKEND]
    assert len(on_switch) == 3
    now = Config().with_service(Service(web, "", (b1,)))
    assert pl.stale_sessions(on_switch, now) == sorted(
        [pl.session_cookie(web, b2), pl.session_cookie(dns, b3)])
    assert pl.stale_sessions(on_switch, was) == []
    # weight 0 (draining) keeps its sessions; other kinds of cookie are not backends
    drained = was.with_service(Service(web, "", (b1, replace(b2, weight=0))))
    assert pl.stale_sessions(on_switch, drained) == []
    assert pl.stale_sessions([pl.guard_cookie(1), pl.cookie(pl.KIND_SERVICE, 5)], now) == []
