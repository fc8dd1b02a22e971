"""Config validation and the model's invariants (pure, no switch)."""

from __future__ import annotations

import pytest

from lbrp_app.model import (
    Backend,
    Config,
    ConfigError,
    Service,
    ServiceKey,
    config_to_dict,
    parse_config,
)

GOOD = {
    "frontend_port": 1,
    "backend_port": "lb0-eth2",
    "tcp_idle_timeout": 120,
    "services": [
        {"vip": "13.13.13.13", "proto": "tcp", "port": 8000, "name": "web",
         "backends": [{"ip": "10.0.1.4", "port": 8004, "weight": 1},
                      {"ip": "10.0.1.2", "port": 8002, "weight": 10}]},
        {"vip": "13.13.13.13", "proto": "udp", "port": 8000},
    ],
}


def test_good_config_round_trips() -> None:
    cfg = parse_config(GOOD)
    assert cfg.settings.backend_port == "lb0-eth2"
    assert cfg.settings.tcp_idle_timeout == 120
    web = cfg.services[ServiceKey("13.13.13.13", "tcp", 8000)]
    assert [b.ip for b in web.backends] == ["10.0.1.2", "10.0.1.4"]  # sorted
    assert cfg.services[ServiceKey("13.13.13.13", "udp", 8000)].backends == ()
    assert parse_config(config_to_dict(cfg)) == cfg


def test_empty_document_is_empty_config() -> None:
    assert parse_config(None) == Config()
    assert parse_config({}) == Config()


def _with_service(**changes: object) -> dict:
    svc = {"vip": "13.13.13.13", "proto": "tcp", "port": 80,
           "backends": [{"ip": "10.0.1.2", "port": 80}]}
    svc.update(changes)
    return {"services": [svc]}


@pytest.mark.parametrize(("doc", "field", "value"), [
    ({"bogus": 1}, "(top level).bogus", 1),
    (_with_service(vip="13.13.13"), "services[0].vip", "13.13.13"),
    (_with_service(vip="224.0.0.1"), "services[0].vip", "224.0.0.1"),
    (_with_service(vip="0.0.0.0"), "services[0].vip", "0.0.0.0"),
    (_with_service(proto="sctp"), "services[0].proto", "sctp"),
    (_with_service(port=0), "services[0].port", 0),
    (_with_service(port=65536), "services[0].port", 65536),
    (_with_service(port="80"), "services[0].port", "80"),
    (_with_service(port=True), "services[0].port", True),
    (_with_service(extra=1), "services[0].extra", 1),
    (_with_service(backends=[{"ip": "10.0.1.2", "port": 80, "weight": 65536}]),
     "services[0].backends[0].weight", 65536),
    (_with_service(backends=[{"ip": "10.0.1.2", "port": 80, "weight": -1}]),
     "services[0].backends[0].weight", -1),
    (_with_service(backends=[{"ip": "10.0.1.2", "port": 80},
                             {"ip": "10.0.1.2", "port": 80, "weight": 3}]),
     "services[0].backends[1]", "10.0.1.2:80"),
    (_with_service(backends=[{"ip": "10.0.1.2"}]), "services[0].backends[0].port", None),
    (_with_service(backends=[{"ip": "10.0.1.2", "port": 80, "wieght": 3}]),
     "services[0].backends[0].wieght", 3),
    ({"tcp_idle_timeout": 0}, "tcp_idle_timeout", 0),
    ({"frontend_port": 2, "backend_port": 2}, "backend_port", 2),
    ({"session_pinning": "magic"}, "session_pinning", "magic"),
    ({"services": {"vip": "1.2.3.4"}}, "services", {"vip": "1.2.3.4"}),
])
def test_bad_config_names_field_and_value(doc: dict, field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.field == field
    assert err.value.value == value
    assert field in str(err.value)


def test_duplicate_service_refused() -> None:
    svc = {"vip": "13.13.13.13", "proto": "tcp", "port": 80}
    with pytest.raises(ConfigError, match="duplicate service"):
        parse_config({"services": [svc, dict(svc)]})


def test_weight_zero_is_not_active() -> None:
    svc = Service(ServiceKey("1.1.1.1", "tcp", 80), "",
                  (Backend("10.0.0.2", 80, 0), Backend("10.0.0.3", 80, 5)))
    assert [b.ip for b in svc.active_backends] == ["10.0.0.3"]


def test_ids_are_stable_and_in_range() -> None:
    key = ServiceKey("13.13.13.13", "tcp", 8000)
    assert key.service_id == ServiceKey("13.13.13.13", "tcp", 8000).service_id
    assert 0 < key.service_id < 0x80000000
    assert key.service_id != ServiceKey("13.13.13.13", "udp", 8000).service_id
    assert 0 < Backend("10.0.1.2", 8002).backend_id < 0x1000000


def test_sorted_services_by_vip_numerically() -> None:
    cfg = parse_config({"services": [
        {"vip": "10.0.0.10", "proto": "udp", "port": 1},
        {"vip": "10.0.0.9", "proto": "tcp", "port": 2},
        {"vip": "10.0.0.10", "proto": "tcp", "port": 1},
    ]})
    assert [str(s.key) for s in cfg.sorted_services()] == [
        "10.0.0.9:tcp:2", "10.0.0.10:tcp:1", "10.0.0.10:udp:1"]


def test_is_decimal_takes_ascii_digits_only() -> None:
    from lbrp_app.model import is_decimal
    assert is_decimal("8000") and is_decimal("0")
    assert not any(is_decimal(t) for t in ("", "+80", "8 0", "\u00b9", "\u0663", "80x"))


def test_backend_users_patched_by_each_change_equal_a_fresh_index() -> None:
    """Configs derived with with_service/without_service carry the backend index over,
    patched; it must equal the index computed from scratch after every step."""
    import random

    rng = random.Random(7)
    ips = [f"10.0.1.{i}" for i in range(1, 5)]
    keys = [ServiceKey(f"13.13.13.{v}", proto, port) for v in (13, 14)
            for proto in ("tcp", "udp") for port in (80, 8000)]
    cfg = Config()
    assert cfg.backend_users == {}
    for _ in range(300):
        key = rng.choice(keys)
        if rng.random() < 0.25:
            cfg = cfg.without_service(key)
        else:
            bes = {(rng.choice(ips), rng.choice((8002, 8003))) for _ in range(rng.randint(0, 4))}
            cfg = cfg.with_service(Service(key, "", tuple(Backend(ip, port, rng.randint(0, 3))
                                                          for ip, port in sorted(bes))))
        assert "backend_users" in cfg.__dict__  # carried over, not recomputed
        fresh = Config(settings=cfg.settings, services=dict(cfg.services))
        assert cfg.backend_users == fresh.backend_users


def test_a_refused_value_is_quoted_short() -> None:
    """Nested thousands deep, repr would recurse out; a megabyte would fill the answer."""
    from lbrp_app.model import ConfigError

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for value in (deep, "x" * 1_000_000, {str(i): i for i in range(10_000)}):
        assert len(str(ConfigError("services[0]", value, "must be a mapping"))) < 300
    assert str(ConfigError("port", 70000, "out of range")) == "port: out of range (got 70000)"
