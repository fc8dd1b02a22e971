"""The lab's load generator (topologies/client.py): spreading, pacing, its summary.

Runs against small TCP servers on loopback, no lab needed.
"""

from __future__ import annotations

import argparse
import errno
import socket
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
    # none late with idle workers; a loaded 2-core machine may delay a thread past 10 ms
    assert out["rate"] == 50 and out["late_starts"] <= 2


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


def test_failures_lists_the_first_n_failed_sessions_with_stage_and_port(
        lossy_udp: tuple[str, int]) -> None:
    """A refused connect fails at ``connect``, an unanswered datagram at ``reply``; each
    with the client port it used and when it started; no more than N are listed."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the kernel answers a SYN with a RST
    before = time.time()
    out = run("--vip", "127.0.0.1", "--port", str(port), "--sessions", "4", "--concurrency",
              "1", "--failures", "3")
    assert out["failed"] == 4 and out["errors"] == {"refused": 4}
    assert len(out["failures"]) == 3
    ports = set()
    for f in out["failures"]:
        assert (f["stage"], f["error"]) == ("connect", "refused"), f
        assert before - 0.001 <= f["t"] <= time.time() + 0.001  # rounded to ms
        assert 0 <= f["after_s"] < 1.0
        ports.add(f["port"])
    assert len(ports) == 3 and 0 not in ports  # a new client port per session

    host, port = lossy_udp
    out = run("--vip", host, "--port", str(port), "--proto", "udp", "--sessions", "2",
              "--concurrency", "2", "--timeout", "0.3", "--failures", "5")
    assert [(f["stage"], f["error"]) for f in out["failures"]] == [("reply", "timeout")] * 2
    assert all(f["port"] and f["after_s"] >= 0.3 for f in out["failures"]), out["failures"]
    assert "failures" not in run("--vip", host, "--port", str(port), "--proto", "udp")


def test_a_tcp_session_closed_without_an_answer_fails_at_its_reply() -> None:
    """Connected, then closed with no name: ``empty`` at the ``reply`` stage."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def close_each() -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            conn.recv(64)
            conn.close()

    t = threading.Thread(target=close_each, daemon=True)
    t.start()
    out = run("--vip", "127.0.0.1", "--port", str(srv.getsockname()[1]), "--sessions", "2",
              "--concurrency", "1", "--failures", "2")
    t.join(5)
    srv.close()
    assert out["errors"] == {"empty": 2}
    assert [(f["stage"], f["error"]) for f in out["failures"]] == [("reply", "empty")] * 2


def test_negative_failures_is_refused() -> None:
    with pytest.raises(SystemExit):
        client.parse_args(["--vip", "127.0.0.1", "--port", "1", "--failures", "-1"])
