"""lbrpctl's argument parsing (no controller needed)."""

from __future__ import annotations

import pytest

from lbrp_app.cli import CliError, parse_backend, parse_service


def test_service_and_backend_arguments_are_parsed() -> None:
    assert parse_service("13.13.13.13:TCP:80") == ("13.13.13.13", "tcp", 80)
    assert parse_backend("10.0.1.2:8002:7", with_weight=True) == {
        "ip": "10.0.1.2", "port": 8002, "weight": 7}


@pytest.mark.parametrize("text", ["13.13.13.13:tcp:¹", "13.13.13.13:tcp:", "13.13.13.13:tcp"])
def test_bad_service_is_a_usage_error(text: str) -> None:
    with pytest.raises(CliError):  # not a ValueError from int()
        parse_service(text)


@pytest.mark.parametrize("text", ["10.0.1.2:²", "10.0.1.2:80:³", "10.0.1.2"])
def test_bad_backend_is_a_usage_error(text: str) -> None:
    with pytest.raises(CliError):
        parse_backend(text, with_weight=True)


def test_health_shows_each_switch_then_its_warnings() -> None:
    from lbrp_app.cli import format_health

    text = format_health({"status": "ok", "switches": [
        {"dpid": "0000000000000010", "bridge": "lb0", "frontend_port": 1, "backend_port": 2,
         "warnings": ["conntrack pinning: Open vSwitch 3.1.0: ..."]},
        {"dpid": "0000000000000011", "bridge": None, "frontend_port": 1, "backend_port": 2}]})
    lines = text.splitlines()
    assert lines[0] == "status: ok"
    assert lines[2].split() == ["0000000000000010", "lb0", "1", "2"]
    assert lines[3].split() == ["0000000000000011", "-", "1", "2"]
    warning = "warning: switch 0000000000000010: conntrack pinning: Open vSwitch 3.1.0: ..."
    assert lines[4:] == [warning]


def test_stats_footer_shows_the_conntrack_drops_only_when_there_are_some() -> None:
    from lbrp_app.cli import format_stats

    ctl = {"switches_programmed": 1, "echo_replies": 0, "packet_ins_dropped_by_meter": 0,
           "conntrack_sessions": 12, "conntrack_zone_full_drops": 0,
           "conntrack_backend_gone_drops": 0, "conntrack_backend_gone_repicks": 0}
    quiet = format_stats({"services": [], "controller": ctl})
    assert "conntrack sessions (all services): 12" in quiet and "dropped" not in quiet.split(
        "meter")[1]
    assert "balanced again" not in quiet
    ctl.update(conntrack_zone_full_drops=3, conntrack_backend_gone_drops=2,
               conntrack_backend_gone_repicks=7)
    loud = format_stats({"services": [], "controller": ctl})
    assert "dropped with the zone full: 3" in loud
    assert "balanced again as their backend went: 7" in loud
    assert "dropped as their backends went: 2" in loud
