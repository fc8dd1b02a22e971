#!/usr/bin/env python3
"""Open many long-lived TCP sessions and hold them (run inside a lab client host).

Stdlib only (asyncio), one process for all sessions: a thread per session
(client.py --hold) does not scale to 100k. Usage::

    python3 holder.py --dst 13.13.13.13:8000 [--dst ...] --src 10.0.0.1 --src 10.0.0.101 \\
        --n 100000 [--inflight 400] [--open-deadline 240] [--wait-go 120]

Session i connects from ``--src[i % n_src]`` (ephemeral port) to
``--dst[i % n_dst]`` and sends ``HOLD`` (backend_server.py then keeps it open).
At most ``--inflight`` connects are pending at once. When every session was
tried (or ``--open-deadline`` passed) it prints one line ``ESTABLISHED {json}``
and waits for a line on stdin (at most ``--wait-go`` seconds) so the caller can
measure the switch while the sessions are held; then it sends ``PING`` on every
open session (``--verify-rate`` per second), counts the answers (``held``) within
``--reply-timeout`` after the last one,
closes everything with RST (SO_LINGER 0: no orphan sockets retransmitting FINs
through the lab afterwards) and prints ``DONE {json}``. Every step has a timeout, so the run always ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script in a host
from topologies.client import addr_port, classify, percentile

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
NO_ANSWER_SAMPLE = 20  # sessions named in DONE's sample of the unanswered


class Session(asyncio.Protocol):
    """One held TCP session: counts reply lines."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.replies = 0
        self.ever_replied = False
        self.lost = False
        self.lost_how = ""
        self.name = ""  # client ip:port>server ip:port, for the sample of unanswered sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Ask the backend to hold the session."""
        self.transport = transport  # type: ignore[assignment]
        src, dst = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        self.name = f"{src[0]}:{src[1]}>{dst[0]}:{dst[1]}" if src and dst else "?"
        transport.write(b"HOLD\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        """Count complete reply lines."""
        self.buf += data
        while b"\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\n")
            self.replies += 1
            self.ever_replied = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember that the session is gone, and how."""
        self.lost = True
        if exc is None:
            # EOF; a reply before it means backend_server gave up waiting for HOLD
            self.lost_how = "fin_after_reply" if self.ever_replied else "fin"
        else:
            self.lost_how = classify(exc)


async def run(a: argparse.Namespace) -> None:
    """Open, report, wait, verify, close."""
    loop = asyncio.get_running_loop()
    dsts = a.dst
    srcs = a.src or [""]
    sem = asyncio.Semaphore(a.inflight)
    sessions: list[Session] = []
    errors: Counter[str] = Counter()
    connect_ms: list[float] = []
    t_start = time.monotonic()
    deadline = t_start + a.open_deadline

    async def one(i: int) -> None:
        try:
            if time.monotonic() > deadline:
                errors["not_tried"] += 1
                return
            ip, port = dsts[i % len(dsts)]
            t0 = time.perf_counter()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # the port is picked at connect() time, per destination: bind(addr, 0)
                # alone searches the whole port range of the address (slow when crowded)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((srcs[i % len(srcs)], 0))
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), a.connect_timeout)
            except BaseException:
                sock.close()
                raise
            _, proto = await loop.create_connection(Session, sock=sock)
            connect_ms.append((time.perf_counter() - t0) * 1000)
            sessions.append(proto)
        except (TimeoutError, OSError) as exc:
            errors[classify(exc)] += 1
        finally:
            sem.release()

    tasks = []
    for i in range(a.n):
        await sem.acquire()
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    open_s = time.monotonic() - t_start
    alive = sum(1 for s in sessions if not s.lost)
    report = {"attempted": a.n, "established": len(sessions), "alive": alive,
              "lost_how": dict(Counter(s.lost_how for s in sessions if s.lost)),
              "open_s": round(open_s, 3),
              "open_per_s": round(len(sessions) / open_s, 1) if open_s > 0 else None,
              "connect_ms_p50": percentile(connect_ms, 50),
              "connect_ms_p99": percentile(connect_ms, 99),
              "connect_ms_max": percentile(connect_ms, 100), "errors": dict(errors)}
    print("ESTABLISHED " + json.dumps(report), flush=True)

    # wait for the caller's go (a line on stdin, or EOF), bounded
    reader = asyncio.StreamReader()
    with contextlib.suppress(OSError, ValueError):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readline(), a.wait_go)

    # verify: one PING per open session, paced at --verify-rate, then wait for the answers
    t_v = time.monotonic()
    live = [s for s in sessions if not s.lost]
    for s in live:
        s.replies = 0
    step = max(1, int(a.verify_rate / 20))
    for start in range(0, len(live), step):
        for s in live[start:start + step]:
            if s.transport is not None and not s.transport.is_closing():
                s.transport.write(b"PING\n")
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + a.reply_timeout
    while time.monotonic() < deadline:
        held = sum(1 for s in live if s.replies > 0)
        if held + sum(1 for s in live if s.lost and s.replies == 0) >= len(live):
            break
        await asyncio.sleep(0.25)
    held = sum(1 for s in live if s.replies > 0)
    verify_s = time.monotonic() - t_v
    # before we close anything ourselves
    lost = sum(1 for s in live if s.lost and s.replies == 0)
    lost_how = dict(Counter(s.lost_how for s in live if s.lost and s.replies == 0))
    sample = [s.name for s in live if not s.lost and s.replies == 0][:NO_ANSWER_SAMPLE]
    # abortive close (RST), paced like the PINGs: no FIN_WAIT/orphan sockets left to
    # retransmit through the lab after it has been reprogrammed, and no burst of RSTs
    # for the datapath to drop
    for start in range(0, len(sessions), step):
        for s in sessions[start:start + step]:
            if s.transport is None:
                continue
            sock = s.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            s.transport.close()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    report.update({"held": held, "verify_s": round(verify_s, 3), "closed_before_ping": lost,
                   "lost_how": lost_how,
                   "no_answer": len(live) - held - lost,
                   "no_answer_sample": sample})
    print("DONE " + json.dumps(report), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dst", action="append", required=True, type=addr_port,
                   help="ip:port (repeatable)")
    p.add_argument("--src", action="append", default=[], help="source address (repeatable)")
    p.add_argument("--n", type=int, required=True, help="sessions to open")
    p.add_argument("--inflight", type=int, default=400, help="pending connects at most")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--open-deadline", type=float, default=240.0,
                   help="seconds after which no new session is tried")
    p.add_argument("--wait-go", type=float, default=120.0,
                   help="seconds to wait for the go line on stdin")
    p.add_argument("--reply-timeout", type=float, default=60.0,
                   help="seconds to wait for the answers after the last PING")
    p.add_argument("--verify-rate", type=float, default=5000.0,
                   help="PINGs per second (the lab forwards some 10^5 packets/s at best)")
    a = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 1024
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    socket.setdefaulttimeout(None)
    asyncio.run(run(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
