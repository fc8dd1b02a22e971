"""Shared helpers for the integration tests (root, OVS, Mininet).

Fixtures:
- ``require_root_and_ovs``: skips the test unless root, OVS running and Mininet present.
- ``run_in``: ``run_in(host, cmd, timeout=10.0, check=False)`` runs a command in a
  Mininet host with a hard timeout (see ``topologies.lbrp_topo.run_in``).
- ``free_tcp_port``: a free TCP port on 127.0.0.1 (e.g. for a controller's OpenFlow port).
- ``lbrp_lab``: module-scoped lab (2 clients, 3 backends serving TCP/UDP 8002-8004,
  lb0 pointing at a free OpenFlow port ``net.of_port``), stopped after the module.
  Only one lab can exist at a time (fixed names, machine-wide lock): a test that
  uses it must not call ``lab()`` itself (that raises LabError at once).

Plain helpers, importable as ``from conftest import ...`` is fragile, so they live in
``topologies.lbrp_topo`` (``lab``, ``build_net``, ``run_in``, ``lab_unavailable_reason``).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # so `import topologies` works without installing it
    sys.path.insert(0, str(REPO))


def pinning_modes() -> list[str]:
    """Session pinning modes the integration tests run in (env LBRP_PINNING_MODES)."""
    import os

    modes = os.environ.get("LBRP_PINNING_MODES", "learn,conntrack")
    return [m.strip() for m in modes.split(",") if m.strip()]


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here, or None."""
    try:
        from topologies.lbrp_topo import lab_unavailable_reason
    except ImportError as exc:  # mininet not installed
        return f"mininet not importable ({exc}); run `make install`"
    return lab_unavailable_reason()


def skip_unless_root_and_ovs() -> None:
    """pytest.skip() with a clear reason unless the lab can run."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(f"integration lab unavailable: {reason}")


@pytest.fixture(name="require_root_and_ovs")
def require_root_and_ovs_fixture() -> None:
    """Skip unless root, ovs-vswitchd running and Mininet installed."""
    skip_unless_root_and_ovs()


@pytest.fixture(name="run_in")
def run_in_fixture() -> Callable[..., Any]:
    """The ``run_in(host, cmd, timeout=10.0, check=False)`` helper."""
    from topologies.lbrp_topo import run_in

    return run_in


def pick_free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_tcp_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return pick_free_tcp_port()


@pytest.fixture(scope="module")
def lbrp_lab() -> Iterator[Any]:
    """Running lab (2 clients, 3 backends with servers on 8002-8004), per module."""
    skip_unless_root_and_ovs()
    from topologies.lbrp_topo import lab

    with lab(n_clients=2, n_backends=3, of_port=pick_free_tcp_port(), servers=True) as net:
        yield net


def pytest_configure(config: pytest.Config) -> None:
    """Silence Mininet's own distutils deprecation warnings."""
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:mininet\..*")


@contextlib.contextmanager
def controller_on_lab(net: Any, folder: Path, config: dict[str, Any],
                      mode: str) -> Iterator[Any]:
    """A real controller for ``net`` with ``config`` in pinning ``mode``.

    Sets ``net.ctl`` and ``net.mode``; on exit stops the controller and fails if its
    log has a Traceback.
    """
    import yaml

    from topologies.controller import Controller

    cfg = folder / "lbrp.yaml"
    cfg.write_text(yaml.safe_dump({**config, "session_pinning": mode}))
    ctl = Controller(cfg, net.of_port, log_dir=folder).start()
    try:
        ctl.wait_programmed(net.lb_dpid)
        net.ctl, net.mode = ctl, mode
        yield net
    finally:
        ctl.stop()
    assert "Traceback" not in ctl.log(), ctl.log()
