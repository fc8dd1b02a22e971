#!/usr/bin/env python3
"""Tiny TCP/UDP "who am I" server for the lbrp lab backends.

Run inside a backend host::

    python3 backend_server.py --name b1 --tcp 8002 --udp 8002 [--tcp 8003 ...]

TCP: each connection's request is read up to a newline, EOF or 0.5 s
(``--request-timeout``), then the server answers ``<name>\\n`` and closes. If the first line is ``HOLD`` the
connection stays open and every later line (``PING``) is answered with
``<name>\\n`` until the client closes. UDP: every datagram is answered with
``<name>\\n`` to its sender.

Listens dual-stack (IPv4 and IPv6) unless ``--bind`` says otherwise. Prints one
``READY ...`` line once every socket listens and nothing per request. Stops on
SIGTERM/SIGINT/SIGHUP, and with ``--stop-on-stdin-eof`` when its stdin closes
(so a harness that dies leaves no orphan holding a namespace). Stdlib
only (asyncio), so it runs with any Python 3.11 inside a Mininet host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

REQUEST_TIMEOUT_S = 0.5
MAX_REQUEST_BYTES = 4096
LISTEN_BACKLOG = 4096


class TcpSession(asyncio.Protocol):
    """One TCP connection: reply once, or keep answering in HOLD mode."""

    def __init__(self, reply: bytes, request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.reply = reply
        self.request_timeout = request_timeout
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.hold = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the request timer."""
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.request_timeout, self._answer_and_close)

    def data_received(self, data: bytes) -> None:
        """Collect request bytes; act on complete lines."""
        self.buf += data
        if not self.hold:
            if b"\n" not in self.buf:
                if len(self.buf) > MAX_REQUEST_BYTES:
                    self._answer_and_close()
                return
            first, _, self.buf = self.buf.partition(b"\n")
            if first.strip() != b"HOLD":
                self._answer_and_close()
                return
            self.hold = True
            self._cancel_timer()
        while b"\n" in self.buf:
            _line, _, self.buf = self.buf.partition(b"\n")
            if self.transport is not None:
                self.transport.write(self.reply)
        if len(self.buf) > MAX_REQUEST_BYTES:
            self.buf = b""

    def eof_received(self) -> bool:
        """Client finished sending: answer (unless holding) and close."""
        if self.hold:
            if self.transport is not None:
                self.transport.close()
        else:
            self._answer_and_close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer."""
        self._cancel_timer()
        self.transport = None

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _answer_and_close(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.reply)
            self.transport.close()


class UdpEcho(asyncio.DatagramProtocol):
    """Answer every datagram with the server name."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        """Reply to the sender."""
        if self.transport is not None:
            self.transport.sendto(self.reply, addr)

    def error_received(self, exc: Exception) -> None:
        """Ignore ICMP errors from gone clients."""


def make_socket(kind: int, port: int, bind: str | None) -> socket.socket:
    """Bound socket: dual-stack on ``::`` by default, IPv4 fallback."""
    candidates: list[tuple[int, str]]
    if bind is None:
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    else:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        candidates = [(family, bind)]
    last: OSError | None = None
    for family, addr in candidates:
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and bind is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    assert last is not None
    raise last


async def serve(name: str, tcp_ports: list[int], udp_ports: list[int],
                bind: str | None, stdin_eof_stops: bool = False,
                request_timeout: float = REQUEST_TIMEOUT_S) -> None:
    """Open every listener, print READY, run until SIGTERM/SIGINT (or stdin EOF)."""
    loop = asyncio.get_running_loop()
    reply = (name + "\n").encode()
    servers: list[asyncio.AbstractServer] = []
    transports: list[asyncio.BaseTransport] = []
    for port in tcp_ports:
        sock = make_socket(socket.SOCK_STREAM, port, bind)
        servers.append(await loop.create_server(
            lambda: TcpSession(reply, request_timeout), sock=sock, backlog=LISTEN_BACKLOG))
    for port in udp_ports:
        sock = make_socket(socket.SOCK_DGRAM, port, bind)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpEcho(reply), sock=sock)
        transports.append(transport)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    if stdin_eof_stops:
        def on_stdin() -> None:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                stop.set()

        loop.add_reader(0, on_stdin)
    print(f"READY {name} tcp={','.join(map(str, tcp_ports))} "
          f"udp={','.join(map(str, udp_ports))}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    for transport in transports:
        transport.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="name sent back to clients")
    p.add_argument("--tcp", type=int, action="append", default=[],
                   metavar="PORT", help="TCP port to serve (repeatable)")
    p.add_argument("--udp", type=int, action="append", default=[],
                   metavar="PORT", help="UDP port to serve (repeatable)")
    p.add_argument("--bind", default=None,
                   help="address to bind (default: dual-stack ::, else 0.0.0.0)")
    p.add_argument("--stop-on-stdin-eof", action="store_true",
                   help="exit when stdin closes (the parent died): no orphans")
    p.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                   metavar="SECONDS",
                   help="answer and close a TCP connection whose first line has not come "
                        f"after this long (default {REQUEST_TIMEOUT_S})")
    args = p.parse_args(argv)
    if not args.tcp and not args.udp:
        p.error("give at least one --tcp or --udp port")
    if args.request_timeout <= 0:
        p.error("--request-timeout must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.name, args.tcp, args.udp, args.bind,
                          args.stop_on_stdin_eof, args.request_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
