"""The lab's port picker (topologies/controller.py): never the same port twice."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from topologies import controller


def test_free_port_skips_a_port_the_kernel_offers_again(monkeypatch: pytest.MonkeyPatch) -> None:
    offers = [41000, 41000, 41000, 41001]

    @contextlib.contextmanager
    def fake_socket(*_: Any) -> Iterator[Any]:
        class Bound:
            def bind(self, addr: tuple[str, int]) -> None:
                self.port = offers.pop(0)

            def getsockname(self) -> tuple[str, int]:
                return ("127.0.0.1", self.port)
        yield Bound()

    monkeypatch.setattr(controller, "_GIVEN", set())
    monkeypatch.setattr(controller.socket, "socket", fake_socket)
    assert [controller.free_port(), controller.free_port()] == [41000, 41001]
    assert offers == []


def test_free_port_gives_distinct_real_ports() -> None:
    ports = [controller.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
