"""The lab's load generator (topologies/client.py): spreading, pacing, its summary.

Runs against small TCP servers on loopback, no lab needed.
"""

from __future__ import annotations

import argparse
import errno
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from topologies import client


class NameHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        self.wfile.write(self.server.name.encode() + b"\n")  # type: ignore[attr-defined]


class NameServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    delay = 0.0


@pytest.fixture()
def servers() -> Iterator[list[tuple[str, int]]]:
    """Two loopback servers answering "s0" and "s1"."""
    started = []
    for i in range(2):
        srv = NameServer(("127.0.0.1", 0), NameHandler)
        srv.name = f"s{i}"  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
    yield [srv.server_address[:2] for srv in started]
    for srv in started:
        srv.shutdown()
        srv.server_close()


def run(*argv: str) -> dict:
    return client.Runner(client.parse_args(list(argv))).run()


def test_targets_parse_and_refuse_bad_items() -> None:
    assert client._targets("10.0.1.2:8002,10.0.1.3:8003") == [("10.0.1.2", 8002),
                                                               ("10.0.1.3", 8003)]
    for bad in ("10.0.1.2", "10.0.1.2:0", "10.0.1.2:70000", ":80", "10.0.1.2:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            client._targets(bad)


def test_spread_sends_session_i_to_target_i_mod_n(servers: list[tuple[str, int]]) -> None:
    spread = ",".join(f"{h}:{p}" for h, p in servers)
    out = run("--vip", "127.0.0.1", "--port", "1", "--sessions", "10", "--concurrency", "3",
              "--spread", spread)
    assert out["ok"] == 10 and out["failed"] == 0
    assert out["by_backend"] == {"s0": 5, "s1": 5}
    assert out["connects_over_1s"] == 0
    assert out["connect_ms_p50"] <= out["connect_ms_p99"] <= out["connect_ms_max"]


def test_rate_paces_sessions(servers: list[tuple[str, int]]) -> None:
    host, port = servers[0]
    out = run("--vip", host, "--port", str(port), "--sessions", "20", "--concurrency", "4",
              "--rate", "50")
    assert out["ok"] == 20
    # 20 sessions at 50/s: the last starts at 0.38 s; unpaced they take a few ms
    assert out["elapsed_s"] >= 0.38
    assert out["rate"] == 50 and out["late_starts"] == 0


def test_rate_counts_late_starts_when_every_worker_is_busy(
        servers: list[tuple[str, int]]) -> None:
    host, port = servers[0]
    NameServer.delay = 0.05
    try:  # one worker, sessions of 50 ms, one due every 10 ms: most start late
        out = run("--vip", host, "--port", str(port), "--sessions", "10", "--concurrency",
                  "1", "--rate", "100")
    finally:
        NameServer.delay = 0.0
    assert out["ok"] == 10
    assert out["late_starts"] >= 5


def test_bad_rate_is_refused() -> None:
    with pytest.raises(SystemExit):
        client.parse_args(["--vip", "127.0.0.1", "--port", "1", "--rate", "0"])


@pytest.mark.parametrize(("exc", "kind"), [
    (ConnectionRefusedError(), "refused"),
    (ConnectionResetError(), "reset"),
    (TimeoutError(), "timeout"),
    (OSError(errno.EHOSTUNREACH, "x"), "unreachable"),
    (OSError(errno.EADDRNOTAVAIL, "x"), "no_port"),
    (OSError(errno.EMFILE, "x"), "emfile"),
    (OSError(errno.EIO, "x"), "other"),
    (ValueError(), "other"),
])
def test_errors_are_named_by_kind(exc: BaseException, kind: str) -> None:
    """client.py and bench/holder.py count errors under these names."""
    assert client.classify(exc) == kind


@pytest.mark.parametrize("item", ["10.0.1.2:\u00b9", "10.0.1.2:", ":80", "10.0.1.2:70000"])
def test_bad_addr_port_is_an_argument_error(item: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        client.addr_port(item)


class DropFirstHandler(socketserver.BaseRequestHandler):
    """Answers a UDP source's second datagram and later ones, never its first."""

    def handle(self) -> None:
        _, sock = self.request
        seen = self.server.seen  # type: ignore[attr-defined]
        if self.client_address not in seen:
            seen.add(self.client_address)
            return
        sock.sendto(b"u0\n", self.client_address)


@pytest.fixture()
def lossy_udp() -> Iterator[tuple[str, int]]:
    srv = socketserver.UDPServer(("127.0.0.1", 0), DropFirstHandler)
    srv.seen = set()  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[:2]
    srv.shutdown()
    srv.server_close()


def test_udp_resends_on_the_same_socket_after_a_timeout(lossy_udp: tuple[str, int]) -> None:
    """The resend reuses the 5-tuple: the server saw that source before and answers."""
    host, port = lossy_udp
    common = ("--vip", host, "--port", str(port), "--proto", "udp", "--sessions", "5",
              "--concurrency", "5", "--timeout", "0.3")
    out = run(*common, "--udp-resends", "1")
    assert (out["ok"], out["failed"], out["udp_resends"]) == (5, 0, 5), out
    assert out["by_backend"] == {"u0": 5}
    out = run(*common)
    assert (out["ok"], out["errors"], out["udp_resends"]) == (0, {"timeout": 5}, 0), out


def test_negative_udp_resends_is_refused() -> None:
    with pytest.raises(SystemExit):
        client.parse_args(["--vip", "127.0.0.1", "--port", "1", "--udp-resends", "-1"])
