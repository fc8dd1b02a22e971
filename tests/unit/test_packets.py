"""Controller-built replies: ICMP echo reply, TCP RST and ICMP port unreachable."""

from __future__ import annotations

import struct

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp

from lbrp_app import packets

CLIENT_MAC, GW_MAC = "00:00:00:00:00:01", "00:00:00:00:00:fe"


def build(l4: object, proto: int, dst: str = "13.13.13.13", flags: int = 0,
          payload: bytes = b"") -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=GW_MAC, src=CLIENT_MAC))
    pkt.add_protocol(ipv4.ipv4(src="10.0.0.1", dst=dst, proto=proto, flags=flags))
    pkt.add_protocol(l4)
    if payload:
        pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def echo(ident: int = 7, seq: int = 3, data: bytes = b"hello", **kw: object) -> bytes:
    return build(icmp.icmp(type_=8, code=0, data=icmp.echo(id_=ident, seq=seq, data=data)),
                 1, **kw)


def test_echo_reply_from_vip_with_same_id_seq_payload() -> None:
    out = packets.echo_reply(echo(), {"13.13.13.13"})
    assert out is not None
    p = packet.Packet(out)
    eth, ip, ic = p.get_protocol(ethernet.ethernet), p.get_protocol(ipv4.ipv4), \
        p.get_protocol(icmp.icmp)
    assert (eth.src, eth.dst) == (GW_MAC, CLIENT_MAC)
    assert (ip.src, ip.dst) == ("13.13.13.13", "10.0.0.1")
    assert ic.type == 0 and ic.data.id == 7 and ic.data.seq == 3 and ic.data.data == b"hello"
    assert packets.icmp_checksum(out[34:]) == 0


def test_echo_to_unknown_address_or_malformed_is_ignored() -> None:
    assert packets.echo_reply(echo(dst="13.13.13.14"), {"13.13.13.13"}) is None
    good = echo()
    assert packets.echo_reply(good[:30], {"13.13.13.13"}) is None  # truncated
    bad_sum = bytearray(good)
    bad_sum[36] ^= 0xFF
    assert packets.echo_reply(bytes(bad_sum), {"13.13.13.13"}) is None
    assert packets.echo_reply(echo(flags=1), {"13.13.13.13"}) is None  # fragment (MF)
    assert packets.echo_reply(b"\xff" * 60, {"13.13.13.13"}) is None


def test_rst_for_syn_acks_the_syn() -> None:
    syn = build(tcp.tcp(src_port=40000, dst_port=8000, seq=1000, bits=tcp.TCP_SYN), 6)
    out = packets.reject(syn)
    assert out is not None
    p = packet.Packet(out)
    ip, t = p.get_protocol(ipv4.ipv4), p.get_protocol(tcp.tcp)
    assert (ip.src, ip.dst) == ("13.13.13.13", "10.0.0.1")
    assert (t.src_port, t.dst_port) == (8000, 40000)
    assert t.bits == tcp.TCP_RST | tcp.TCP_ACK and t.ack == 1001


def test_no_rst_for_non_syn() -> None:
    ack = build(tcp.tcp(src_port=40000, dst_port=8000, seq=5, ack=9, bits=tcp.TCP_ACK), 6)
    assert packets.reject(ack) is None


def test_port_unreachable_for_udp_quotes_the_datagram() -> None:
    dgram = build(udp.udp(src_port=40000, dst_port=53), 17, payload=b"query")
    out = packets.reject(dgram)
    assert out is not None
    p = packet.Packet(out)
    ip, ic = p.get_protocol(ipv4.ipv4), p.get_protocol(icmp.icmp)
    assert ip.src == "13.13.13.13" and ic.type == 3 and ic.code == 3
    quoted = ic.data.data
    assert quoted[:20] == dgram[14:34]  # original IP header
    assert struct.unpack_from("!HH", quoted, 20) == (40000, 53)
