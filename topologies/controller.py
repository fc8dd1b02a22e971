"""Run a real ``osken-manager lbrp_app`` (integration tests, demo, benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OSKEN = Path(sys.executable).with_name("osken-manager")


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now and not given to an earlier call of this process.

    The socket is closed before the caller binds the port, so the kernel may offer the
    same port to the next call: a test that took its REST and OpenFlow ports that way
    once got the same port twice.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_for(pred: Any, timeout: float, what: str | Callable[[], str],
             interval: float = 0.1) -> Any:
    """Poll ``pred`` until it returns a truthy value; fail with ``what`` after ``timeout``.

    ``what`` may be a callable, called at the failure to describe the last state seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            desc = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {desc}")
        time.sleep(interval)


class Controller:
    """One osken-manager process with its own config file, OpenFlow and REST ports."""

    def __init__(self, config_path: Path, of_port: int, rest_port: int | None = None,
                 env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.config_path = config_path
        self.of_port = of_port
        self.rest_port = rest_port or free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.send_token = False
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"lbrp-{self.rest_port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}/lbrp/v1"

    def start(self, wait: bool = True) -> Controller:
        env = dict(os.environ, LBRP_CONFIG=str(self.config_path),
                   LBRP_REST_HOST="127.0.0.1", LBRP_REST_PORT=str(self.rest_port),
                   **self.extra_env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [str(OSKEN), "--ofp-tcp-listen-port", str(self.of_port), "lbrp_app"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        if wait:
            wait_for(self._rest_up, 30, "the REST API to answer")
        return self

    def _rest_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"controller exited {self.proc.returncode}: {self.log()}")
        try:
            self.request("GET", "/health")
            return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def request(self, method: str, path: str, body: Any = None,
                raw: bytes | None = None, timeout: float = 30,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        headers = {**self.auth_headers(), **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            text = err.read()
            return err.code, json.loads(text) if text else None

    def auth_headers(self) -> dict[str, str]:
        token = self.extra_env.get("LBRP_REST_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token and self.send_token else {}

    def programmed(self, dpid: str) -> bool:
        status, body = self.request("GET", "/health")
        return status == 200 and any(s["dpid"] == dpid for s in body["switches"])

    def wait_programmed(self, dpid: str, timeout: float = 30) -> None:
        wait_for(lambda: self.programmed(dpid), timeout, f"switch {dpid} to be programmed")
