#!/usr/bin/env python3
"""Load generator for the lbrp lab: many independent sessions to one address.

Run inside a client host::

    python3 client.py --vip 13.13.13.13 --proto tcp --port 8000 --sessions 1000 \\
        [--concurrency 20] [--timeout 2] [--src-port-base N] [--hold S] [--duration S]

TCP session: connect, send a line, read the backend's name, close. UDP session:
a fresh socket (new source port) per session, send one datagram, read the reply.
Prints ONE JSON line::

    {"ok": n, "failed": n, "by_backend": {"b1": n, ...}, "elapsed_s": x,
     "connect_ms_p50": x, "connect_ms_p99": x, "errors": {"timeout": n, ...}, ...}

``connect_ms_*`` is the TCP connect time, or the request/reply round trip for
UDP from the first send (null when no session succeeded). With ``--udp-resends
N`` a UDP datagram whose reply times out is sent again on the same socket (the
same 5-tuple, so the same backend), up to N times; ``udp_resends`` counts
them. ``errors`` counts failures by kind:
``refused`` (TCP RST / ICMP port unreachable), ``reset``, ``timeout``,
``unreachable``, ``empty`` (closed without a name), ``other``.
With ``--hold S`` (TCP) each session sends ``HOLD`` and then ``PING`` every
``--ping-interval`` seconds for S seconds; a session whose answers change
backend counts in ``changed_backend`` and as failed. Every socket operation
has a timeout, so the run always ends. With ``--duration S`` no new session
starts after S seconds (``--sessions`` stays the upper bound); ``started``
then tells how many sessions ran and ``sessions_per_s`` is per started
session. With ``--spread ADDR:PORT,...`` session i goes to the i-th target
modulo their number instead of ``--vip``/``--port`` (client-side spreading:
the benchmark's plain-forwarding baseline reaches the same backends as the
load balancer). With ``--rate R`` session i starts at i/R seconds (paced: latency
at a given load rather than at saturation); ``late_starts`` counts sessions that
started more than 10 ms behind, when all workers were busy. ``connects_over_1s``
counts connects that needed a SYN retransmission. With ``--failures N`` the summary
also lists the first N failed sessions (``failures``: the wall-clock time it started,
seconds until it failed, its client port, the stage that failed, ``connect`` or
``reply``, and the error kind), so that a caller can set them beside what else
happened then. Stdlib only.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

LATE_S = 0.010  # a paced session starting later than this behind its time counts as late
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                errno.ENETDOWN}
# the client host ran out of something: not the load balancer's fault
_LOCAL_LIMITS = {errno.EADDRNOTAVAIL: "no_port", errno.EMFILE: "emfile", errno.ENFILE: "enfile"}


@dataclass
class Result:
    """Outcome of one session."""

    ok: bool
    backend: str = ""
    connect_ms: float | None = None
    error: str = ""
    changed: bool = False
    failure: dict | None = None  # a failed session's time, port and stage (--failures)


@dataclass
class Totals:
    """Thread-safe accumulation of session results."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    failed: int = 0
    changed: int = 0
    by_backend: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    connect_ms: list[float] = field(default_factory=list)
    late: int = 0
    resends: int = 0
    failures: list[dict] = field(default_factory=list)
    keep_failures: int = 0

    def count_resend(self) -> None:
        """A UDP datagram sent again after its reply timed out."""
        with self.lock:
            self.resends += 1

    def count_late(self) -> None:
        """A paced session that started more than LATE_S after its time."""
        with self.lock:
            self.late += 1

    def add(self, r: Result) -> None:
        """Record one session."""
        with self.lock:
            if r.ok:
                self.ok += 1
                self.by_backend[r.backend] += 1
                if r.connect_ms is not None:
                    self.connect_ms.append(r.connect_ms)
            else:
                self.failed += 1
                self.errors[r.error or "other"] += 1
                if r.failure is not None and len(self.failures) < self.keep_failures:
                    self.failures.append({**r.failure, "error": r.error or "other"})
                if r.changed:
                    self.changed += 1


def classify(exc: BaseException) -> str:
    """Short error kind for an exception."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable"
    if isinstance(exc, OSError) and exc.errno in _LOCAL_LIMITS:
        return _LOCAL_LIMITS[exc.errno]
    return "other"


def _failed(sock: socket.socket, error: str, stage: str, wall: float, t0: float,
            changed: bool = False) -> Result:
    """A failed session: its error kind, and when, where and on which port it failed."""
    try:
        port = sock.getsockname()[1]
    except OSError:  # not bound
        port = 0
    return Result(False, error=error, changed=changed, failure={
        "t": round(wall, 3), "after_s": round(time.perf_counter() - t0, 3), "port": port,
        "stage": stage})


def read_line(sock: socket.socket, deadline: float) -> bytes:
    """Read up to a newline or EOF; raise TimeoutError past ``deadline``."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("reply timed out")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.partition(b"\n")[0]


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100.0 * len(ordered))))
    return round(ordered[rank - 1], 3)


class Runner:
    """Runs the sessions of one invocation."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.family = socket.AF_INET6 if ":" in args.vip else socket.AF_INET
        self.message = (args.message + "\n").encode()
        self.next_index = 0
        self.index_lock = threading.Lock()
        self.totals = Totals(keep_failures=args.failures)
        self.stop_at: float | None = None
        self.started = 0.0
        self.targets: list[tuple[str, int]] = args.spread or [(args.vip, args.port)]

    def _take(self) -> int | None:
        with self.index_lock:
            if self.next_index >= self.args.sessions:
                return None
            if self.stop_at is not None and time.monotonic() >= self.stop_at:
                return None
            i = self.next_index
            self.next_index += 1
        if self.args.rate:
            start = self.started + i / self.args.rate
            if (wait := start - time.monotonic()) > 0:
                time.sleep(wait)
            elif wait < -LATE_S:
                self.totals.count_late()
        return i

    def _new_socket(self, kind: int, index: int) -> socket.socket:
        sock = socket.socket(self.family, kind)
        sock.settimeout(self.args.timeout)
        src_addr = self.args.src or ""
        if self.args.src_port_base is not None:
            span = 65536 - self.args.src_port_base
            port = self.args.src_port_base + index % span
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((src_addr, port))
        elif self.args.src:
            sock.bind((src_addr, 0))
        return sock

    def tcp_session(self, index: int) -> Result:
        """Connect, ask, read the name, close (or hold and ping)."""
        a = self.args
        sock = self._new_socket(socket.SOCK_STREAM, index)
        wall, t0, stage = time.time(), time.perf_counter(), "connect"
        try:
            sock.connect(self.targets[index % len(self.targets)])
            connect_ms = (time.perf_counter() - t0) * 1000.0
            stage = "reply"
            if a.hold is None:
                sock.sendall(self.message)
                name = read_line(sock, time.monotonic() + a.timeout)
                if not name.strip():
                    return _failed(sock, "empty", stage, wall, t0)
                return Result(True, name.decode(errors="replace").strip(), connect_ms)
            held = self._hold(sock, connect_ms)
            return held if held.ok else _failed(sock, held.error, stage, wall, t0, held.changed)
        except OSError as exc:
            return _failed(sock, classify(exc), stage, wall, t0)
        finally:
            sock.close()

    def _hold(self, sock: socket.socket, connect_ms: float) -> Result:
        a = self.args
        sock.sendall(b"HOLD\n")
        end = time.monotonic() + a.hold
        names: list[str] = []
        while True:
            sock.sendall(b"PING\n")
            name = read_line(sock, time.monotonic() + a.timeout).decode(
                errors="replace").strip()
            if not name:
                return Result(False, error="empty")
            names.append(name)
            if len(set(names)) > 1:
                return Result(False, error="changed_backend", changed=True)
            if time.monotonic() >= end:
                break
            time.sleep(min(a.ping_interval, max(0.0, end - time.monotonic())))
        return Result(True, names[0], connect_ms)

    def udp_session(self, index: int) -> Result:
        """Fresh socket, one datagram, one reply (the datagram is resent on the same
        socket, so the same 5-tuple, up to ``--udp-resends`` times after a timeout)."""
        sock = self._new_socket(socket.SOCK_DGRAM, index)
        wall, t0 = time.time(), time.perf_counter()
        try:
            sock.connect(self.targets[index % len(self.targets)])
            t0 = time.perf_counter()  # the round trip counts from the first send
            for attempt in range(self.args.udp_resends + 1):
                sock.send(self.message)
                try:
                    data = sock.recv(4096)
                    break
                except TimeoutError:
                    if attempt == self.args.udp_resends:
                        raise
                    self.totals.count_resend()
            rtt_ms = (time.perf_counter() - t0) * 1000.0
            name = data.partition(b"\n")[0].decode(errors="replace").strip()
            if not name:
                return _failed(sock, "empty", "reply", wall, t0)
            return Result(True, name, rtt_ms)
        except OSError as exc:
            return _failed(sock, classify(exc), "reply", wall, t0)
        finally:
            sock.close()

    def worker(self) -> None:
        """Take session indices until none are left."""
        run = self.tcp_session if self.args.proto == "tcp" else self.udp_session
        while (i := self._take()) is not None:
            try:
                result = run(i)
            except (OSError, ValueError):  # one bad session must not stop the run
                result = Result(False, error="other")
            self.totals.add(result)

    def run(self) -> dict:
        """Run all sessions and return the summary."""
        a = self.args
        n_threads = max(1, min(a.concurrency, a.sessions))
        threads = [threading.Thread(target=self.worker, daemon=True)
                   for _ in range(n_threads)]
        t0 = time.perf_counter()
        self.started = time.monotonic()
        if a.duration is not None:
            self.stop_at = self.started + a.duration
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        tot = self.totals
        summary: dict = {
            "ok": tot.ok,
            "failed": tot.failed,
            "by_backend": dict(sorted(tot.by_backend.items())),
            "elapsed_s": round(elapsed, 3),
            "connect_ms_p50": percentile(tot.connect_ms, 50),
            "connect_ms_p99": percentile(tot.connect_ms, 99),
            "connect_ms_p999": percentile(tot.connect_ms, 99.9),
            "connect_ms_max": percentile(tot.connect_ms, 100),
            "connects_over_1s": sum(1 for ms in tot.connect_ms if ms >= 1000.0),
            "errors": dict(sorted(tot.errors.items())),
            "sessions_per_s": round(self.next_index / elapsed, 1) if elapsed > 0 else None,
            "proto": a.proto,
            "vip": a.vip,
            "port": a.port,
            "sessions": a.sessions,
        }
        if a.proto == "udp":
            summary["udp_resends"] = tot.resends
        if a.hold is not None:
            summary["changed_backend"] = tot.changed
        if a.rate:
            summary["rate"] = a.rate
            summary["late_starts"] = tot.late
        if a.duration is not None:
            summary["duration_s"] = a.duration
            summary["started"] = self.next_index
        if a.failures:
            summary["failures"] = tot.failures
        return summary


def addr_port(item: str) -> tuple[str, int]:
    """``10.0.1.2:8002`` -> (addr, port) (IPv4 only); ArgumentTypeError if malformed."""
    addr, sep, port = item.rpartition(":")
    if (not sep or not addr or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"not ADDR:PORT: {item!r}")
    return addr, int(port)


def _targets(text: str) -> list[tuple[str, int]]:
    """``10.0.1.2:8002,10.0.1.3:8003`` -> [(addr, port), ...] (IPv4 only)."""
    return [addr_port(item) for item in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vip", required=True, help="address to connect to")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds for each socket operation (default 2)")
    p.add_argument("--udp-resends", type=int, default=0, metavar="N",
                   help="UDP: send a datagram again, on the same socket, up to N times "
                        "when its reply times out (default 0)")
    p.add_argument("--src-port-base", type=int, default=None,
                   help="bind session i to source port N+i (wraps at 65535)")
    p.add_argument("--src", default=None, help="source address to bind")
    p.add_argument("--message", default="HELLO", help="request line to send")
    p.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                   help="TCP: keep each session open this long, pinging")
    p.add_argument("--ping-interval", type=float, default=0.2)
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="start no new session after this many seconds")
    p.add_argument("--rate", type=float, default=None, metavar="PER_S",
                   help="start session i at i/PER_S seconds (paced, not as fast as possible)")
    p.add_argument("--failures", type=int, default=0, metavar="N",
                   help="list the first N failed sessions in the summary (time, client "
                        "port, stage, error)")
    p.add_argument("--spread", type=_targets, default=None, metavar="ADDR:PORT,...",
                   help="session i connects to the i-th of these (mod their number)")
    args = p.parse_args(argv)
    if args.sessions < 0 or args.concurrency < 1 or args.timeout <= 0:
        p.error("--sessions >= 0, --concurrency >= 1 and --timeout > 0 please")
    if args.udp_resends < 0 or args.failures < 0:
        p.error("--udp-resends and --failures must be >= 0")
    if args.src_port_base is not None and not 1 <= args.src_port_base <= 65535:
        p.error("--src-port-base must be in 1..65535")
    if args.hold is not None and args.proto != "tcp":
        p.error("--hold is for TCP only")
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be > 0")
    if args.duration is not None and args.duration <= 0:
        p.error("--duration must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: run and print one JSON line."""
    args = parse_args(argv)
    summary = Runner(args).run()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
