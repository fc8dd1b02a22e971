"""``lbrpctl`` round-trips every command against a running controller."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrp_app import cli
from topologies.controller import Controller, free_port

pytestmark = pytest.mark.integration
LBRPCTL = Path(sys.executable).with_name("lbrpctl")
TOKEN = "ctl-token"


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    folder = tmp_path_factory.mktemp("ctl")
    c = Controller(folder / "lbrp.yaml", free_port(), env={"LBRP_REST_TOKEN": TOKEN},
                   log_dir=folder).start()
    yield c
    c.stop()


def run(ctl: Controller, *args: str, token: str | None = TOKEN,
        url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LBRP_URL": url or f"http://127.0.0.1:{ctl.rest_port}"}
    if token:
        env["LBRP_REST_TOKEN"] = token
    return subprocess.run([str(LBRPCTL), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def test_every_command_round_trips(ctl: Controller) -> None:
    out = run(ctl, "service", "add", "13.13.13.13:tcp:8000", "--name", "web",
              "--backend", "10.0.1.2:8002:10", "--backend", "10.0.1.3:8003")
    assert out.returncode == 0, out.stderr
    assert "TCP  13.13.13.13:8000" in out.stdout and "10.0.1.2:8002" in out.stdout
    assert run(ctl, "backend", "add", "13.13.13.13:tcp:8000", "10.0.1.4:8004",
               "--weight", "5").returncode == 0
    assert run(ctl, "backend", "set", "13.13.13.13:tcp:8000", "10.0.1.3:8003",
               "--weight", "0").returncode == 0
    shown = json.loads(run(ctl, "--json", "service", "show", "13.13.13.13:tcp:8000").stdout)
    assert shown == [{"vip": "13.13.13.13", "proto": "tcp", "port": 8000, "name": "web",
                      "backends": [{"ip": "10.0.1.2", "port": 8002, "weight": 10},
                                   {"ip": "10.0.1.3", "port": 8003, "weight": 0},
                                   {"ip": "10.0.1.4", "port": 8004, "weight": 5}]}]
    # the CLI and the REST API agree
    assert ctl.request("GET", "/services")[1] == shown
    table = run(ctl, "service", "show").stdout
    assert "drain" in table and "66.7%" in table
    assert run(ctl, "backend", "del", "13.13.13.13:tcp:8000", "10.0.1.4:8004").returncode == 0
    assert len(ctl.request("GET", "/services/13.13.13.13/tcp/8000")[1]["backends"]) == 2
    health = json.loads(run(ctl, "--json", "health").stdout)
    assert health["status"] == "ok"
    assert run(ctl, "service", "del", "13.13.13.13:tcp:8000").returncode == 0
    assert ctl.request("GET", "/services")[1] == []


def test_errors_have_clear_messages_and_distinct_exit_codes(ctl: Controller) -> None:
    run(ctl, "service", "add", "13.13.13.14:udp:53")
    cases = [
        (("service", "add", "13.13.13.14:udp:53"), cli.EXIT_EXISTS, "already exists"),
        (("service", "show", "1.2.3.4:tcp:1"), cli.EXIT_NOT_FOUND, "404"),
        (("backend", "set", "13.13.13.14:udp:53", "10.0.0.9:53", "--weight", "1"),
         cli.EXIT_NOT_FOUND, "does not exist"),
        (("backend", "add", "13.13.13.14:udp:53", "10.0.0.9:53", "--weight", "70000"),
         cli.EXIT_BAD_REQUEST, "weight"),
        (("service", "add", "13.13.13.14-udp-53"), cli.EXIT_USAGE, "VIP:PROTO:PORT"),
        (("backend", "add", "13.13.13.14:udp:53", "10.0.0.9"), cli.EXIT_USAGE, "IP:PORT"),
    ]
    for args, code, needle in cases:
        out = run(ctl, *args)
        assert out.returncode == code, (args, out.returncode, out.stderr)
        assert needle in out.stderr, (args, out.stderr)
    out = run(ctl, "service", "del", "13.13.13.14:udp:53", token=None)
    assert out.returncode == cli.EXIT_UNAUTHORIZED and "Authorization" in out.stderr
    out = run(ctl, "health", url=f"http://127.0.0.1:{free_port()}")
    assert out.returncode == cli.EXIT_CONNECT and "cannot reach" in out.stderr
    assert run(ctl, "service", "del", "13.13.13.14:udp:53").returncode == 0
