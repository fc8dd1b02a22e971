"""Encoding of the pipeline's plain data as os-ken OpenFlow 1.5 messages.

Pure: messages are built with ``datapath=None``; the app attaches the datapath
when it sends them. Nothing here talks to a switch. Flow mods, a bundle's adds and
the flow-stats requests (counter polls, flow counts) are encoded here directly as
bytes (:class:`Encoded`, :class:`BundleAdds`, :class:`FlowStatsRequest`), the same
bytes os-ken's classes write; the rest through os-ken. Also the messages lbrp decodes itself rather than
through os-ken: flow-removed (:class:`OFPFlowRemoved`), aggregate-stats replies
(:class:`OFPAggregateStatsReply`), flow-desc replies, down to each flow's table,
cookie and counts (:class:`OFPFlowDescStatsReply`), and group-stats replies, down to
each bucket's counts (:class:`OFPGroupStatsReply`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Container, Iterable, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any, NamedTuple

from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from lbrp_app import pipeline as pl
from lbrp_app.model import Config, Service, ServiceKey

NTR_VENDOR_ID = 0x0000154D
NTRT_SELECTION_METHOD = 1
OFPGPT_EXPERIMENTER = 0xFFFF
OFPG_ALL = 0xFFFFFFFC
OFPTT_ALL = 0xFF
OFPP_ANY = 0xFFFFFFFF
OFPP_CONTROLLER = 0xFFFFFFFD
OFPG_ANY = 0xFFFFFFFF
NX_LEARN_F_SEND_FLOW_REM = 1 << 0
# what os-ken's serialisers read from a message's datapath
_ENCODER = SimpleNamespace(ofproto=ofproto_v1_5, ofproto_parser=ofproto_v1_5_parser)


class SelectionMethodProp:
    """Netronome group property ``selection_method`` (os-ken has no class for it).

    ``dp_hash`` with parameter 0 makes OVS hash the whole 5-tuple
    (OVS_HASH_ALG_L4); the default method leaves UDP ports out.
    """

    def __init__(self, method: str = "dp_hash", param: int = 0) -> None:
        self.method = method
        self.param = param

    def serialize(self) -> bytes:
        body = struct.pack("!HHIII16sQ", OFPGPT_EXPERIMENTER, 40, NTR_VENDOR_ID,
                           NTRT_SELECTION_METHOD, 0, self.method.encode(), self.param)
        return body  # 40 bytes, already a multiple of 8


@functools.lru_cache(maxsize=1 << 16)  # bounded: addresses differ per backend
def _oxm(ofp: ModuleType, name: str, value: Any) -> bytes:
    """One match field as os-ken encodes it (header, value, mask)."""
    buf = bytearray()
    ofp.oxm_serialize(*ofp.oxm_from_user(name, value), buf, 0)
    return bytes(buf)


def _write(buf: bytearray, offset: int, data: bytes) -> None:
    """os-ken's serialize interface: put ``data`` at ``offset`` of the message being built."""
    if len(buf) < offset:
        buf += bytes(offset - len(buf))
    buf[offset:offset + len(data)] = data


NX_VENDOR_ID = 0x00002320
NXAST_LEARN = 16
_LEARN_HEAD = struct.Struct("!HHIHHHHQHBxHH")  # 32 bytes: ofp_action_experimenter + learn
_SPEC_DST = {"match": 0, "load": 1, "output": 2}


@functools.cache
def _field_header(ofp: ModuleType, name: str) -> bytes:
    buf = bytearray()
    ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), buf, 0)
    assert len(buf) == 4, name  # learn specs take 32-bit NXM/OXM headers only
    return bytes(buf)


@functools.lru_cache(maxsize=1 << 14)  # bounded: immediates differ per backend
def _learn_spec(ofp: ModuleType, spec: tuple[str, Any, Any, int]) -> bytes:
    """One flow_mod_spec: header, then source (field or immediate value), then destination."""
    kind, src, dst, n_bits = spec
    immediate = not isinstance(src, tuple)
    out = struct.pack("!H", (immediate << 13) | (_SPEC_DST[kind] << 11) | n_bits)
    if immediate:
        out += int(src).to_bytes((n_bits + 15) // 16 * 2, "big")
    else:
        out += _field_header(ofp, src[0]) + struct.pack("!H", src[1])
    if dst is not None:
        out += _field_header(ofp, dst[0]) + struct.pack("!H", dst[1])
    return out


class PackedAction(ofproto_v1_5_parser.OFPAction):
    """An action already encoded as bytes, written as is into each message that uses it."""

    cls_action_type = 0xFFFF  # not registered for parsing: only ever sent
    cls_action_len = 0  # set per action

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.len = len(data)

    def serialize(self, buf: bytearray, offset: int) -> None:
        """os-ken's action interface: write at ``offset`` of the message being built."""
        _write(buf, offset, self.data)


class PackedLearn(PackedAction):
    """An NX ``learn`` action, encoded directly (OVS's ``nx_action_learn``).

    Same bytes as os-ken's NXActionLearn (tests/unit/test_ofmsg.py checks it) at a
    small fraction of the cost: 2,000 services x 8 backends carry 32,000 of them, each
    different, so they are not cached as the other actions are.
    """

    def __init__(self, ofp: ModuleType, a: pl.Learn) -> None:
        body = b"".join(_learn_spec(ofp, spec) for spec in a.specs)
        size = -(-(_LEARN_HEAD.size + len(body)) // 8) * 8
        flags = NX_LEARN_F_SEND_FLOW_REM if a.send_flow_removed else 0
        head = _LEARN_HEAD.pack(0xFFFF, size, NX_VENDOR_ID, NXAST_LEARN, a.idle_timeout, 0,
                                a.priority, a.cookie, flags, a.table, a.fin_idle_timeout, 0)
        super().__init__((head + body).ljust(size, b"\0"))


_FLOW_REMOVED = struct.Struct("!BBHHHQHH")  # after the header, up to the match's type, length
_FLOW_REMOVED_MATCH_AT = 8 + _FLOW_REMOVED.size - 4  # the match starts with its type
_OXS = struct.Struct("!HBB")  # class, field << 1 | has-mask, length


def _oxs_layout(desc: Any) -> struct.Struct:
    """The layout of one of os-ken's OXS value types: one or more unsigned integers."""
    n = getattr(desc, "num", 1)
    return struct.Struct("!" + {4: "I", 8: "Q"}[desc.size // n] * n)


# OXS field number -> (os-ken's name for it, the layout of its value), from os-ken's table
_OXS_VALUES = {t.oxs_field: (t.name, _oxs_layout(t.type)) for t in ofproto_v1_5.oxs_types}


def _stats(buf: bytes, offset: int) -> Any:
    """An ``ofp_stats`` as os-ken's OFPStats, its fields decoded by hand when all are known."""
    length = struct.unpack_from("!H", buf, offset + 2)[0]
    fields: list[tuple[str, Any]] = []
    at, end = offset + 4, offset + length
    while at < end:
        cls, field, size = _OXS.unpack_from(buf, at)
        known = _OXS_VALUES.get(field >> 1) if cls == ofproto_v1_5.OFPXSC_OPENFLOW_BASIC else None
        if known is None or field & 1 or size != known[1].size:
            return ofproto_v1_5_parser.OFPStats.parser(buf, offset)
        value = known[1].unpack_from(buf, at + 4)
        fields.append((known[0], value if len(value) > 1 else value[0]))
        at += 4 + size
    return ofproto_v1_5_parser.OFPStats(length=length, _ordered_fields=fields)


class OFPFlowRemoved(ofproto_v1_5_parser.OFPFlowRemoved):
    """OFPT_FLOW_REMOVED, decoded without its match until something reads it.

    With learn pinning every expired session flow sends one (two per session), and
    the counters read only the table, cookie and counts. os-ken's parser took 69 us
    per message here, mostly decoding the match; this one takes 8 us. The recv loop
    decodes them one by one, ahead of any barrier reply that follows them. The class
    keeps os-ken's name: os-ken maps a message to its event class by that name.
    """

    _match: Any = None

    @property  # type: ignore[override]
    def match(self) -> Any:
        """The flow's match, decoded by os-ken on first use (of a message received)."""
        if self._match is None and self.buf is not None:
            self._match = ofproto_v1_5_parser.OFPMatch.parser(self.buf, _FLOW_REMOVED_MATCH_AT)
        return self._match

    @match.setter
    def match(self, value: Any) -> None:
        self._match = value

    @classmethod
    def parser(cls, datapath: Any, version: int, msg_type: int, msg_len: int, xid: int,
               buf: bytes) -> OFPFlowRemoved:
        """os-ken's parser interface; the same attributes as os-ken's own parser gives."""
        # os-ken's header and buffer handling (MsgBase.parser), not its OFPFlowRemoved's
        msg = super(ofproto_v1_5_parser.OFPFlowRemoved, cls).parser(
            datapath, version, msg_type, msg_len, xid, buf)
        (msg.table_id, msg.reason, msg.priority, msg.idle_timeout, msg.hard_timeout,
         msg.cookie, _, match_len) = _FLOW_REMOVED.unpack_from(msg.buf, 8)
        stats_at = _FLOW_REMOVED_MATCH_AT + -(-match_len // 8) * 8
        if stats_at < msg_len:
            msg.stats = _stats(msg.buf, stats_at)
        return msg


class OFPAggregateStatsReply(ofproto_v1_5_parser.OFPAggregateStatsReply):
    """An aggregate-stats reply, its counts decoded by :func:`_stats`.

    A counter poll at 2,000 services x 8 backends gets 38,000 of them, and the poll's
    CPU shares the machine with the switch. os-ken's parser took 21 us per reply here,
    this one 7.5. The class keeps os-ken's name: os-ken maps a message to its event class
    by that name.
    """


_MULTIPART_REPLY = struct.Struct("!HH")  # type, flags (after the header)
_OS_KEN_MULTIPART_REPLY = ofproto_v1_5_parser._MSG_PARSERS[ofproto_v1_5.OFPT_MULTIPART_REPLY]


def _multipart_reply(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int,
                     buf: bytes) -> Any:
    """os-ken's parser interface for multipart replies: those of :data:`_DECODED` here,
    the rest by os-ken."""
    kind, flags = _MULTIPART_REPLY.unpack_from(buf, _HEADER.size)
    decoded = _DECODED.get(kind)
    if decoded is None:
        return _OS_KEN_MULTIPART_REPLY(datapath, version, msg_type, msg_len, xid, buf)
    cls, body = decoded
    # os-ken's header and buffer handling (MsgBase.parser), as its own parser does
    msg = super(ofproto_v1_5_parser.OFPMultipartReply, cls).parser(
        datapath, version, msg_type, msg_len, xid, buf)
    msg.type, msg.flags = kind, flags
    msg.body = body(msg.buf, ofproto_v1_5.OFP_MULTIPART_REPLY_SIZE, msg_len)
    return msg


def _aggregate_body(buf: bytes, offset: int, end: int) -> Any:
    stats = _stats(buf, offset)
    return ofproto_v1_5_parser.OFPAggregateStats(stats, -(-stats.length // 8) * 8)


def decode_multipart_replies_fast() -> None:
    """Make os-ken decode OpenFlow 1.5 aggregate-stats, flow-desc and group-stats replies
    with :class:`OFPAggregateStatsReply`, :class:`OFPFlowDescStatsReply` and
    :class:`OFPGroupStatsReply` (other multipart replies as before). Idempotent."""
    ofproto_v1_5_parser._MSG_PARSERS[ofproto_v1_5.OFPT_MULTIPART_REPLY] = _multipart_reply


def decode_flow_removed_fast() -> None:
    """Make os-ken decode OpenFlow 1.5 flow-removed messages with :class:`OFPFlowRemoved`.

    os-ken keeps one parser per message type in a module table (its registration
    decorator refuses a second), so this replaces the entry. Idempotent.
    """
    ofproto_v1_5_parser._MSG_PARSERS[ofproto_v1_5.OFPT_FLOW_REMOVED] = OFPFlowRemoved.parser


NX_CT_F_COMMIT = 1 << 0
NX_CT_RECIRC_NONE = 0xFF


def _move(parser: ModuleType, a: pl.Move) -> Any:
    # OF1.5's copy_field: OVS refuses NX reg_move in OpenFlow 1.5 messages
    return parser.OFPActionCopyField(n_bits=a.n_bits, src_offset=a.src_ofs,
                                     dst_offset=a.dst_ofs, oxm_ids=[a.src, a.dst])


def _conntrack(parser: ModuleType, a: pl.Conntrack) -> Any:
    inner = [_move(parser, m) for m in a.exec]
    return parser.NXActionCT(flags=NX_CT_F_COMMIT if a.commit else 0, zone_src="",
                             zone_ofs_nbits=a.zone, alg=0, actions=inner,
                             recirc_table=NX_CT_RECIRC_NONE if a.table is None else a.table)


def os_ken_action(parser: ModuleType, ofp: ModuleType, a: pl.Action) -> Any:
    """``a`` as os-ken's own action class (not a GotoTable, which is an instruction)."""
    if isinstance(a, pl.Output):
        return parser.OFPActionOutput(a.port)
    if isinstance(a, pl.Controller):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, a.max_len)
    if isinstance(a, pl.GroupAction):
        return parser.OFPActionGroup(a.group_id)
    if isinstance(a, pl.SetField):
        return parser.OFPActionSetField(**{a.field: a.value})
    if isinstance(a, pl.Meter):
        return parser.OFPActionMeter(a.meter_id)
    if isinstance(a, pl.Resubmit):
        return parser.NXActionResubmitTable(table_id=a.table)
    if isinstance(a, pl.Conntrack):
        return _conntrack(parser, a)
    if isinstance(a, pl.CtClear):
        return parser.NXActionCTClear()
    if isinstance(a, pl.Move):
        return _move(parser, a)
    raise TypeError(a)  # pragma: no cover - exhaustive over pl.Action


@functools.lru_cache(maxsize=1 << 15)  # bounded: set_field values differ per backend
def _packed(parser: ModuleType, ofp: ModuleType, a: pl.Action) -> PackedAction:
    """``a`` encoded once by os-ken's own class, then reused: most actions repeat."""
    act = os_ken_action(parser, ofp, a)
    buf = bytearray()
    act.serialize(buf, 0)
    return PackedAction(bytes(buf).ljust(act.len, b"\0"))  # os-ken may leave the pad unwritten


_HEADER = struct.Struct("!BBHI")  # version, type, length, xid
_FLOW_MOD = struct.Struct("!QQBBHHHIIIHH")  # after the header, up to the match
_BUNDLE_ADD = struct.Struct("!BBHII2xH")  # header, bundle id, pad, flags
_OXM_MATCH = struct.Struct("!HH")
_APPLY_ACTIONS = struct.Struct("!HH4x")
_GOTO_TABLE = struct.Struct("!HHB3x")


class Encoded(ofproto_v1_5_parser.MsgBase):
    """A message already encoded: its type and the bytes after its header.

    Flow mods are built this way directly (:func:`flow_mod`): through os-ken's message
    classes, building and serialising 2,000 services x 8 backends took 2-3 s of the
    3-6 s it took to program a switch, where OVS took 0.6-0.8 s to add and commit them
    (bench/results/startup20).
    """

    def __init__(self, msg_type: int, body: bytes) -> None:
        super().__init__(None)
        self.msg_type = msg_type
        self.body = body

    def serialize(self) -> None:
        """os-ken's interface: the whole message, with this object's xid, in ``buf``."""
        self.buf = bytearray(_HEADER.pack(ofproto_v1_5.OFP_VERSION, self.msg_type,
                                          _HEADER.size + len(self.body), self.xid or 0))
        self.buf += self.body


def encoded(msg: Any) -> Encoded:
    """``msg`` (an :class:`Encoded` or any os-ken message) as an :class:`Encoded`."""
    if isinstance(msg, Encoded):
        return msg
    msg.datapath = _ENCODER
    if msg.xid is None:
        msg.xid = 0
    msg.serialize()
    return Encoded(msg.msg_type, bytes(msg.buf[_HEADER.size:]))


class BundleAdds(ofproto_v1_5_parser.MsgBase):
    """Every message of one bundle, each in its OFPT_BUNDLE_ADD_MESSAGE, sent as one write.

    All the adds, and the messages they carry, take this object's xid, so the switch
    reports a refusal of any of them under it (OVS answers adds only with errors).
    """

    def __init__(self, bundle_id: int, flags: int, msgs: list[Any]) -> None:
        super().__init__(None)
        self.msg_type = ofproto_v1_5.OFPT_BUNDLE_ADD_MESSAGE
        self.bundle_id, self.flags = bundle_id, flags
        self.msgs = [encoded(m) for m in msgs]

    def __len__(self) -> int:
        return len(self.msgs)

    def serialize(self) -> None:
        """os-ken's interface: the adds, back to back, in ``buf``."""
        version, xid, bid, flags = ofproto_v1_5.OFP_VERSION, self.xid or 0, self.bundle_id, \
            self.flags
        add, head = self.msg_type, _BUNDLE_ADD.size + _HEADER.size
        parts: list[bytes] = []
        for m in self.msgs:
            parts += (_BUNDLE_ADD.pack(version, add, head + len(m.body), xid, bid, flags),
                      _HEADER.pack(version, m.msg_type, _HEADER.size + len(m.body), xid),
                      m.body)
        self.buf = bytearray(b"".join(parts))


class Batch(ofproto_v1_5_parser.MsgBase):
    """Messages that each have their datapath and xid, sent in one write.

    os-ken queues and writes each message on its own: a counter poll's 256 requests a
    round trip were 256 queue hand-overs between greenlets and 256 system calls.
    """

    def __init__(self, msgs: list[Any]) -> None:
        super().__init__(None)
        self.msgs = msgs
        self.xid = msgs[0].xid if msgs else 0

    def serialize(self) -> None:
        """os-ken's interface: every message, each with its own header, in ``buf``."""
        parts = []
        for m in self.msgs:
            m.serialize()
            parts.append(m.buf)
        self.buf = bytearray(b"".join(parts))


def _match_bytes(ofp: ModuleType, match: pl.Match) -> bytes:
    """An OXM match as os-ken's OFPMatch writes it (fields in our order, padded)."""
    body = b"".join([_oxm(ofp, k, v) for k, v in match])
    length = _OXM_MATCH.size + len(body)
    return _OXM_MATCH.pack(ofp.OFPMT_OXM, length) + body + bytes(-length % 8)


def _packed_actions(parser: ModuleType, ofp: ModuleType,
                    actions: tuple[pl.Action, ...]) -> list[PackedAction]:
    """``actions`` encoded, goto-table left out (an instruction, not an action)."""
    return [PackedLearn(ofp, a) if isinstance(a, pl.Learn) else _packed(parser, ofp, a)
            for a in actions if not isinstance(a, pl.GotoTable)]


def _instruction_bytes(parser: ModuleType, ofp: ModuleType,
                       actions: tuple[pl.Action, ...]) -> bytes:
    """A flow's instructions, encoded as os-ken writes them: apply-actions, then goto."""
    data = b"".join(a.data for a in _packed_actions(parser, ofp, actions))
    apply = _APPLY_ACTIONS.pack(ofp.OFPIT_APPLY_ACTIONS, _APPLY_ACTIONS.size + len(data)) \
        + data if data else b""
    return apply + b"".join(_GOTO_TABLE.pack(ofp.OFPIT_GOTO_TABLE, _GOTO_TABLE.size, a.table)
                            for a in actions if isinstance(a, pl.GotoTable))


def flow_mod(parser: ModuleType, ofp: ModuleType, flow: pl.Flow, command: int) -> Encoded:
    """An OFPT_FLOW_MOD adding, modifying (strict) or deleting (strict) ``flow``: the
    bytes os-ken's OFPFlowMod writes (tests/unit/test_ofmsg.py checks every flow)."""
    delete = command == ofp.OFPFC_DELETE_STRICT
    head = _FLOW_MOD.pack(flow.cookie, pl.ALL_ONES if delete else 0, flow.table, command,
                          0, 0, flow.priority, ofp.OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0, 0)
    return Encoded(ofp.OFPT_FLOW_MOD, head + _match_bytes(ofp, flow.match) + (
        b"" if delete else _instruction_bytes(parser, ofp, flow.actions)))


def delete_by_cookie(parser: ModuleType, ofp: ModuleType, ck: int, mask: int,
                     table: int = OFPTT_ALL) -> Any:
    """An OFPFlowMod deleting every flow whose cookie matches ``ck``/``mask``."""
    return parser.OFPFlowMod(datapath=None, cookie=ck, cookie_mask=mask, table_id=table,
                             command=ofp.OFPFC_DELETE, out_port=OFPP_ANY, out_group=OFPG_ANY,
                             buffer_id=ofp.OFP_NO_BUFFER, match=parser.OFPMatch())


def group_mod(parser: ModuleType, ofp: ModuleType, group: pl.Group, command: int) -> Any:
    """An OFPGroupMod for a select group with 5-tuple dp_hash selection."""
    buckets = [
        parser.OFPBucket(bucket_id=b.bucket_id,
                         actions=_packed_actions(parser, ofp, b.actions),
                         properties=[parser.OFPGroupBucketPropWeight(
                             type_=ofp.OFPGBPT_WEIGHT, weight=b.weight)])
        for b in group.buckets]
    return parser.OFPGroupMod(datapath=None, command=command, type_=ofp.OFPGT_SELECT,
                              group_id=group.group_id, command_bucket_id=ofp.OFPG_BUCKET_ALL,
                              buckets=buckets, properties=[SelectionMethodProp()])


def delete_group(parser: ModuleType, ofp: ModuleType, group_id: int) -> Any:
    return parser.OFPGroupMod(datapath=None, command=ofp.OFPGC_DELETE, type_=ofp.OFPGT_SELECT,
                              group_id=group_id, command_bucket_id=ofp.OFPG_BUCKET_ALL)


def meter_mod(parser: ModuleType, ofp: ModuleType, rate: int, burst: int, command: int) -> Any:
    """The packet-in meter: drop above ``rate`` packets/s (burst ``burst``)."""
    band = parser.OFPMeterBandDrop(rate=rate, burst_size=burst)
    return parser.OFPMeterMod(datapath=None, command=command,
                              flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
                              meter_id=pl.PACKET_IN_METER, bands=[band])


NX_VENDOR_ID = 0x00002320
NXT_CT_FLUSH = 32
NXT_CT_ORIG_DIRECTION, NXT_CT_ZONE_ID = 0, 2
NXT_CT_SRC, NXT_CT_DST, NXT_CT_SRC_PORT, NXT_CT_DST_PORT = 0, 1, 2, 3


def _prop(ptype: int, value: bytes) -> bytes:
    """An OpenFlow property: type, length, value, padded to 8 bytes."""
    raw = struct.pack("!HH", ptype, 4 + len(value)) + value
    return raw + b"\0" * (-len(raw) % 8)


def _nested(ptype: int, props: bytes) -> bytes:
    return struct.pack("!HHI", ptype, 8 + len(props), 0) + props


def _addr(ip: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + bytes(int(x) for x in ip.split("."))  # ::ffff:a.b.c.d


def ct_flush(parser: ModuleType, service: ServiceKey) -> Any:
    """NXT_CT_FLUSH of a service's conntrack entries, by the original direction's
    destination (VIP and port). os-ken has no class for it."""
    body = struct.pack("!BB6x", pl.IP_PROTO[service.proto], 0)
    body += _nested(NXT_CT_ORIG_DIRECTION, _prop(NXT_CT_DST, _addr(service.vip))
                    + _prop(NXT_CT_DST_PORT, struct.pack("!HH", service.port, 0)))
    body += _prop(NXT_CT_ZONE_ID, struct.pack("!HH", pl.CT_ZONE, 0))
    return parser.OFPExperimenter(None, NX_VENDOR_ID, NXT_CT_FLUSH, body)


def ct_flush_connection(parser: ModuleType, proto: str, src: str, dst: str, sport: int,
                        dport: int) -> Any:
    """NXT_CT_FLUSH of one connection of the sessions' zone, by its original tuple."""
    orig = (_prop(NXT_CT_SRC, _addr(src)) + _prop(NXT_CT_DST, _addr(dst))
            + _prop(NXT_CT_SRC_PORT, struct.pack("!HH", sport, 0))
            + _prop(NXT_CT_DST_PORT, struct.pack("!HH", dport, 0)))
    body = (struct.pack("!BB6x", pl.IP_PROTO[proto], 0) + _nested(NXT_CT_ORIG_DIRECTION, orig)
            + _prop(NXT_CT_ZONE_ID, struct.pack("!HH", pl.CT_ZONE, 0)))
    return parser.OFPExperimenter(None, NX_VENDOR_ID, NXT_CT_FLUSH, body)


def diff_messages(parser: ModuleType, ofp: ModuleType, d: pl.Diff,
                  conntrack: bool = False) -> tuple[list[Any], list[Any]]:
    """Messages for a Diff: (one atomic bundle, messages to send after it).

    Ordered so no flow ever references a missing group and no new session can
    reach a removed backend before its sessions are purged. Conntrack flushes
    cannot be bundled: they follow the bundle.
    """
    msgs: list[Any] = [group_mod(parser, ofp, g, ofp.OFPGC_ADD) for g in d.add_groups]
    msgs += [group_mod(parser, ofp, g, ofp.OFPGC_MODIFY) for g in d.modify_groups]
    msgs += [flow_mod(parser, ofp, f, ofp.OFPFC_ADD) for f in d.add_flows]
    msgs += [flow_mod(parser, ofp, f, ofp.OFPFC_MODIFY_STRICT) for f in d.modify_flows]
    msgs += [flow_mod(parser, ofp, f, ofp.OFPFC_DELETE_STRICT) for f in d.delete_flows]
    msgs += [delete_group(parser, ofp, gid) for gid in d.delete_groups]
    if conntrack:
        # a backend's connections: the app lists them by label after the bundle
        return msgs, [ct_flush(parser, p.service) for p in d.purge_sessions
                      if p.backend is None]
    for table in pl.SESSION_TABLES:
        msgs += [delete_by_cookie(parser, ofp, *p.cookie_mask(), table) for p in d.purge_sessions]
    return msgs, []


def reconcile_messages(parser: ModuleType, ofp: ModuleType, state: pl.State,
                       stale: Iterable[tuple[int, int]] = ()) -> list[Any]:
    """Replace everything the app owns (not learned sessions) with ``state``, and
    purge the learned sessions ``stale`` selects (:func:`pipeline.stale_sessions`).

    Meant for one atomic bundle: the switch never sees the intermediate state.
    """
    msgs: list[Any] = [delete_by_cookie(parser, ofp, pl.OWN_FLOWS_COOKIE, pl.OWN_FLOWS_MASK),
                       delete_group(parser, ofp, OFPG_ALL)]
    msgs += [group_mod(parser, ofp, g, ofp.OFPGC_ADD) for g in state.groups.values()]
    msgs += [flow_mod(parser, ofp, f, ofp.OFPFC_ADD) for f in state.flows.values()]
    msgs += [delete_by_cookie(parser, ofp, ck, mask, table)
             for ck, mask in stale for table in pl.SESSION_TABLES]
    return msgs


def learn_backend_requests(backends: int) -> list[FlowDescRequest]:
    """Flow-desc requests of the LEARN table's backend flows (about ``backends``), whose
    cookies say which backends the switch was programmed with."""
    return [req for _, req in _flow_desc_requests(pl.LEARN, pl.KIND_BACKEND, backends)]


# multipart type and flags, then table, out_port, out_group, cookie and its mask
_FLOW_STATS_REQUEST = struct.Struct("!HH4xB3xII4xQQ")
_EMPTY_MATCH = struct.pack("!HH4x", ofproto_v1_5.OFPMT_OXM, 4)  # a poll's requests carry none
FLOWS_PER_DESC = 512  # at most about this many flows in a flow-desc request of a poll


class FlowStatsRequest(Encoded):
    """A multipart request about the flows of ``table`` that the cookie and ``match``
    select (non-strict: flows that also match other fields count), encoded directly (a
    counter poll sends thousands: through os-ken's classes they took 0.4 s to build at
    2,000 x 8)."""

    kind: int

    def __init__(self, table: int, cookie: int, cookie_mask: int,
                 match: pl.Match = ()) -> None:
        super().__init__(ofproto_v1_5.OFPT_MULTIPART_REQUEST, _FLOW_STATS_REQUEST.pack(
            self.kind, 0, table, OFPP_ANY, OFPG_ANY, cookie, cookie_mask)
            + (_match_bytes(ofproto_v1_5, match) if match else _EMPTY_MATCH))
        self.table_id, self.cookie, self.cookie_mask = table, cookie, cookie_mask


class AggregateRequest(FlowStatsRequest):
    """An aggregate-stats request: the selected flows' count and summed counters. By
    default by exact cookie, as a counter poll reads a backend's sessions."""

    kind = ofproto_v1_5.OFPMP_AGGREGATE_STATS

    def __init__(self, table: int, cookie: int, cookie_mask: int = pl.ALL_ONES,
                 match: pl.Match = ()) -> None:
        super().__init__(table, cookie, cookie_mask, match)


class FlowDescRequest(FlowStatsRequest):
    """A flow-desc (flow stats) request: every selected flow, with its counters. OVS
    answers one in a single pass of its main thread, so a poll asks for about
    :data:`FLOWS_PER_DESC` flows at a time (:func:`_flow_desc_requests`)."""

    kind = ofproto_v1_5.OFPMP_FLOW_DESC


class FlowCounts(NamedTuple):
    """What a counter poll reads of one flow of a flow-desc reply."""

    table_id: int
    cookie: int
    packet_count: int
    byte_count: int


class OFPFlowDescStatsReply(ofproto_v1_5_parser.OFPFlowDescStatsReply):
    """A flow-desc reply whose body is each flow's :class:`FlowCounts`, decoded by hand:
    the match and the instructions, which the poll never reads, are skipped. The class
    keeps os-ken's name: os-ken maps a message to its event class by that name."""


_FLOW_DESC = struct.Struct("!H2xB11xQ")  # length, table_id, cookie (then the match)


def _flow_counts(buf: bytes, offset: int, end: int) -> list[FlowCounts]:
    flows = []
    while offset < end:
        length, table, cookie = _FLOW_DESC.unpack_from(buf, offset)
        match_len = struct.unpack_from("!H", buf, offset + _FLOW_DESC.size + 2)[0]
        stats = _stats(buf, offset + _FLOW_DESC.size + -(-match_len // 8) * 8)
        flows.append(FlowCounts(table, cookie, stats.get("packet_count", 0),
                                stats.get("byte_count", 0)))
        offset += length
    return flows


class GroupCounts(NamedTuple):
    """What a counter poll reads of one group of a group-stats reply."""

    group_id: int
    bucket_stats: tuple[tuple[int, int], ...]  # (packets, bytes) of each bucket, in order


class OFPGroupStatsReply(ofproto_v1_5_parser.OFPGroupStatsReply):
    """A group-stats reply whose body is each group's :class:`GroupCounts`. os-ken's
    parser builds two objects per bucket: a poll's reply for 2,000 groups held the
    controller's thread for up to about 50 ms. os-ken's name, for its event class."""


_GROUP_STATS = struct.Struct("!H2xI")  # length, group_id (then the group's counters)
_GROUP_STATS_SIZE = 40  # ofp_group_stats before its bucket counters


def _group_counts(buf: bytes, offset: int, end: int) -> list[GroupCounts]:
    groups = []
    while offset < end:
        length, group_id = _GROUP_STATS.unpack_from(buf, offset)
        counters = struct.unpack_from(f"!{(length - _GROUP_STATS_SIZE) // 8}Q", buf,
                                      offset + _GROUP_STATS_SIZE)
        groups.append(GroupCounts(group_id, tuple(zip(counters[::2], counters[1::2]))))
        offset += length
    return groups


# multipart reply type -> the class lbrp decodes it as, and its body's decoder
_DECODED = {ofproto_v1_5.OFPMP_AGGREGATE_STATS: (OFPAggregateStatsReply, _aggregate_body),
            ofproto_v1_5.OFPMP_FLOW_DESC: (OFPFlowDescStatsReply, _flow_counts),
            ofproto_v1_5.OFPMP_GROUP_STATS: (OFPGroupStatsReply, _group_counts)}


def _flow_desc_requests(table: int, kind: int, flows: int
                        ) -> Iterator[tuple[tuple[str, Any], FlowDescRequest]]:
    """Flow-desc requests of every flow of ``kind`` in ``table`` (about ``flows`` of them),
    split by the low bits of the cookie's service id or VIP into requests of about
    :data:`FLOWS_PER_DESC` flows."""
    chunks = 1
    while chunks * FLOWS_PER_DESC < flows:
        chunks *= 2
    mask = (0xFF << 56) | ((chunks - 1) << 24)
    for chunk in range(chunks):
        yield ("flows", table), FlowDescRequest(table, pl.cookie(kind, chunk), mask)


class BucketOwners:
    """Each service's bucket owners (:func:`pipeline.bucket_owners`), derived again only
    for a service object not seen at the last call: a change replaces the objects of the
    services it changes. Every poll needs them, and deriving all took the controller's
    thread 14-40 ms at 2,000 services. The app keeps one for its polls."""

    def __init__(self) -> None:
        # service id -> (the service object, its bucket owners), as of the last call
        self.by_service: dict[int, tuple[Service, list[int]]] = {}

    def __call__(self, cfg: Config) -> dict[int, list[int]]:
        """Service id -> bucket owners, for every service of ``cfg``."""
        owners = {}
        for svc in cfg.services.values():
            sid = svc.key.service_id
            seen = self.by_service.get(sid)
            if seen is None or seen[0] is not svc:
                seen = self.by_service[sid] = (svc, pl.bucket_owners(svc))
            owners[sid] = seen[1]
        for sid in self.by_service.keys() - owners.keys():
            del self.by_service[sid]
        return owners


def group_and_meter_requests(parser: ModuleType, cfg: Config,
                             owners: BucketOwners | None = None
                             ) -> list[tuple[tuple[str, Any], Any]]:
    """A counter poll's first requests, each with the key its reply is filed under: the
    stats of every group (filed by each group's bucket owners), then of the meter.

    They go first: which backends' session flows the poll reads depends on the buckets'
    counters (``StatsBook.idle_backends``).
    """
    by_service = (owners or BucketOwners())(cfg)
    return [(("groups", by_service), parser.OFPGroupStatsRequest(None, 0, OFPG_ALL)),
            (("meter", None), parser.OFPMeterStatsRequest(None, 0, pl.PACKET_IN_METER))]


def flow_requests(cfg: Config) -> Iterator[tuple[tuple[str, Any], FlowDescRequest]]:
    """A counter poll's requests of the flows lbrp installs and counts, each with the key
    its reply is filed under: per service its classifier flows and not-SYN drop, per VIP
    its fragment drop; with ``conntrack`` also per backend its two forwarding flows after
    ct(), and the three checks after the commit. Flow-desc requests of a few hundred
    flows each, filed by the cookie of each flow of the reply."""
    ct = cfg.settings.session_pinning == "conntrack"
    services = cfg.services.values()
    tcp = sum(svc.key.proto == "tcp" for svc in services)
    yield from _flow_desc_requests(pl.CLASSIFY, pl.KIND_SERVICE, len(services) + tcp)
    yield from _flow_desc_requests(pl.CLASSIFY, pl.KIND_FRAG, len(cfg.vip_set))
    yield from _flow_desc_requests(pl.CT_FWD if ct else pl.SERVICE, pl.KIND_NOT_SYN, tcp)
    if ct:
        backends = sum(len(svc.backends) for svc in services)
        for table in (pl.CT_FWD, pl.CT_REV):
            yield from _flow_desc_requests(table, pl.KIND_BACKEND, backends)
        yield from _flow_desc_requests(pl.CT_FWD, pl.KIND_CT_AFTER_COMMIT,
                                       len(pl.CT_AFTER_COMMIT_COOKIES))


def session_requests(cfg: Config, idle: Container[tuple[int, int]] = frozenset()
                     ) -> Iterator[tuple[tuple[str, Any], AggregateRequest]]:
    """With ``learn``, a counter poll's requests of the learned session flows, each with
    the key its reply is filed under: an aggregate by exact cookie (OVS indexes cookies,
    so each costs only its own flows) per backend and session table, except the
    (service id, backend id) in ``idle``. A generator: 2,000 x 8 make up to 32,000, which
    the poller spreads over its round trips (``switch.request_paced``)."""
    if cfg.settings.session_pinning == "conntrack":
        return
    for svc in cfg.services.values():  # any order will do: sorting 2,000 took milliseconds
        sid = svc.key.service_id
        for be in svc.backends:
            if (sid, be.backend_id) in idle:
                continue
            ck = pl.cookie(pl.KIND_SESSION, sid, be.backend_id)
            for table in pl.SESSION_TABLES:
                yield ("session", (sid, be.backend_id, table)), AggregateRequest(table, ck)


def counter_requests(cfg: Config, idle: Container[tuple[int, int]] = frozenset()
                     ) -> Iterator[tuple[tuple[str, Any], FlowStatsRequest]]:
    """Every request of a counter poll after the groups' and the meter's:
    :func:`flow_requests`, then :func:`session_requests`."""
    yield from flow_requests(cfg)
    yield from session_requests(cfg, idle)
