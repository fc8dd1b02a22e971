"""The OpenFlow pipeline lbrp programs: tables, priorities, cookies, registers.

This module is the one place that decides them. It turns a :class:`Config`
into the desired flows and groups, as plain immutable data (see
:mod:`lbrp_app.ofmsg` for the OpenFlow encoding). ``F`` is the frontend port,
``B`` the backend port.

Table 0 ``CLASSIFY`` (every packet enters here)
  ========  ==================================================  ===========================
  priority  match                                               actions
  ========  ==================================================  ===========================
  500       in_port=F, ip, nw_dst=VIP, ip_frag=yes              drop (fragments to a VIP
                                                                are dropped and counted)
  400       in_port=F, icmp, nw_dst=VIP, icmp_type=8, code=0    meter:1, controller (echo
                                                                reply built by the app)
  210       in_port=F, tcp, nw_dst=VIP, tp_dst=vport,           goto SERVICE (a SYN has no
            tcp_flags=+syn                                      session to look up)
  200       in_port=F, tcp|udp, nw_dst=VIP, tp_dst=vport        goto SESSION_FWD
  100       in_port=B, tcp|udp                                  goto SESSION_REV
  10        in_port=F                                           output:B (pass-through)
  10        in_port=B                                           output:F (pass-through)
  0         (anything else, e.g. the LOCAL port)                drop
  ========  ==================================================  ===========================

Table 10 ``SESSION_FWD`` (learned client->VIP sessions)
  100  learned: ip_proto, nw_src=client, nw_dst=VIP, tp_src=cport, tp_dst=vport
       -> load nw_dst=backend, tp_dst=bport, output:B (a SYN never comes here
       from table 0: every SYN goes through the group and learns again)
  1    reg8=1 (LEARN's lookup, below) -> reg8=2: no session
  0    miss -> goto SERVICE

Table 11 ``SESSION_REV`` (learned backend->client replies)
  100  learned: ip_proto, nw_src=backend, tp_src=bport, nw_dst=client, tp_dst=cport
       -> load nw_src=VIP, tp_src=vport, output:F
  1    eth_dst=01:00:00:00:00:00/01:00:00:00:00:00 (group-addressed) -> output:F
  0    miss -> output:F (replies of no session, and other traffic, pass unchanged)
  The priority-1 flow forwards like the miss. It is there so that every
  no-session packet's datapath flow matches eth_dst's group bit, which a
  session's never does. When a session's learned flows go away (purge, expiry),
  OVS's revalidator then finds the cached datapath flow too wide for the new
  translation and deletes it. Without the bit it would re-point the flow to
  pass-through with the session's exact 4-tuple, and a new session on that
  4-tuple (a client port reused within OVS's max-idle) would send its first
  replies un-rewritten until the next revalidation reached it.

Table 20 ``SERVICE`` (a packet to a service with no session)
  200  tcp SYN (no ACK/FIN/RST) or any udp, nw_dst=VIP, tp_dst=vport
       -> group:<service id>; or, with no backend of weight > 0, meter:1, controller
       (the app rejects: TCP RST / ICMP port unreachable)
  100  tcp, nw_dst=VIP, tp_dst=vport (not a SYN, no session) -> meter:1,
       controller: never balanced mid-stream. The app answers with a TCP RST once
       the switch confirms that SESSION_FWD holds no session for the 5-tuple (a
       datapath flow cached before the session was learned can still send its
       first packets here), so a client whose session expired or was purged fails
       at once instead of retransmitting into nothing
  0    drop

Group <service id> (select, OF1.5 selection_method=dp_hash over the 5-tuple)
  buckets for the backends of weight > 0, each weighted by its share of the 256
  hash slots (see bucket_weights; a backend with under one slot's share may get
  none, and then no bucket); each bucket:
  reg0=service id, reg1=backend id, resubmit(,LEARN). (OVS checks bucket actions
  without the flow's match, so a set_field of tp_dst in a bucket is refused as
  inconsistent: the rewrite happens in LEARN, right after the bucket.)

Table 30 ``LEARN`` (the group's resubmit target; learn in a bucket is ignored by OVS)
  65000  the guard: pkt_mark=0x1, or ct_state=+trk (never true in learn mode) -> drop
  200    ip, reg8=0 -> in_port=B, reg8=1, resubmit(,SESSION_FWD), in_port=F,
         resubmit(,LEARN): the lookup
  150    reg8=1 (SESSION_FWD holds the session), eth_src=00:..:00/01:..:00 (a
         unicast source: every packet) -> reg8=2, resubmit(,LEARN)
  100    ip_proto, reg0=service id, reg1=backend id -> reg2=B, nw_dst=backend,
         tp_dst=bport, learn(SESSION_FWD flow), learn(SESSION_REV flow), output:B
  0      drop
  The lookup (200, 150, and SESSION_FWD's 1) changes no packet's path; it is
  there for OVS's datapath flow cache, and for a reused client port:
  - A new session's first packet is forwarded by a datapath flow, after the
    group's recirculation, that is exact on its 5-tuple (``learn`` reads it), and
    that no later packet of the session uses. OVS would keep it for max-idle (10 s)
    and translate it again on every revalidation pass, each time composing both
    learned flows anew: about a third of the datapath flows of short sessions, and
    the costliest to revalidate. Once the session's flow exists, the translation
    goes through 150, which looks at eth_src's group bit, a field the cached flow
    ignores; so the pass after the ``learn`` deletes that flow (as with the guard).
  - A SYN from a client port whose session flow is still there (its FIN came less
    than tcp_fin_timeout ago) learns over it: OVS applies that as a modify, which
    keeps the old flow's counters, last-used time included, and its timeouts. The
    lookup counts the SYN against the old flow first, so the flow does not expire
    at once when the port comes back just as its FIN timeout runs out.
  The session flow found outputs to B, which OVS skips while in_port is B: the
  lookup sends nothing.
  The guard never matches; it is there for OVS's datapath flow cache. A new
  session's first packet is forwarded by the datapath flow after the group's
  recirculation, exact on its 5-tuple, and only its upcall runs ``learn``. When
  a group changes, OVS revalidates that flow: it would re-point it to the
  bucket the hash now picks and keep it (up to max-idle, 10 s), so a client
  reusing that source port meanwhile would reach the new backend without
  ``learn`` (its SYN-ACK un-rewritten, or its two directions on two backends).
  So every change that modifies or deletes a group swaps the guard's match
  between the two fields, in the group's bundle: every translation through this
  table now looks at a field the cached flows ignore, and the revalidator
  deletes them instead (each new session's first packet takes an upcall anyway).
  A reconcile installs the guard the switch does not have.

With ``session_pinning: conntrack`` tables 10, 11, 20 and 30 are not used. No NAT:
the connection is tracked on the client's own tuple (client -> VIP), the backend
it is pinned to is in its ct_label, and set_field rewrites both ways (so OVS's
NAT and its port-collision handling never run; OVS before 3.1.3 rewrote a
reconnecting client's source port there). Instead:

Table 0: the service flow (200) is ``ct(zone=CT_ZONE, table=CT_FWD)``; and per
backend address (a backend ip:port of a protocol, shared by every service it
serves) in_port=B, tcp|udp, nw_src=backend, tp_src=bport (100) ->
reg4=backend, reg5=bport, nw_src=VIP, tp_src=vport of the first service it
serves (by service order), ``ct(zone=CT_ZONE, table=CT_REV)``: a reply is
looked up as the reply of the client's connection to the VIP.

Table 40 ``CT_FWD`` (client -> VIP, tracked)
  300  ct_state=-inv-rpl+trk, ct_label=<service id|backend id>
       -> nw_dst=backend, tp_dst=bport, output:B (established, and a new
       connection right after its commit)
  250  reg3=1, ct_label=0 -> drop (counted: committed, yet no connection: the zone
       is full)
  245  reg3=1, reg7=1 -> drop (counted: picked a removed backend twice in a row)
  240  reg3=1 -> reg7=1, reg3=0, resubmit(,CT_FWD) (counted: committed to a backend
       that no flow above serves. It was removed as the session began, while the
       datapath still held flows that picked it; this pass is translated afresh, so
       the group picks among the live backends and the commit relabels the connection)
  200  ct_state=+new+trk, tcp SYN, nw_dst=VIP, tp_dst=vport -> group (or reject)
  200  ct_state=-inv-rpl+trk, udp, nw_dst=VIP, tp_dst=vport -> group (or reject): a
       new flow, or one whose backend no flow above serves any more (committed to it
       while its removal purged its connections); the commit relabels it
  100  ct_state=-inv-rpl+trk, tcp, nw_dst=VIP, tp_dst=vport (not a new SYN: no session,
       or a purged one) -> meter:1, controller (the app answers with a TCP RST)
  90   tcp, nw_dst=VIP, tp_dst=vport (invalid, e.g. SYN+FIN: perhaps crafted on a live
       connection's tuple, so no RST) -> drop
  0    drop

Table 41 ``CT_REV`` (backend -> client, source already set to a VIP)
  300  ct_state=+est+rpl+trk, ct_label=<service id|backend id>, reg4=backend,
       reg5=bport -> output:F
  100  (a backend address serving several services) ip_proto, reg4=backend,
       reg5=bport, reg6=n -> nw_src=VIP, tp_src=vport of its service n+1,
       reg6=n+1, ct_clear, ``ct(zone=CT_ZONE, table=CT_REV)``
  0    tcp|udp -> nw_src=reg4, tp_src=reg5, output:F (not a session of ours:
       the source put back, passed unchanged)

Table 42 ``CT_COMMIT`` (the group's resubmit target)
  100  ip -> reg3=1, ct(commit, zone=CT_ZONE, exec(ct_label[0..23]=reg1,
       ct_label[24..54]=reg0), table=CT_FWD): the label is <service id|backend id>
  0    drop

Learn pinning: a reconnect's bundle also purges the sessions of every backend
whose LEARN flow the switch holds and the config does not (stale_sessions).

Removing a service flushes its connections with NXT_CT_FLUSH by the original
destination VIP:vport. Removing a backend deletes its flows, then lists the
zone's connections (``dpctl/dump-conntrack``) and flushes those with its
ct_label one by one, by their original tuple: no tuple of the connection holds
the backend's address, and OVS 3.1 cannot flush by label.

Registers: reg0 service id, reg1 backend id, reg2 backend port (read by learn's
output), reg8 LEARN's lookup of SESSION_FWD (0 not yet, 1 asked / found, 2 done);
conntrack: reg3 committed, reg4/reg5 a reply's backend address and port,
reg6 which of the address's services was tried, reg7 picked again.

Cookies (64 bits): ``0xA`` tag | kind (4 bits) | service id or VIP (32) | backend
id (24). Kind ``SESSION`` (learned flows) has the top kind bit set, so all the
app's own non-session flows are ``cookie=0xA0../0xF8..``. Kinds: 1 static (a
backend address's flows: its ip and port in the object and backend fields; the
LEARN guard: object 0, backend field 1 + its phase; the lookup's flows: object 0,
backend field 3),
2 VIP (echo), 3 service, 4 reject, 5 backend (LEARN flow; conntrack: its CT_FWD
and CT_REV flows), 6 fragment drop, 7 not a SYN and no session (to the app for a
RST; conntrack's invalid ones dropped), 8 learned session, 0 conntrack check after
the commit (object 0: zone full, 1: backend gone twice, 2: picked again). Bucket
ids are backend ids, so bucket counters follow their backend. Meter 1 limits
packet-ins (ICMP echo, rejects and RSTs for non-SYNs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lbrp_app.model import Address, Backend, Config, Service, ServiceKey, Settings, ip_int

# Tables.
CLASSIFY = 0
SESSION_FWD = 10
SESSION_REV = 11
SERVICE = 20
LEARN = 30
CT_FWD = 40
CT_REV = 41
CT_COMMIT = 42
TABLES = (CLASSIFY, SESSION_FWD, SESSION_REV, SERVICE, LEARN, CT_FWD, CT_REV, CT_COMMIT)
SESSION_TABLES = (SESSION_FWD, SESSION_REV)
CT_ZONE = 0x4C42  # "LB": the conntrack zone of every session (conntrack pinning)

# Priorities.
PRIO_GUARD = 65000
PRIO_FRAG = 500
PRIO_ECHO = 400
PRIO_SERVICE_SYN = 210
PRIO_SERVICE = 200
PRIO_FROM_BACKEND_L4 = 100
PRIO_NOT_SYN = 100
PRIO_SESSION = 100
PRIO_LEARN = 100
PRIO_LEARN_PROBE = 200
PRIO_LEARN_KNOWN = 150
PRIO_CT_EST = 300
PRIO_CT_FULL = 250
PRIO_CT_GONE = 245
PRIO_CT_REPICK = 240
PRIO_CT_RETRY = 100
PRIO_CT_INVALID = 90
PRIO_PASS = 10
PRIO_REV_GROUP_ADDR = 1
PRIO_PROBE_MISS = 1
PRIO_MISS = 0

# Registers.
REG_SERVICE = "reg0"
REG_BACKEND = "reg1"
REG_OUT_PORT = "reg2"
REG_COMMITTED = "reg3"
REG_REPLY_IP = "reg4"
REG_REPLY_PORT = "reg5"
REG_TRIED = "reg6"
REG_REPICKED = "reg7"
REG_PROBE = "reg8"
PROBE_ASKING, PROBE_DONE = 1, 2  # REG_PROBE: looking up / looked up SESSION_FWD

# Meter and cookies.
PACKET_IN_METER = 1
COOKIE_TAG = 0xA
KIND_STATIC = 0x1
KIND_VIP = 0x2
KIND_SERVICE = 0x3
KIND_REJECT = 0x4
KIND_BACKEND = 0x5
KIND_FRAG = 0x6
KIND_NOT_SYN = 0x7
KIND_CT_AFTER_COMMIT = 0x0  # conntrack: the counted checks of a new session after its commit
# ... their object: zone full (dropped); backend gone after a re-pick too (dropped);
# backend gone (picked again)
CT_DROP_FULL, CT_DROP_GONE, CT_REPICK = 0, 1, 2
KIND_SESSION = 0x8
OWN_FLOWS_COOKIE = (COOKIE_TAG << 60)
OWN_FLOWS_MASK = (0xF << 60) | (0x8 << 56)  # tag + "not a session"
ALL_ONES = 0xFFFFFFFFFFFFFFFF

ETH_IP = 0x0800
GROUP_BIT = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # eth_dst multicast/broadcast bit
IP_PROTO = {"tcp": 6, "udp": 17}
ICMP = 1
TCP_SYN = 0x002
TCP_SYN_MASK = 0x017  # FIN | SYN | RST | ACK
CS_NEW, CS_EST, CS_INV, CS_RPL, CS_TRK = 0x01, 0x02, 0x10, 0x08, 0x20  # ct_state bits
CT_NEW = (CS_NEW | CS_TRK, CS_NEW | CS_TRK)
CT_ORIG = (CS_TRK, CS_INV | CS_RPL | CS_TRK)
CT_EST_REPLY = (CS_EST | CS_RPL | CS_TRK, CS_EST | CS_RPL | CS_TRK)


def cookie(kind: int, obj: int = 0, backend: int = 0) -> int:
    """The cookie of a flow of ``kind`` for object ``obj`` (service id or VIP) and backend."""
    return (COOKIE_TAG << 60) | (kind << 56) | ((obj & 0xFFFFFFFF) << 24) | (backend & 0xFFFFFF)


# the counted flows after a conntrack commit, read by every counter poll
CT_DROP_FULL_COOKIE = cookie(KIND_CT_AFTER_COMMIT, CT_DROP_FULL)
CT_DROP_GONE_COOKIE = cookie(KIND_CT_AFTER_COMMIT, CT_DROP_GONE)
CT_REPICK_COOKIE = cookie(KIND_CT_AFTER_COMMIT, CT_REPICK)
CT_AFTER_COMMIT_COOKIES = (CT_DROP_FULL_COOKIE, CT_DROP_GONE_COOKIE, CT_REPICK_COOKIE)


def vip_cookie(kind: int, vip: str) -> int:
    """The cookie of a per-VIP flow."""
    return cookie(kind, ip_int(vip))


def address_cookie(ip: str, port: int) -> int:
    """The cookie of a backend address's reply flows (conntrack pinning)."""
    return cookie(KIND_STATIC, ip_int(ip), port)


def decode_cookie(value: int) -> tuple[int, int, int] | None:
    """(kind, obj, backend) of one of our cookies, or None for a foreign cookie."""
    if value >> 60 != COOKIE_TAG:
        return None
    return (value >> 56) & 0xF, (value >> 24) & 0xFFFFFFFF, value & 0xFFFFFF


SERVICE_MASK = (0xFF << 56) | (0xFFFFFFFF << 24)


def session_cookie(svc: ServiceKey, be: Backend) -> tuple[int, int]:
    """(cookie, mask) selecting the learned sessions of one backend of one service."""
    return cookie(KIND_SESSION, svc.service_id, be.backend_id), ALL_ONES


def stale_sessions(backend_cookies: Iterable[int], cfg: Config) -> list[tuple[int, int]]:
    """(cookie, mask) of the learned sessions a reconnect purges: those of each backend
    whose LEARN flow the switch holds (``backend_cookies``: the cookies of its LEARN
    table's KIND_BACKEND flows) and ``cfg`` does not, as a REST removal would. Such a
    backend went while no controller ran (the file edited meanwhile), or with a change
    whose confirmation was lost."""
    kept = {cookie(KIND_BACKEND, svc.key.service_id, be.backend_id)
            for svc in cfg.services.values() for be in svc.backends}
    out = []
    for ck in sorted(set(backend_cookies) - kept):
        decoded = decode_cookie(ck)
        if decoded is not None and decoded[0] == KIND_BACKEND:
            out.append((cookie(KIND_SESSION, decoded[1], decoded[2]), ALL_ONES))
    return out


def service_sessions_cookie(svc: ServiceKey) -> tuple[int, int]:
    """(cookie, mask) selecting every learned session of a service."""
    return cookie(KIND_SESSION, svc.service_id), SERVICE_MASK


@dataclass(frozen=True)
class Ports:
    """OpenFlow port numbers of one switch's frontend and backend ports."""

    frontend: int
    backend: int


# Actions, as plain data. ``Learn`` carries its flow specs:
# ("match"|"load", src, dst, n_bits) with src an int (immediate) or (field, ofs),
# dst (field, ofs); ("output", (field, ofs), None, n_bits).
@dataclass(frozen=True)
class Output:
    port: int


@dataclass(frozen=True)
class GotoTable:
    table: int


@dataclass(frozen=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True)
class Meter:
    meter_id: int


@dataclass(frozen=True)
class Controller:
    max_len: int = 0xFFFF  # OFPCML_NO_BUFFER: OVS never buffers, ask for the whole packet


@dataclass(frozen=True)
class Resubmit:
    table: int


@dataclass(frozen=True)
class Learn:
    table: int
    priority: int
    idle_timeout: int
    fin_idle_timeout: int
    cookie: int
    specs: tuple[tuple[str, Any, Any, int], ...]
    send_flow_removed: bool = False


@dataclass(frozen=True)
class Move:
    """Copy ``n_bits`` of field ``src`` from bit ``src_ofs`` to field ``dst`` at ``dst_ofs``."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True)
class Conntrack:
    """ct(): look the packet up in ``zone`` (then continue in ``table``); ``commit``
    creates its connection, and ``exec`` (moves into ct_label) runs on it."""

    zone: int
    table: int | None = None
    commit: bool = False
    exec: tuple[Move, ...] = ()


@dataclass(frozen=True)
class CtClear:
    """ct_clear: forget the packet's conntrack state, so it can be looked up again."""


Action = (Output | GotoTable | GroupAction | SetField | Meter | Controller | Resubmit | Learn
          | Move | Conntrack | CtClear)
Match = tuple[tuple[str, Any], ...]
TO_APP: tuple[Action, ...] = (Meter(PACKET_IN_METER), Controller())  # a packet-in, metered


@dataclass(frozen=True)
class Flow:
    """One flow entry; its identity on the switch is (table, priority, match)."""

    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int

    @property
    def key(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)


@dataclass(frozen=True)
class Bucket:
    bucket_id: int  # from the backend id: bucket counters stay with their backend
    weight: int
    actions: tuple[Action, ...]
    backend_id: int = 0  # the backend this bucket sends to


@dataclass(frozen=True)
class Group:
    """A select group of one service."""

    group_id: int
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True)
class State:
    """Everything the app owns on a switch, except learned sessions and the meter."""

    flows: dict[tuple[int, int, Match], Flow]
    groups: dict[int, Group]


def _flow(table: int, prio: int, match: Match, actions: tuple[Action, ...], ck: int) -> Flow:
    return Flow(table, prio, match, actions, ck)


def static_flows(p: Ports, conntrack: bool = False) -> list[Flow]:
    """Pass-through and table-miss flows that do not depend on services."""
    ck = cookie(KIND_STATIC)
    flows = [
        _flow(CLASSIFY, PRIO_PASS, (("in_port", p.frontend),), (Output(p.backend),), ck),
        _flow(CLASSIFY, PRIO_PASS, (("in_port", p.backend),), (Output(p.frontend),), ck),
        _flow(CLASSIFY, PRIO_MISS, (), (), ck),
    ]
    if conntrack:
        flows += [_flow(CT_FWD, PRIO_MISS, (), (), ck),
                  # a new connection comes back here after its commit; without a
                  # connection (label 0) the zone was full
                  _flow(CT_FWD, PRIO_CT_FULL, ((REG_COMMITTED, 1), ("ct_label", 0)), (),
                        CT_DROP_FULL_COOKIE),
                  _flow(CT_FWD, PRIO_CT_GONE, ((REG_COMMITTED, 1), (REG_REPICKED, 1)), (),
                        CT_DROP_GONE_COOKIE),
                  # committed to a backend just removed: through the group once more
                  _flow(CT_FWD, PRIO_CT_REPICK, ((REG_COMMITTED, 1),),
                        (SetField(REG_REPICKED, 1), SetField(REG_COMMITTED, 0),
                         Resubmit(CT_FWD)), CT_REPICK_COOKIE),
                  _flow(CT_COMMIT, PRIO_LEARN, (("eth_type", ETH_IP),),
                        (SetField(REG_COMMITTED, 1), CT_COMMIT_LABELLED), ck),
                  _flow(CT_COMMIT, PRIO_MISS, (), (), ck)]
        for proto in ("tcp", "udp"):
            flows.append(_flow(CT_REV, PRIO_MISS,
                               (("eth_type", ETH_IP), ("ip_proto", IP_PROTO[proto])),
                               (Move(REG_REPLY_IP, "ipv4_src", 32),
                                Move(REG_REPLY_PORT, f"{proto}_src", 16),
                                Output(p.frontend)), ck))
    else:
        flows += [_flow(SESSION_FWD, PRIO_MISS, (), (GotoTable(SERVICE),), ck),
                  _flow(SESSION_REV, PRIO_REV_GROUP_ADDR, (("eth_dst", GROUP_BIT),),
                        (Output(p.frontend),), ck),
                  _flow(SESSION_REV, PRIO_MISS, (), (Output(p.frontend),), ck),
                  _flow(LEARN, PRIO_MISS, (), (), ck)] + probe_flows(p)
        for proto in ("tcp", "udp"):
            flows.append(_flow(CLASSIFY, PRIO_FROM_BACKEND_L4,
                               (("in_port", p.backend), ("eth_type", ETH_IP),
                                ("ip_proto", IP_PROTO[proto])), (GotoTable(SESSION_REV),), ck))
    flows.append(_flow(SERVICE, PRIO_MISS, (), (), ck))
    return flows


# the LEARN guard's two matches: datapath fields that never vary in learn mode (no
# one sets pkt_mark; no packet goes through conntrack)
GUARD_MATCHES: tuple[Match, Match] = ((("pkt_mark", 1),), (("ct_state", (CS_TRK, CS_TRK)),))


def guard_cookie(phase: int) -> int:
    """The cookie of the LEARN guard of ``phase`` (0 or 1)."""
    return cookie(KIND_STATIC, 0, 1 + phase)


def learn_guard(phase: int) -> Flow:
    """The never-matching LEARN-table flow of ``phase`` (the docstring says why)."""
    return _flow(LEARN, PRIO_GUARD, GUARD_MATCHES[phase], (), guard_cookie(phase))


PROBE_COOKIE = cookie(KIND_STATIC, 0, 3)
UNICAST_SOURCE = ("00:00:00:00:00:00", GROUP_BIT[1])  # eth_src's group bit clear


def probe_flows(p: Ports) -> list[Flow]:
    """Learn pinning: the LEARN table's lookup of SESSION_FWD before it learns, and
    SESSION_FWD's answer when it holds no session (the docstring says why)."""
    return [
        _flow(SESSION_FWD, PRIO_PROBE_MISS, ((REG_PROBE, PROBE_ASKING),),
              (SetField(REG_PROBE, PROBE_DONE),), PROBE_COOKIE),
        # a session's flow outputs to B: OVS skips that while in_port is B
        _flow(LEARN, PRIO_LEARN_PROBE, (("eth_type", ETH_IP), (REG_PROBE, 0)),
              (SetField("in_port_nxm", p.backend), SetField(REG_PROBE, PROBE_ASKING),
               Resubmit(SESSION_FWD), SetField("in_port_nxm", p.frontend), Resubmit(LEARN)),
              PROBE_COOKIE),
        _flow(LEARN, PRIO_LEARN_KNOWN, ((REG_PROBE, PROBE_ASKING), ("eth_src", UNICAST_SOURCE)),
              (SetField(REG_PROBE, PROBE_DONE), Resubmit(LEARN)), PROBE_COOKIE),
    ]


def reconcile_guard(phase1_on_switch: bool) -> int:
    """The guard phase a reconcile installs: the other one than the switch's, since
    its cached datapath flows may follow groups the reconcile replaces."""
    return 0 if phase1_on_switch else 1


def vip_flows(vip: str, p: Ports) -> list[Flow]:
    """Fragment drop and ICMP echo to the controller for one VIP."""
    ck = vip_cookie(KIND_VIP, vip)
    base: Match = (("in_port", p.frontend), ("eth_type", ETH_IP))
    return [
        _flow(CLASSIFY, PRIO_FRAG, base + (("ipv4_dst", vip), ("ip_frag", (1, 1))), (),
              vip_cookie(KIND_FRAG, vip)),
        _flow(CLASSIFY, PRIO_ECHO,
              base + (("ip_proto", ICMP), ("ipv4_dst", vip), ("icmpv4_type", 8),
                      ("icmpv4_code", 0)),
              TO_APP, ck),
    ]


def _l4(proto: str) -> tuple[str, str]:
    return (f"{proto}_src", f"{proto}_dst")


def service_flows(svc: Service, p: Ports, conntrack: bool = False) -> list[Flow]:
    """Classification and new-session flows of one service."""
    key = svc.key
    sid = key.service_id
    ck = cookie(KIND_SERVICE, sid)
    _, dst = _l4(key.proto)
    l4: Match = (("eth_type", ETH_IP), ("ip_proto", IP_PROTO[key.proto]),
                 ("ipv4_dst", key.vip), (dst, key.port))
    if conntrack:
        to_sessions: Action = Conntrack(CT_ZONE, table=CT_FWD)
        # UDP: an established flow gets here only if no backend flow serves its label
        # (committed to a backend as its removal purged it): it is balanced again
        table, new_only = CT_FWD, (("ct_state", CT_NEW if key.proto == "tcp" else CT_ORIG),)
    else:
        to_sessions, table, new_only = GotoTable(SESSION_FWD), SERVICE, ()
    flows = [_flow(CLASSIFY, PRIO_SERVICE, (("in_port", p.frontend),) + l4, (to_sessions,), ck)]
    if key.proto == "tcp" and not conntrack:
        # A SYN is not looked up in SESSION_FWD here: that would make the datapath flow
        # of every SYN exact on the client's address and port (one more upcall per
        # session, one more datapath flow to revalidate); skipping it lets every SYN to
        # this service share one. LEARN looks it up, after the group's recirculation,
        # where the datapath flow is exact anyway.
        syn = (("tcp_flags", (TCP_SYN, TCP_SYN)),)
        flows.append(_flow(CLASSIFY, PRIO_SERVICE_SYN, (("in_port", p.frontend),) + l4 + syn,
                           (GotoTable(SERVICE),), ck))
    new_session = new_only + l4 + (
        (("tcp_flags", (TCP_SYN, TCP_SYN_MASK)),) if key.proto == "tcp" else ())
    if svc.active_backends:
        flows.append(_flow(table, PRIO_SERVICE, new_session, (GroupAction(sid),), ck))
    else:
        flows.append(_flow(table, PRIO_SERVICE, new_session,
                           TO_APP, cookie(KIND_REJECT, sid)))
    if key.proto == "tcp":
        not_syn = cookie(KIND_NOT_SYN, sid)
        if conntrack:
            flows += [_flow(table, PRIO_NOT_SYN, (("ct_state", CT_ORIG),) + l4, TO_APP, not_syn),
                      _flow(table, PRIO_CT_INVALID, l4, (), not_syn)]
        else:
            flows.append(_flow(table, PRIO_NOT_SYN, l4, TO_APP, not_syn))
    return flows


def ct_label(svc: ServiceKey, be: Backend) -> int:
    """The ct_label of a backend's connections (conntrack pinning)."""
    return (svc.service_id << 24) | be.backend_id


# the bucket's registers make the label: ct_label(service, backend), one flow for all
CT_COMMIT_LABELLED = Conntrack(CT_ZONE, table=CT_FWD, commit=True, exec=(
    Move(REG_BACKEND, "ct_label", 24), Move(REG_SERVICE, "ct_label", 31, dst_ofs=24)))


def ct_label_ids(label: int) -> tuple[int, int]:
    """(service id, backend id) of a ct_label made by :func:`ct_label`."""
    return label >> 24, label & 0xFFFFFF


def conntrack_flows(svc: Service, be: Backend, p: Ports) -> list[Flow]:
    """Conntrack pinning of one backend of a service: rewrite and forward both ways the
    connections with its label (the reply's source is set in CLASSIFY)."""
    key = svc.key
    ck = cookie(KIND_BACKEND, key.service_id, be.backend_id)
    label = ct_label(key, be)
    _, dst = _l4(key.proto)
    l4: Match = (("eth_type", ETH_IP), ("ip_proto", IP_PROTO[key.proto]))
    return [
        _flow(CT_FWD, PRIO_CT_EST, (("ct_state", CT_ORIG), ("ct_label", label)) + l4,
              (SetField("ipv4_dst", be.ip), SetField(dst, be.port), Output(p.backend)), ck),
        _flow(CT_REV, PRIO_CT_EST,
              (("ct_state", CT_EST_REPLY), ("ct_label", label),
               (REG_REPLY_IP, ip_int(be.ip)), (REG_REPLY_PORT, be.port)),
              (Output(p.frontend),), ck),
    ]


def address_flows(addr: Address, services: tuple[ServiceKey, ...], p: Ports) -> list[Flow]:
    """Conntrack pinning: the reply flows of one backend address, which serves
    ``services`` (in service order). A reply's source becomes the first service's
    VIP:port for the lookup, then the next one's while none has its connection."""
    proto, ip, port = addr
    src, _ = _l4(proto)
    ck = address_cookie(ip, port)
    l4: Match = (("eth_type", ETH_IP), ("ip_proto", IP_PROTO[proto]))
    lookup = Conntrack(CT_ZONE, table=CT_REV)
    first = services[0]
    flows = [_flow(CLASSIFY, PRIO_FROM_BACKEND_L4,
                   (("in_port", p.backend),) + l4 + (("ipv4_src", ip), (src, port)),
                   (SetField(REG_REPLY_IP, ip_int(ip)),
                    SetField(REG_REPLY_PORT, port), SetField("ipv4_src", first.vip),
                    SetField(src, first.port), lookup), ck)]
    reply_addr: Match = ((REG_REPLY_IP, ip_int(ip)),
                         (REG_REPLY_PORT, port))
    for n, nxt in enumerate(services[1:]):
        flows.append(_flow(CT_REV, PRIO_CT_RETRY, l4 + reply_addr + ((REG_TRIED, n),),
                           (SetField("ipv4_src", nxt.vip), SetField(src, nxt.port),
                            SetField(REG_TRIED, n + 1), CtClear(), lookup), ck))
    return flows


def backend_addresses(cfg: Config, keys: list[ServiceKey] | None = None) -> set[Address]:
    """The backend addresses of the services ``keys`` of ``cfg`` (default: all)."""
    svcs = cfg.services.values() if keys is None else (
        cfg.services[k] for k in keys if k in cfg.services)
    return {(s.key.proto, b.ip, b.port) for s in svcs for b in s.backends}


def _address_state(cfg: Config, addrs: set[Address], p: Ports) -> list[Flow]:
    users = cfg.backend_users
    return [f for addr in addrs if addr in users for f in address_flows(addr, users[addr], p)]


OVS_MAX_IDLE_MS = 10_000  # ovs-vswitchd's default other_config:max-idle
REVALIDATION_MARGIN_S = 2  # a datapath flow may outlive max-idle by a revalidator round


def short_timeouts(s: Settings) -> list[str]:
    """Learn pinning: the timeout settings shorter than a cached datapath flow can live.

    A client that reuses its source port (for the same VIP and port) while OVS still
    caches the previous connection's SYN datapath flow gets its SYN forwarded without
    running ``learn``. If the old learned flows have expired by then, the SYN-ACK finds
    no reverse session and leaves un-rewritten: the client retransmits its SYN after
    1 s (measured: 0.4-0.9 % of connects at 500 sessions/s with a 5 s FIN timeout). While
    the old flows live, the cached SYN and they agree on the backend. So every timeout
    that ends a learned session should exceed max-idle plus a revalidator round.
    """
    if s.session_pinning != "learn":
        return []
    floor = -(-(s.datapath_max_idle_ms or OVS_MAX_IDLE_MS) // 1000) + REVALIDATION_MARGIN_S
    return [f"{name} {value} s < {floor} s" for name, value in
            (("tcp_idle_timeout", s.tcp_idle_timeout), ("tcp_fin_timeout", s.tcp_fin_timeout),
             ("udp_idle_timeout", s.udp_idle_timeout)) if value < floor]


def learn_flow(svc: Service, be: Backend, p: Ports, s: Settings) -> Flow:
    """The LEARN-table flow of one backend: pins the session both ways, then outputs."""
    key = svc.key
    src, dst = _l4(key.proto)
    proto = IP_PROTO[key.proto]
    vip = ip_int(key.vip)
    bip = ip_int(be.ip)
    idle = s.tcp_idle_timeout if key.proto == "tcp" else s.udp_idle_timeout
    fin = s.tcp_fin_timeout if key.proto == "tcp" else 0
    ck = cookie(KIND_SESSION, key.service_id, be.backend_id)
    counted = s.stats_interval > 0  # flow-removed keeps expired sessions in the totals
    fwd_specs: list[tuple[str, Any, Any, int]] = [
        ("match", ETH_IP, ("eth_type", 0), 16),
        ("match", proto, ("ip_proto", 0), 8),
        ("match", ("ipv4_src", 0), ("ipv4_src", 0), 32),
        ("match", vip, ("ipv4_dst", 0), 32),
        ("match", (src, 0), (src, 0), 16),
        ("match", key.port, (dst, 0), 16),
    ]
    fwd_specs += [
        ("load", bip, ("ipv4_dst", 0), 32),
        ("load", be.port, (dst, 0), 16),
        ("output", (REG_OUT_PORT, 0), None, 16),
    ]
    rev_specs: tuple[tuple[str, Any, Any, int], ...] = (
        ("match", ETH_IP, ("eth_type", 0), 16),
        ("match", proto, ("ip_proto", 0), 8),
        ("match", bip, ("ipv4_src", 0), 32),
        ("match", ("ipv4_src", 0), ("ipv4_dst", 0), 32),
        ("match", be.port, (src, 0), 16),
        ("match", (src, 0), (dst, 0), 16),
        ("load", vip, ("ipv4_src", 0), 32),
        ("load", key.port, (src, 0), 16),
        ("output", ("in_port", 0), None, 16),
    )
    actions: tuple[Action, ...] = (
        SetField(REG_OUT_PORT, p.backend),
        SetField("ipv4_dst", be.ip),
        SetField(dst, be.port),
        Learn(SESSION_FWD, PRIO_SESSION, idle, fin, ck, tuple(fwd_specs), counted),
        Learn(SESSION_REV, PRIO_SESSION, idle, fin, ck, rev_specs, counted),
        Output(p.backend),
    )
    match: Match = (("eth_type", ETH_IP), ("ip_proto", proto),
                    (REG_SERVICE, key.service_id), (REG_BACKEND, be.backend_id))
    return _flow(LEARN, PRIO_LEARN, match, actions,
                 cookie(KIND_BACKEND, key.service_id, be.backend_id))


def tcp_session_match(client: str, client_port: int, vip: str, vip_port: int) -> Match:
    """The fields a learned forward session of TCP matches in SESSION_FWD (learn_flow's
    forward specs): the switch is asked for it before a RST is sent."""
    return (("eth_type", ETH_IP), ("ip_proto", IP_PROTO["tcp"]), ("ipv4_src", client),
            ("ipv4_dst", vip), ("tcp_src", client_port), ("tcp_dst", vip_port))


DP_HASH_SLOTS = 256  # OVS 3.1: MAX(16, pow2(ceil(total / min weight))) slots, at most 256
SPLIT_BUCKET = 1 << 24  # bucket id bit of a backend's second bucket


SPLIT_PRECISION = 0.005  # a backend's share of the slots may be this far off its weight's


def _slots(weights: list[int], floor: bool) -> list[int]:
    """The 256 hash slots shared out by largest remainder; with ``floor`` (at most 256
    weights), each weight gets at least one and the others share the rest."""
    one: set[int] = set()
    while True:
        rest = [i for i in range(len(weights)) if i not in one]
        budget, total = DP_HASH_SLOTS - len(one), sum(weights[i] for i in rest)
        low = {i for i in rest if weights[i] * budget < total} if floor else set()
        if not low:  # never all of rest: its heaviest has a whole slot's share
            break
        one |= low
    slots = [1 if i in one else weights[i] * budget // total for i in range(len(weights))]
    by_remainder = sorted(rest, key=lambda i: (-(weights[i] * budget % total), i))
    for i in by_remainder[:DP_HASH_SLOTS - sum(slots)]:
        slots[i] += 1
    return slots


def bucket_weights(backends: tuple[Backend, ...]) -> list[tuple[Backend, int, int]]:
    """(backend, bucket weight, bucket id) for a precise weighted split.

    OVS 3.1 spreads a select group over MAX(16, pow2(ceil(total / min weight))) hash
    slots, at most 256 (more, and it leaves dp_hash for a far coarser method), by
    Webster's method: 1:1:1 as it is gets 16 slots, 37.5/31.25/31.25 %. So lbrp shares
    out the 256 slots itself and gives each backend its slots as its bucket weight.
    Weights that sum to 256 with a smallest weight of 1 (a bucket of weight 1 split off
    the heaviest backend when every backend has more) make OVS use all 256 slots, and
    Webster's method then gives every bucket exactly its weight in slots.

    Every backend gets at least one slot if every share then stays within
    SPLIT_PRECISION of its weight's (1 against 1,000 still reaches the 1). Otherwise
    (1,000 against 63 backends of 1, or over 256 backends) the slots go by largest
    remainder alone: every share is within one slot (0.4 points) of its weight's, and
    a backend with under a slot's share may get none, and no bucket.
    """
    if not backends:
        return []
    weights = [b.weight for b in backends]
    total = sum(weights)
    slots = _slots(weights, floor=True) if len(weights) <= DP_HASH_SLOTS else []
    if not slots or any(abs(n / DP_HASH_SLOTS - w / total) > SPLIT_PRECISION
                        for n, w in zip(slots, weights, strict=True)):
        slots = _slots(weights, floor=False)
    split = min(n for n in slots if n) > 1
    heaviest = slots.index(max(slots))
    out: list[tuple[Backend, int, int]] = []
    for i, (b, n) in enumerate(zip(backends, slots, strict=True)):
        if split and i == heaviest:
            out += [(b, n - 1, b.backend_id), (b, 1, b.backend_id | SPLIT_BUCKET)]
        elif n:
            out.append((b, n, b.backend_id))
    return out


def service_group(svc: Service, conntrack: bool = False) -> Group:
    """The select group of a service: weighted buckets for the backends of weight > 0."""
    key = svc.key
    target = CT_COMMIT if conntrack else LEARN
    buckets = tuple(
        Bucket(bucket_id, weight, (SetField(REG_SERVICE, key.service_id),
                                   SetField(REG_BACKEND, be.backend_id), Resubmit(target)),
               be.backend_id)
        for be, weight, bucket_id in bucket_weights(svc.active_backends))
    return Group(key.service_id, buckets)


def bucket_owners(svc: Service) -> list[int]:
    """The backend id of each bucket of the service's group, in bucket order (that of
    :func:`service_group`, without building the group)."""
    return [be.backend_id for be, _, _ in bucket_weights(svc.active_backends)]


def _service_state(svc: Service, p: Ports, settings: Settings) -> tuple[tuple[Flow, ...], Group]:
    """Flows and group of one service.

    Not memoised: every reweight makes a new Service, so a cache would keep ~34 KB per
    change of an 8-backend service. :func:`change` rebuilds only changed services anyway.
    """
    ct = settings.session_pinning == "conntrack"
    flows = service_flows(svc, p, ct)
    for be in svc.backends:
        flows += conntrack_flows(svc, be, p) if ct else [learn_flow(svc, be, p, settings)]
    return tuple(flows), service_group(svc, ct)


def desired_state(cfg: Config, p: Ports, guard: int = 0) -> State:
    """All flows and groups the app owns for ``cfg`` on a switch with ports ``p``
    (learn pinning: with the LEARN guard of phase ``guard``)."""
    ct = cfg.settings.session_pinning == "conntrack"
    flows: list[Flow] = static_flows(p, ct)
    if not ct:
        flows.append(learn_guard(guard))
    for vip in cfg.vips():
        flows += vip_flows(vip, p)
    groups: dict[int, Group] = {}
    for svc in cfg.services.values():
        svc_flows, group = _service_state(svc, p, cfg.settings)
        flows += svc_flows
        groups[svc.key.service_id] = group
    if ct:
        flows += _address_state(cfg, backend_addresses(cfg), p)
    return State({f.key: f for f in flows}, groups)


@dataclass(frozen=True)
class Purge:
    """Sessions to end: every session of a service, or those of one of its backends."""

    service: ServiceKey
    backend: Backend | None = None

    def cookie_mask(self) -> tuple[int, int]:
        """Learned flows of these sessions (learn pinning)."""
        if self.backend is None:
            return service_sessions_cookie(self.service)
        return session_cookie(self.service, self.backend)


@dataclass(frozen=True)
class Diff:
    """What turns one State into another, plus the sessions to purge."""

    add_flows: tuple[Flow, ...] = ()
    modify_flows: tuple[Flow, ...] = ()
    delete_flows: tuple[Flow, ...] = ()
    add_groups: tuple[Group, ...] = ()
    modify_groups: tuple[Group, ...] = ()
    delete_groups: tuple[int, ...] = ()
    purge_sessions: tuple[Purge, ...] = ()
    guard: int = 0  # the LEARN guard's phase once the diff is applied

    def __bool__(self) -> bool:
        return any((self.add_flows, self.modify_flows, self.delete_flows, self.add_groups,
                    self.modify_groups, self.delete_groups, self.purge_sessions))


def changed_services(old: Config, new: Config) -> list[ServiceKey]:
    """Services added, removed or changed from ``old`` to ``new``, sorted.

    O(1) when one was made from the other by one ``with_service`` or
    ``without_service`` (a REST change); otherwise every service is compared, cheaply
    where unchanged services are the very same objects.
    """
    known = new.changed_since(old)
    if known is not None:
        return [k for k in known if old.services.get(k) != new.services.get(k)]
    was, now = old.services, new.services
    keys = [k for k, svc in was.items() if (n := now.get(k)) is not svc and n != svc]
    keys += [k for k in now if k not in was]
    return sorted(keys, key=ServiceKey.sort_key)


def purged_sessions(old: Config, new: Config) -> list[Purge]:
    """Sessions of every backend (or service) present in ``old`` but not in ``new``."""
    out: list[Purge] = []
    for key in changed_services(old, new):
        svc = old.services.get(key)
        if svc is None:
            continue
        if key not in new.services:
            out.append(Purge(key))
            continue
        kept = {b.addr for b in new.services[key].backends}
        out += [Purge(key, b) for b in svc.backends if b.addr not in kept]
    return out


def change(old: Config, new: Config, p: Ports, purge: list[Purge] | None = None,
           guard: int = 0) -> Diff:
    """The diff from ``desired_state(old, p, guard)`` to ``desired_state(new, p,
    d.guard)``, built from what changed only.

    Every flow and group belongs to exactly one service, VIP, backend address or the
    static set (their matches differ), so the diff of the changed parts alone is the
    diff of the whole. A change of settings diffs everything. In learn pinning, a
    change that modifies or deletes a group swaps the LEARN guard (``d.guard`` is then
    the other phase).
    """
    if old.settings != new.settings:
        was, now = desired_state(old, p, guard), desired_state(new, p, guard)
    else:
        was, now = _changed_state(old, new, p)
    if new.settings.session_pinning == "learn" and any(
            now.groups.get(i) != g for i, g in was.groups.items()):
        on_switch = learn_guard(guard)
        if old.settings.session_pinning == "learn":
            was.flows[on_switch.key] = on_switch
        now.flows.pop(on_switch.key, None)
        guard ^= 1
        swapped = learn_guard(guard)
        now.flows[swapped.key] = swapped
    return diff(was, now, purge, guard)


def _changed_state(old: Config, new: Config, p: Ports) -> tuple[State, State]:
    """The parts of both desired states that the services and VIPs changed from ``old``
    to ``new`` touch (same settings)."""
    was, now = State({}, {}), State({}, {})
    keys = changed_services(old, new)
    for key in keys:
        for cfg, part in ((old, was), (new, now)):
            svc = cfg.services.get(key)
            if svc is not None:
                svc_flows, group = _service_state(svc, p, cfg.settings)
                part.flows.update((f.key, f) for f in svc_flows)
                part.groups[key.service_id] = group
    if new.settings.session_pinning == "conntrack" and keys:
        # a backend address's reply flows belong to every service it serves
        addrs = backend_addresses(old, keys) | backend_addresses(new, keys)
        for cfg, part in ((old, was), (new, now)):
            part.flows.update((f.key, f) for f in _address_state(cfg, addrs, p))
    for vip in old.vip_set - new.vip_set:
        was.flows.update((f.key, f) for f in vip_flows(vip, p))
    for vip in new.vip_set - old.vip_set:
        now.flows.update((f.key, f) for f in vip_flows(vip, p))
    return was, now


def diff(old: State, new: State, purge: list[Purge] | None = None, guard: int = 0) -> Diff:
    """The minimal changes from ``old`` to ``new`` (flows keyed by table, priority, match);
    ``guard`` is the LEARN guard's phase in ``new``."""
    changed = [(old.flows.get(k), f) for k, f in new.flows.items()
               if old.flows.get(k) is not f and old.flows.get(k) != f]
    add = tuple(f for was, f in changed if was is None)
    mod = tuple(f for was, f in changed if was is not None and was.cookie == f.cookie)
    # OpenFlow 1.1+ never changes a cookie on modify: a flow whose cookie changes is
    # replaced by an add of the same match and priority (atomic on the switch).
    add += tuple(f for was, f in changed if was is not None and was.cookie != f.cookie)
    dele = tuple(f for k, f in old.flows.items() if k not in new.flows)
    gadd = tuple(g for i, g in new.groups.items() if i not in old.groups)
    gmod = tuple(g for i, g in new.groups.items() if i in old.groups
                 and old.groups[i] is not g and old.groups[i] != g)
    gdel = tuple(i for i in old.groups if i not in new.groups)
    return Diff(add, mod, dele, gadd, gmod, gdel, tuple(purge or ()), guard)
