"""Packets the controller answers with: ICMP echo replies, session rejects and resets.

Pure functions from the raw packet-in bytes to the raw reply bytes (or None
when the packet must be ignored: malformed, fragmented, not what we expect).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp
from os_ken.lib.packet.ether_types import ETH_TYPE_IP

IP_MF = 0x1  # ipv4.flags bit: more fragments


def _parse_ipv4(data: bytes) -> tuple[ethernet.ethernet, ipv4.ipv4, bytes] | None:
    """Ethernet + IPv4 header and the L4 bytes of an unfragmented, well-formed packet."""
    if len(data) < 34:
        return None
    eth_type = struct.unpack_from("!H", data, 12)[0]
    if eth_type != ETH_TYPE_IP:
        return None
    ihl = (data[14] & 0x0F) * 4
    if data[14] >> 4 != 4 or ihl < 20 or len(data) < 14 + ihl:
        return None
    total_len = struct.unpack_from("!H", data, 16)[0]
    if total_len < ihl or 14 + total_len > len(data):
        return None
    frag = struct.unpack_from("!H", data, 20)[0]
    if frag & 0x3FFF:  # MF set or offset != 0: a fragment
        return None
    try:
        pkt = packet.Packet(data[:14 + ihl])
    except Exception:  # noqa: BLE001 - os-ken raises assorted errors on garbage
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    return eth, ip, bytes(data[14 + ihl:14 + total_len])


def _ip_reply(eth: ethernet.ethernet, ip: ipv4.ipv4, proto: int, src: str) -> packet.Packet:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=src, dst=ip.src, proto=proto, ttl=64))
    return pkt


def echo_reply(data: bytes, vips: Collection[str]) -> bytes | None:
    """The ICMP echo reply to an echo request addressed to one of ``vips``."""
    parsed = _parse_ipv4(data)
    if parsed is None:
        return None
    eth, ip, l4 = parsed
    if ip.proto != 1 or ip.dst not in vips or len(l4) < 8 or l4[0] != 8 or l4[1] != 0:
        return None
    if internet_checksum(l4) != 0:
        return None
    ident, seq = struct.unpack_from("!HH", l4, 4)
    pkt = _ip_reply(eth, ip, 1, ip.dst)
    pkt.add_protocol(icmp.icmp(type_=icmp.ICMP_ECHO_REPLY, code=0, csum=0,
                               data=icmp.echo(id_=ident, seq=seq, data=l4[8:])))
    pkt.serialize()
    return bytes(pkt.data)


def internet_checksum(buf: bytes) -> int:
    """Internet checksum of ``buf`` (0 when a buffer with its checksum is intact)."""
    if len(buf) % 2:
        buf += b"\0"
    total = sum(struct.unpack(f"!{len(buf) // 2}H", buf))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reject(data: bytes) -> bytes | None:
    """A TCP RST (for a SYN) or ICMP port unreachable (for UDP), from the VIP."""
    parsed = _parse_ipv4(data)
    if parsed is None:
        return None
    eth, ip, l4 = parsed
    if ip.proto == 6 and _tcp_header_fits(l4):
        flags = l4[13]
        if not flags & 0x02 or flags & 0x14:  # only a plain SYN is answered
            return None
        pkt = _rst(eth, ip, l4)
    elif ip.proto == 17 and len(l4) >= 8:
        pkt = _ip_reply(eth, ip, 1, ip.dst)
        original = ip_header_bytes(data) + l4[:8]
        pkt.add_protocol(icmp.icmp(type_=icmp.ICMP_DEST_UNREACH,
                                   code=icmp.ICMP_PORT_UNREACH_CODE, csum=0,
                                   data=icmp.dest_unreach(data=original)))
    else:
        return None
    pkt.serialize()
    return bytes(pkt.data)


def ip_header_bytes(data: bytes) -> bytes:
    ihl = (data[14] & 0x0F) * 4
    return bytes(data[14:14 + ihl])


@dataclass(frozen=True)
class Reset:
    """The RST for a TCP segment to a VIP that no session holds, and that segment's
    addresses (the switch is asked about its session before the RST is sent)."""

    data: bytes
    client: str
    client_port: int
    vip: str
    vip_port: int


def reset(data: bytes) -> Reset | None:
    """The RST, from the VIP, for a TCP segment of no connection (see :func:`_rst`).

    None for a segment that is itself a RST, a SYN (new sessions are the group's), or
    one whose checksum is wrong: a host answers none of them.
    """
    parsed = _parse_ipv4(data)
    if parsed is None:
        return None
    eth, ip, l4 = parsed
    if ip.proto != 6 or not _tcp_header_fits(l4):
        return None
    sport, dport = struct.unpack_from("!HH", l4, 0)
    if l4[13] & 0x06:  # RST or SYN
        return None
    if tcp_checksum(ip.src, ip.dst, l4) != 0:
        return None
    pkt = _rst(eth, ip, l4)
    pkt.serialize()
    return Reset(bytes(pkt.data), ip.src, sport, ip.dst, dport)


def tcp_checksum(src: str, dst: str, segment: bytes) -> int:
    """The checksum of a TCP ``segment`` between ``src`` and ``dst`` over the IPv4
    pseudo-header (0 when the segment carries its right checksum)."""
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!xBH", 6, len(segment))
    return internet_checksum(pseudo + segment)


def _tcp_header_fits(l4: bytes) -> bool:
    return len(l4) >= 20 and 20 <= (l4[12] >> 4) * 4 <= len(l4)


def _rst(eth: ethernet.ethernet, ip: ipv4.ipv4, l4: bytes) -> packet.Packet:
    """The RST, from the segment's destination, for TCP segment ``l4`` of no connection
    (RFC 9293, 3.10.7.1): with an ACK, <SEQ=SEG.ACK><CTL=RST>; without,
    <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SYN and FIN counting one each."""
    sport, dport, seq, ack = struct.unpack_from("!HHII", l4, 0)
    flags = l4[13]
    pkt = _ip_reply(eth, ip, 6, ip.dst)
    if flags & 0x10:
        pkt.add_protocol(tcp.tcp(src_port=dport, dst_port=sport, seq=ack, ack=0,
                                 bits=tcp.TCP_RST, window_size=0))
    else:
        seg_len = len(l4) - (l4[12] >> 4) * 4 + (flags & 0x03).bit_count()  # SYN, FIN
        pkt.add_protocol(tcp.tcp(src_port=dport, dst_port=sport, seq=0,
                                 ack=(seq + seg_len) & 0xFFFFFFFF,
                                 bits=tcp.TCP_RST | tcp.TCP_ACK, window_size=0))
    return pkt
