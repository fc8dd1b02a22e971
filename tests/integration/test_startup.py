"""Starting the real controller: bad files refused, missing files start empty."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from topologies.controller import OSKEN, Controller, free_port

pytestmark = pytest.mark.integration


def run_controller(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {"LBRP_CONFIG": str(config), "LBRP_REST_PORT": str(free_port()), "PATH": "/usr/bin:/bin"}
    return subprocess.run(check=False, args=[str(OSKEN), "--ofp-tcp-listen-port", str(free_port()), "lbrp_app"],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd="/")


@pytest.mark.parametrize(("text", "field", "value"), [
    ("services:\n  - {vip: 13.13.13.13, proto: tcp, port: 70000}\n", "services[0].port", "70000"),
    ("services:\n  - {vip: 13.13.13.300, proto: tcp, port: 80}\n", "services[0].vip",
     "13.13.13.300"),
    ("frontend_port: 1\nbogus_key: 3\n", "bogus_key", "3"),
    (("services:\n  - {vip: 1.2.3.4, proto: tcp, port: 80, backends: [{ip: 10.0.0.1, port: 80, "
     "weight: 99999}]}\n"), "weight", "99999"),
])
def test_bad_config_exits_nonzero_naming_file_field_value(tmp_path: Path, text: str, field: str,
                                                         value: str) -> None:
    cfg = tmp_path / "lbrp.yaml"
    cfg.write_text(text)
    before = cfg.stat().st_mtime_ns
    out = run_controller(cfg)
    assert out.returncode != 0
    msg = out.stderr
    assert str(cfg) in msg and field in msg and value in msg, msg[-2000:]
    assert cfg.read_text() == text and cfg.stat().st_mtime_ns == before


def test_missing_file_starts_empty_and_first_change_creates_it(tmp_path: Path) -> None:
    cfg = tmp_path / "new" / "dir" / "lbrp.yaml"
    ctl = Controller(cfg, free_port(), log_dir=tmp_path).start()
    try:
        assert ctl.request("GET", "/services") == (200, [])
        assert not cfg.exists()
        status, _ = ctl.request("PUT", "/services/13.13.13.13/tcp/80",
                                {"backends": [{"ip": "10.0.1.2", "port": 80}]})
        assert status == 201
        assert "10.0.1.2" in cfg.read_text()
    finally:
        ctl.stop()
    # the saved file is the start-up configuration of the next run
    ctl2 = Controller(cfg, free_port(), log_dir=tmp_path).start()
    try:
        status, body = ctl2.request("GET", "/services")
        assert status == 200 and [s["port"] for s in body] == [80]
    finally:
        ctl2.stop()


def test_rest_and_openflow_listen_on_loopback_by_default(tmp_path: Path) -> None:
    ctl = Controller(tmp_path / "lbrp.yaml", free_port(), log_dir=tmp_path).start()
    try:
        time.sleep(0.2)
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
        for port in (ctl.rest_port, ctl.of_port):
            line = [ln for ln in out.splitlines() if f":{port} " in ln]
            assert line and "127.0.0.1" in line[0], (port, out)
    finally:
        ctl.stop()
