"""Parsing of ``ovs-appctl dpctl/...`` output about lbrp's conntrack zone (pure).

:mod:`lbrp_app.ovsdb` runs the commands; the stats and the purge of a
backend read their output through these functions.
"""

from __future__ import annotations

import re


def parse_zone_count(text: str, zone: int) -> int | None:
    """The connection count of ``zone`` in ``dpctl/ct-get-limits`` output, if listed."""
    m = re.search(rf"\bzone={zone},limit=\d+,count=(\d+)", text)
    return int(m.group(1)) if m else None


CONN = re.compile(r"^(tcp|udp),orig=\(src=([\d.]+),dst=([\d.]+),sport=(\d+),dport=(\d+)\)"
                  r".*?,labels=0x([0-9a-f]+)")


Origin = tuple[str, str, str, int, int]  # proto, src, dst, sport, dport (original direction)


def labelled_entries(dump: str) -> list[tuple[int, Origin]]:
    """(ct_label, original tuple) of each TCP/UDP connection with a label in
    ``dpctl/dump-conntrack`` output."""
    out = []
    for line in dump.splitlines():
        if m := CONN.match(line):
            out.append((int(m.group(6), 16), (m.group(1), m.group(2), m.group(3),
                                              int(m.group(4)), int(m.group(5)))))
    return out


def labelled_connections(dump: str, labels: set[int]) -> list[Origin]:
    """Original tuples of the connections whose ct_label is in ``labels``."""
    return [origin for label, origin in labelled_entries(dump) if label in labels]
