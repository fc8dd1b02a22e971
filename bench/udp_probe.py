#!/usr/bin/env python3
"""UDP probe for the "REST change to first packet" measurement (runs inside lab hosts).

Stdlib only. Two modes::

    python3 udp_probe.py send --dst 13.13.13.14:9000 [--interval 0.002] [--duration 60]
    python3 udp_probe.py listen --bind 10.0.1.4 --ports 9100-9119 [--duration 120]

``send``: one datagram every ``--interval`` seconds, each from a fresh socket
(a new source port, so a new session through the load balancer), for at most
``--duration`` seconds; prints ``SENT {json}`` at the end.
``listen``: prints ``READY`` once every port is bound, then ``FIRST <port>
<unix time>`` for the first datagram that reaches each port, until stdin
closes or ``--duration`` passes. Network namespaces share the clock, so these
times compare with the caller's ``time.time()``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time


def send(a: argparse.Namespace) -> None:
    """Send datagrams from fresh sockets at a fixed pace."""
    ip, _, port = a.dst.rpartition(":")
    dst = (ip, int(port))
    end = time.monotonic() + a.duration
    sent = errors = 0
    nxt = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < nxt:
            time.sleep(nxt - now)
        nxt += a.interval
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"PROBE\n", dst)
            sent += 1
        except OSError:
            errors += 1
        finally:
            s.close()
    print("SENT " + json.dumps({"sent": sent, "errors": errors}), flush=True)


def listen(a: argparse.Namespace) -> None:
    """Report the first datagram on each port."""
    lo, _, hi = a.ports.partition("-")
    ports = range(int(lo), int(hi or lo) + 1)
    socks: dict[int, int] = {}
    objs = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.bind, port))
        s.setblocking(False)
        objs.append(s)
        socks[s.fileno()] = port
    seen: set[int] = set()
    print("READY", flush=True)
    end = time.monotonic() + a.duration
    fds = [*socks, 0]
    while time.monotonic() < end:
        ready, _, _ = select.select(fds, [], [], 0.5)
        now = time.time()
        for fd in ready:
            if fd == 0:
                if not os.read(0, 4096):
                    return
                continue
            port = socks[fd]
            sock = next(s for s in objs if s.fileno() == fd)
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
            if port not in seen:
                seen.add(port)
                print(f"FIRST {port} {now:.6f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True, help="ip:port")
    s.add_argument("--interval", type=float, default=0.002)
    s.add_argument("--duration", type=float, default=60.0)
    li = sub.add_parser("listen")
    li.add_argument("--bind", required=True)
    li.add_argument("--ports", required=True, help="N or N-M")
    li.add_argument("--duration", type=float, default=120.0)
    a = p.parse_args(argv)
    if a.mode == "send":
        send(a)
    else:
        listen(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
