"""Where a TCP connect's time goes, from captures on lb0's two ports.

A connect is the client's SYN and the SYN-ACK that answers it. Captured (``tcpdump
-tt -n``) on lb0's frontend port and on its backend port, each connect splits into:

- ``syn_lb0``: the SYN entering lb0 from the client until it leaves towards the backend;
- ``backend_side``: from there until the SYN-ACK enters lb0 again (the router, the
  backend-side switch and the backend's kernel);
- ``synack_lb0``: the SYN-ACK entering lb0 until it leaves towards the client;
- ``lb0_round_trip``: all three, SYN in to SYN-ACK out.

The client's own side (its kernel, the client-side switch, its scheduling) is the
connect time the client measured minus ``lb0_round_trip``; it is not captured here.

The same captures of a saturated run show client ports reused: :func:`reuse` counts
the SYNs that lb0 sent on with another source port than the client's (OVS 3.1.0's
conntrack NAT did that when a port was reused soon after its last connection, in
lbrp's conntrack pipeline before 2026-11-27: ``bench/RESULTS.md``) and the SYNs the
client had to send again.

Pure: parses tcpdump's text and computes; the benchmark runs tcpdump.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from topologies.client import percentile

SEGMENTS = {"lb0_round_trip": "SYN into lb0 -> SYN-ACK out of it",
            "syn_lb0": "SYN through lb0",
            "backend_side": "lb0 -> backend -> lb0",
            "synack_lb0": "SYN-ACK through lb0"}
"""Segment name -> how the benchmark's table labels it."""
TCPDUMP_FILTER = "tcp[tcpflags] & tcp-syn != 0"
"""SYNs and SYN-ACKs only: a few packets per connect, filtered in the kernel."""

_LINE = re.compile(r"^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > "
                   r"(\d+\.\d+\.\d+\.\d+)\.(\d+): Flags \[([^\]]*)\](?:, seq (\d+))?")


class Packet(NamedTuple):
    """One captured TCP packet."""

    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: str  # tcpdump's: "S" for a SYN, "S." for a SYN-ACK
    seq: int | None = None


def parse(lines: Iterable[str]) -> list[Packet]:
    """Packets of ``tcpdump -tt -n`` output; other lines are skipped."""
    out = []
    for line in lines:
        m = _LINE.match(line)
        if m:
            out.append(Packet(float(m[1]), (m[2], int(m[3])), (m[4], int(m[5])), m[6],
                              int(m[7]) if m[7] else None))
    return out


def _first(packets: list[Packet], flags: str, client_is_src: bool) -> dict[tuple[str, int], float]:
    """Time of the first packet with ``flags`` per client ip:port."""
    seen: dict[tuple[str, int], float] = {}
    for p in packets:
        if p.flags == flags:
            seen.setdefault(p.src if client_is_src else p.dst, p.t)
    return seen


def connects(frontend: list[Packet], backend: list[Packet]) -> list[dict[str, float]]:
    """Per connect seen on both ports, its segments in ms (see the module docstring).

    Connects are keyed by the client's ip:port; a port reused within one capture
    counts once, with its first SYN and SYN-ACK. A connect whose port lb0 rewrote
    (see :func:`reuse`) has no SYN out under that key and is left out.
    """
    syn_in, synack_out = _first(frontend, "S", True), _first(frontend, "S.", False)
    syn_out, synack_in = _first(backend, "S", True), _first(backend, "S.", False)
    out = []
    for client, t0 in syn_in.items():
        t1, t2, t3 = syn_out.get(client), synack_in.get(client), synack_out.get(client)
        if t1 is None or t2 is None or t3 is None or not t0 <= t1 <= t2 <= t3:
            continue
        out.append({"syn_lb0": (t1 - t0) * 1e3, "backend_side": (t2 - t1) * 1e3,
                    "synack_lb0": (t3 - t2) * 1e3, "lb0_round_trip": (t3 - t0) * 1e3})
    return out


def reuse(frontend: list[Packet], backend: list[Packet]) -> dict[str, int]:
    """Client SYNs into lb0 (``syns``, one per client ip:port and sequence number), how
    many left lb0 with another source ip:port (``port_rewritten``, matched by sequence
    number), and how many the client sent again (``syn_resent``: same port and seq)."""
    into: dict[tuple[tuple[str, int], int], int] = {}
    for p in frontend:
        if p.flags == "S" and p.seq is not None:
            into[(p.src, p.seq)] = into.get((p.src, p.seq), 0) + 1
    out = {p.seq: p.src for p in backend if p.flags == "S" and p.seq is not None}
    rewritten = sum(1 for src, seq in into if seq in out and out[seq] != src)
    return {"syns": len(into), "port_rewritten": rewritten,
            "syn_resent": sum(n - 1 for n in into.values())}


def summary(rows: list[dict[str, float]]) -> dict[str, float | int | None]:
    """``connects`` and, per segment, p50/p90/p99 in ms (3 decimals)."""
    out: dict[str, float | int | None] = {"connects": len(rows)}
    for seg in SEGMENTS:
        for pct in (50, 90, 99):
            out[f"{seg}_ms_p{pct}"] = percentile([r[seg] for r in rows], pct)
    return out
