#!/usr/bin/env python3
"""Send malformed, awkward and fuzzed packets toward a VIP from a lab client (scapy).

Run inside a client host (needs root and scapy)::

    python craft_packets.py --iface c1-eth0 --dst-mac 02:00:00:0a:00:fe \\
        --src 10.0.0.1 --vip 13.13.13.13 --tcp-port 8000 --udp-port 8000 \\
        --phase crafted|fuzz [--count 10000] [--seed 1] [--pps 4000]

Frames are written raw on an AF_PACKET socket (no kernel checks). ``crafted``
sends a fixed list (truncated headers, IP options, bad checksums, fragments,
odd TCP flags, ICMP errors and bad echoes, zero-length UDP); ``fuzz`` sends
``--count`` random packets from scapy's ``fuzz()`` of IP/TCP and IP/UDP to the
VIP ports. Prints ONE JSON line::

    {"sent": n, "fragments": n, "valid_echoes": n, "odd_flag_sports": [...],
     "by_kind": {...}, "build_errors": n, "elapsed_s": x}

``fragments`` is how many sent frames are well-formed IPv4 fragments to the VIP
(the ones lbrp must drop and count).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from typing import Any

from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    IPOption_NOP,
    IPOption_RR,
    Raw,
    fragment,
    fuzz,
)

ODD_FLAGS = {"syn-fin": "SF", "syn-rst": "SR", "null": "", "xmas": "FPU", "syn-ack": "SA",
             "fin": "F", "rst": "R", "syn-fin-rst-ack": "SFRA"}
ODD_SPORT_BASE = 51000


def is_vip_fragment(frame: bytes, vip: bytes) -> bool:
    """Is ``frame`` a well-formed IPv4 fragment to ``vip`` (as OVS would parse it)?"""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return False
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    tot_len = struct.unpack_from("!H", ip, 2)[0]
    if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl or tot_len < ihl or tot_len > len(ip):
        return False
    return ip[16:20] == vip and bool(struct.unpack_from("!H", ip, 6)[0] & 0x3FFF)


def crafted(a: argparse.Namespace, eth: Any) -> list[tuple[str, bytes]]:
    """The fixed list of awkward packets, as (kind, frame)."""
    vip, src, tp, up = a.vip, a.src, a.tcp_port, a.udp_port
    ip = IP(src=src, dst=vip)
    syn = TCP(sport=50000, dport=tp, flags="S", seq=1000)
    out: list[tuple[str, Any]] = []

    def add(kind: str, pkt: Any) -> None:
        out.append((kind, pkt))

    full_tcp = bytes(eth / ip / syn)
    add("truncated-ip-header", full_tcp[:14 + 10])
    add("ip-ihl-15-short", bytes(eth / IP(src=src, dst=vip, ihl=15, proto=6)) + bytes(20))
    add("ip-ihl-4", bytes(eth / IP(src=src, dst=vip, ihl=4) / TCP(sport=50001, dport=tp)))
    add("ip-len-too-big", eth / IP(src=src, dst=vip, len=1400) / TCP(sport=50002, dport=tp))
    add("ip-len-below-header", eth / IP(src=src, dst=vip, len=12) / TCP(sport=50003, dport=tp))
    add("ip-version-6-in-ipv4", eth / IP(src=src, dst=vip, version=6) / UDP(dport=up))
    add("tcp-truncated-8", eth / IP(src=src, dst=vip, proto=6) / Raw(bytes(syn)[:8]))
    add("tcp-no-l4", eth / IP(src=src, dst=vip, proto=6))
    add("tcp-dataofs-15", eth / ip / TCP(sport=50004, dport=tp, flags="S", dataofs=15))
    add("tcp-dataofs-2", eth / ip / TCP(sport=50005, dport=tp, flags="S", dataofs=2))
    add("udp-truncated-4", eth / IP(src=src, dst=vip, proto=17)
        / Raw(bytes(UDP(sport=50006, dport=up))[:4]))
    add("udp-len-0", eth / ip / UDP(sport=50007, dport=up, len=0) / Raw(b"x" * 10))
    add("udp-len-too-big", eth / ip / UDP(sport=50008, dport=up, len=900) / Raw(b"x" * 10))
    add("udp-zero-payload", eth / ip / UDP(sport=50009, dport=up))
    add("ip-options-tcp-syn", eth / IP(src=src, dst=vip, options=[IPOption_RR(), IPOption_NOP()])
        / TCP(sport=50010, dport=tp, flags="S"))
    add("ip-options-udp", eth / IP(src=src, dst=vip, options=[IPOption_RR()])
        / UDP(sport=50011, dport=up) / Raw(b"HELLO\n"))
    add("bad-ip-checksum-tcp", eth / IP(src=src, dst=vip, chksum=0xDEAD)
        / TCP(sport=50012, dport=tp, flags="S"))
    add("bad-ip-checksum-udp", eth / IP(src=src, dst=vip, chksum=0xDEAD)
        / UDP(sport=50013, dport=up) / Raw(b"HELLO\n"))
    add("bad-tcp-checksum", eth / ip / TCP(sport=50014, dport=tp, flags="S", chksum=0xBEEF))
    add("bad-udp-checksum", eth / ip / UDP(sport=50015, dport=up, chksum=0xBEEF) / Raw(b"x"))
    add("tcp-syn-with-payload", eth / ip / TCP(sport=50016, dport=tp, flags="S") / Raw(b"x" * 64))
    add("ttl-1", eth / IP(src=src, dst=vip, ttl=1) / UDP(sport=50017, dport=up) / Raw(b"x"))
    for i, (name, flags) in enumerate(sorted(ODD_FLAGS.items())):
        add(f"tcp-flags-{name}", eth / ip / TCP(sport=ODD_SPORT_BASE + i, dport=tp, flags=flags))
    # fragments: UDP, TCP and ICMP datagrams cut in pieces, a tiny first fragment,
    # a lone middle fragment, overlapping fragments
    for frag in fragment(ip / UDP(sport=50020, dport=up) / Raw(b"u" * 3000), fragsize=1000):
        add("fragment-udp", eth / frag)
    for frag in fragment(ip / TCP(sport=50021, dport=tp, flags="S") / Raw(b"t" * 2000),
                         fragsize=800):
        add("fragment-tcp", eth / frag)
    for frag in fragment(ip / ICMP(id=7, seq=1) / Raw(b"i" * 2000), fragsize=1000):
        add("fragment-icmp", eth / frag)
    add("fragment-tiny-first", eth / IP(src=src, dst=vip, proto=6, flags="MF", frag=0)
        / Raw(bytes(syn)[:8]))
    add("fragment-lone-middle", eth / IP(src=src, dst=vip, proto=17, frag=100) / Raw(b"m" * 64))
    add("fragment-overlap-1", eth / IP(src=src, dst=vip, proto=17, flags="MF", frag=0)
        / UDP(sport=50022, dport=up, len=108) / Raw(b"a" * 64))
    add("fragment-overlap-2", eth / IP(src=src, dst=vip, proto=17, frag=1) / Raw(b"b" * 100))
    # ICMP toward the VIP: errors quoting a session, echoes with bad checksum or code
    quoted = bytes(IP(src=vip, dst=src) / UDP(sport=up, dport=40000))[:28]
    add("icmp-port-unreachable", eth / ip / ICMP(type=3, code=3) / Raw(quoted))
    add("icmp-frag-needed", eth / ip / ICMP(type=3, code=4, nexthopmtu=500) / Raw(quoted))
    add("icmp-time-exceeded", eth / ip / ICMP(type=11, code=0) / Raw(quoted))
    add("icmp-echo-bad-checksum", eth / ip / ICMP(id=9, seq=1, chksum=0x1234) / Raw(b"x" * 8))
    add("icmp-echo-code-1", eth / ip / ICMP(id=9, seq=2, code=1) / Raw(b"x" * 8))
    add("icmp-echo-truncated", eth / IP(src=src, dst=vip, proto=1) / Raw(b"\x08\x00\x00"))
    add("icmp-echo-valid", eth / ip / ICMP(id=9, seq=3) / Raw(b"ok" * 8))
    return [(k, p if isinstance(p, bytes) else bytes(p)) for k, p in out]


def fuzzed(a: argparse.Namespace, eth: Any) -> tuple[list[tuple[str, bytes]], int]:
    """``--count`` random packets (kind, frame) and the number that failed to build."""
    vip, src = a.vip, a.src
    makers = [
        ("fuzz-tcp-l4", lambda: IP(src=src, dst=vip) / fuzz(TCP(dport=a.tcp_port))),
        ("fuzz-udp-l4", lambda: IP(src=src, dst=vip) / fuzz(UDP(dport=a.udp_port))),
        ("fuzz-ip-tcp", lambda: fuzz(IP(dst=vip) / TCP(dport=a.tcp_port))),
        ("fuzz-ip-udp", lambda: fuzz(IP(dst=vip) / UDP(dport=a.udp_port))),
    ]
    out: list[tuple[str, bytes]] = []
    errors = 0
    while len(out) < a.count and errors < a.count:
        kind, make = makers[len(out) % len(makers)]
        try:
            out.append((kind, bytes(eth / make())))
        except Exception:  # noqa: BLE001 - some random field combinations do not build
            errors += 1
    return out, errors


def main(argv: list[str] | None = None) -> int:
    """Build the packets, send them at ``--pps``, print the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iface", required=True)
    p.add_argument("--dst-mac", required=True, help="next hop MAC (the clients' gateway)")
    p.add_argument("--src", required=True, help="this host's IPv4 address")
    p.add_argument("--vip", required=True)
    p.add_argument("--tcp-port", type=int, default=8000)
    p.add_argument("--udp-port", type=int, default=8000)
    p.add_argument("--phase", choices=("crafted", "fuzz"), required=True)
    p.add_argument("--count", type=int, default=10000, help="fuzz: packets to send")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pps", type=float, default=4000.0, help="send rate bound")
    a = p.parse_args(argv)
    random.seed(a.seed)
    eth = Ether(dst=a.dst_mac)
    errors = 0
    if a.phase == "crafted":
        frames = crafted(a, eth)
    else:
        frames, errors = fuzzed(a, eth)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((a.iface, 0))
    vip = socket.inet_aton(a.vip)
    kinds: Counter[str] = Counter()
    n_frag = 0
    t0 = time.monotonic()
    for i, (kind, frame) in enumerate(frames):
        ahead = t0 + i / a.pps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        try:
            sock.send(frame)
        except OSError:
            kinds["send-error"] += 1
            continue
        kinds[kind] += 1
        n_frag += is_vip_fragment(frame, vip)
    summary = {
        "sent": sum(n for k, n in kinds.items() if k != "send-error"),
        "fragments": n_frag,
        "valid_echoes": kinds["icmp-echo-valid"],
        "odd_flag_sports": [ODD_SPORT_BASE + i for i in range(len(ODD_FLAGS))]
        if a.phase == "crafted" else [],
        "by_kind": dict(sorted(kinds.items())),
        "build_errors": errors,
        "elapsed_s": round(time.monotonic() - t0, 3),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
