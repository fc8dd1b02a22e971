"""bench/reuse_probe.py: how it tells a SYN-ACK that was not rewritten to the VIP."""

from __future__ import annotations

from bench.reuse_probe import CLIENT_PORT, unrewritten_syn_ack

REWRITTEN = ("1.5 IP 13.13.13.13.8000 > 10.0.0.2.41804: Flags [S.], seq 1, ack 2, "
             "win 43440, length 0")
FROM_BACKEND = ("1.6 IP 10.0.1.4.8002 > 10.0.0.2.41804: Flags [S.], seq 3, ack 2, "
                "win 43440, length 0")


def test_a_syn_ack_from_a_backends_own_address_is_unrewritten() -> None:
    assert unrewritten_syn_ack([REWRITTEN, FROM_BACKEND], 41804)


def test_a_syn_ack_from_the_vip_or_to_another_port_is_not() -> None:
    assert not unrewritten_syn_ack([REWRITTEN], 41804)
    assert not unrewritten_syn_ack([FROM_BACKEND], 41805)
    reset = FROM_BACKEND.replace("Flags [S.]", "Flags [R]")
    assert not unrewritten_syn_ack([reset], 41804)


def test_a_capture_line_is_filed_under_its_client_port_either_way() -> None:
    for line in (REWRITTEN, FROM_BACKEND, "1.7 IP 10.0.0.2.41804 > 13.13.13.13.8000: Flags [S]"):
        m = CLIENT_PORT.search(line)
        assert m is not None and int(m.group(1)) == 41804, line
