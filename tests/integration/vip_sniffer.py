#!/usr/bin/env python3
"""Count IPv4 packets addressed to a VIP on every interface of a namespace (stdlib only).

Run inside a lab host (r1, b1..bM)::

    python3 vip_sniffer.py --vip 13.13.13.13 --ports 8000 [--seconds 120]

Prints ``READY`` once capturing, then, on SIGTERM or after ``--seconds``,
ONE JSON line::

    {"total": n, "claimed": n, "other": n, "by_kind": {...}, "samples": ["<hex>", ...]}

``total`` counts every received IPv4 packet whose destination is the VIP.
``claimed`` counts those the lbrp pipeline claims for the VIP and must never
forward un-rewritten, parsed the way OVS parses them (``miniflow_extract``):
well-formed IPv4 fragments, ICMP echo requests (type 8, code 0), and TCP/UDP with a complete
L4 header to one of ``--ports``. ``other`` is the rest (other protocols, ICMP
errors, headers OVS cannot parse): the pipeline passes those unchanged by design.
Outgoing copies (``PACKET_OUTGOING``) are not counted.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def classify(frame: bytes, vip: bytes, ports: set[int]) -> str | None:
    """None if ``frame`` is not IPv4 to the VIP, else its kind (``claimed:*`` or ``other:*``)."""
    off = 14
    if len(frame) < off + 20:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x8100 and len(frame) >= 18 + 20:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if ethertype != 0x0800 or frame[off + 16:off + 20] != vip:
        return None
    ip = frame[off:]
    ihl = (ip[0] & 0x0F) * 4
    tot_len = struct.unpack_from("!H", ip, 2)[0]
    if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl or tot_len < ihl or tot_len > len(ip):
        return "other:bad-ip-header"
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:
        return "claimed:fragment"
    proto, l4 = ip[9], ip[ihl:tot_len]
    if proto == 1:
        echo = len(l4) >= 8 and l4[0] == 8 and l4[1] == 0  # what the echo flow matches
        return "claimed:icmp-echo" if echo else "other:icmp"
    if proto == 6:
        if len(l4) >= 20 and 20 <= (l4[12] >> 4) * 4 <= len(l4):
            dport = struct.unpack_from("!H", l4, 2)[0]
            return "claimed:tcp" if dport in ports else "other:tcp-other-port"
        return "other:tcp-bad-header"
    if proto == 17:
        if len(l4) >= 8:
            dport = struct.unpack_from("!H", l4, 2)[0]
            return "claimed:udp" if dport in ports else "other:udp-other-port"
        return "other:udp-bad-header"
    return f"other:proto-{proto}"


def main(argv: list[str] | None = None) -> int:
    """Capture until told to stop; print the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vip", required=True)
    p.add_argument("--ports", default="", help="comma-separated service ports")
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long")
    args = p.parse_args(argv)
    vip = socket.inet_aton(args.vip)
    ports = {int(x) for x in args.ports.split(",") if x}
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    kinds: Counter[str] = Counter()
    samples: list[str] = []
    print("READY", flush=True)
    deadline = time.monotonic() + args.seconds
    while not stop and time.monotonic() < deadline:
        try:
            ready, _, _ = select.select([sock], [], [], 0.2)
        except InterruptedError:
            continue
        if not ready:
            continue
        while True:  # drain what is queued
            try:
                frame, addr = sock.recvfrom(65535, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            kind = classify(frame, vip, ports)
            if kind is not None:
                kinds[kind] += 1
                if kind.startswith("claimed") and len(samples) < 5:
                    samples.append(f"{addr[0]} {frame[:80].hex()}")
    total = sum(kinds.values())
    claimed = sum(n for k, n in kinds.items() if k.startswith("claimed"))
    print(json.dumps({"total": total, "claimed": claimed, "other": total - claimed,
                      "by_kind": dict(sorted(kinds.items())), "samples": samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
