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
    assert packets.internet_checksum(out[34:]) == 0


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


def tcp_checksum_ok(frame: bytes) -> bool:
    ip = packet.Packet(frame).get_protocol(ipv4.ipv4)
    return packets.tcp_checksum(ip.src, ip.dst, frame[34:14 + ip.total_length]) == 0


def test_rst_for_a_segment_of_no_session_takes_the_acknowledged_sequence_number() -> None:
    seg = build(tcp.tcp(src_port=40000, dst_port=8000, seq=5, ack=900, bits=tcp.TCP_ACK
                        | tcp.TCP_PSH), 6, payload=b"GET / HTTP/1.0\r\n\r\n")
    rst = packets.reset(seg)
    assert rst is not None
    assert (rst.client, rst.client_port, rst.vip, rst.vip_port) == (
        "10.0.0.1", 40000, "13.13.13.13", 8000)
    p = packet.Packet(rst.data)
    eth, ip, t = p.get_protocol(ethernet.ethernet), p.get_protocol(ipv4.ipv4), \
        p.get_protocol(tcp.tcp)
    assert (eth.src, eth.dst) == (GW_MAC, CLIENT_MAC)
    assert (ip.src, ip.dst, t.src_port, t.dst_port) == ("13.13.13.13", "10.0.0.1", 8000, 40000)
    assert (t.bits, t.seq) == (tcp.TCP_RST, 900)  # RFC 9293: <SEQ=SEG.ACK><CTL=RST>
    assert tcp_checksum_ok(rst.data)


def test_rst_for_a_segment_without_ack_acknowledges_its_data_and_fin() -> None:
    seg = build(tcp.tcp(src_port=40000, dst_port=8000, seq=0xFFFFFFF0, bits=tcp.TCP_FIN), 6,
                payload=b"x" * 20)
    rst = packets.reset(seg)
    assert rst is not None
    t = packet.Packet(rst.data).get_protocol(tcp.tcp)
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; the FIN counts one, modulo 2^32
    assert (t.bits, t.seq, t.ack) == (tcp.TCP_RST | tcp.TCP_ACK, 0, 5)
    assert tcp_checksum_ok(rst.data)


def test_no_rst_for_a_rst_a_syn_a_bad_checksum_or_not_tcp() -> None:
    def seg(bits: int) -> bytes:
        return build(tcp.tcp(src_port=40000, dst_port=8000, seq=5, ack=9, bits=bits), 6)

    assert packets.reset(seg(tcp.TCP_ACK)) is not None
    for bits in (tcp.TCP_RST, tcp.TCP_RST | tcp.TCP_ACK, tcp.TCP_SYN,
                 tcp.TCP_SYN | tcp.TCP_ACK, tcp.TCP_SYN | tcp.TCP_FIN):
        assert packets.reset(seg(bits)) is None, bits
    bad_sum = bytearray(seg(tcp.TCP_ACK))
    bad_sum[14 + 20 + 19] ^= 0x01  # the last byte of the TCP header (the frame is padded)
    assert packets.reset(bytes(bad_sum)) is None
    assert packets.reset(build(udp.udp(src_port=40000, dst_port=53), 17)) is None
    assert packets.reset(seg(tcp.TCP_ACK)[:40]) is None  # truncated
    assert packets.reset(build(tcp.tcp(src_port=1, dst_port=2, bits=tcp.TCP_ACK), 6,
                               flags=1)) is None  # a fragment


def test_no_rst_for_a_tcp_header_longer_than_the_segment() -> None:
    syn = bytearray(build(tcp.tcp(src_port=40000, dst_port=8000, seq=1, bits=tcp.TCP_SYN), 6))
    ack = bytearray(build(tcp.tcp(src_port=40000, dst_port=8000, seq=1, ack=2,
                                  bits=tcp.TCP_ACK), 6))
    for frame in (syn, ack):
        frame[14 + 20 + 12] = 0xF0  # data offset 60 bytes in a 20-byte segment
    assert packets.reject(bytes(syn)) is None and packets.reset(bytes(ack)) is None
