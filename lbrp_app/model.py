"""The configured state of the load balancer: settings, services and backends.

Everything here is pure and immutable. Validation raises :class:`ConfigError`
naming the field and the offending value; nothing is changed on error.
"""

from __future__ import annotations

import functools
import ipaddress
import reprlib
import socket
import weakref
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

PROTOS = ("tcp", "udp")
PINNING_MODES = ("learn", "conntrack")
MAX_WEIGHT = 65535


class ConfigError(ValueError):
    """Bad configuration or request: ``field`` and ``value`` say what and where."""

    def __init__(self, field_name: str, value: Any, reason: str) -> None:
        self.field = field_name
        self.value = value
        self.reason = reason
        super().__init__(f"{field_name}: {reason} (got {_SHORT.repr(value)})")


# A refused value is quoted in the message, but never whole: a request may nest it
# thousands deep (repr would recurse out) or make it a megabyte long.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 120, 120
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8


def parse_ipv4(field_name: str, value: Any) -> str:
    """Return ``value`` as a canonical unicast IPv4 address string or raise."""
    if not isinstance(value, str):
        raise ConfigError(field_name, value, "must be an IPv4 address string")
    canonical, refused = _unicast_ipv4(value)
    if refused:
        raise ConfigError(field_name, value, refused)
    return canonical


@functools.lru_cache(maxsize=4096)  # a config names each backend address many times
def _unicast_ipv4(value: str) -> tuple[str, str]:
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return "", "is not a valid IPv4 address"
    if (addr.is_multicast or addr.is_loopback or addr.is_reserved
            or addr.packed[0] == 0 or addr == ipaddress.IPv4Address("255.255.255.255")):
        return "", "must be a unicast IPv4 address"
    return str(addr), ""


def ip_int(ip: str) -> int:
    """An address as :func:`parse_ipv4` returns it, as an integer (8 times quicker than
    through ``ipaddress``: polls and saves convert thousands)."""
    return int.from_bytes(socket.inet_aton(ip), "big")


def parse_int(field_name: str, value: Any, lo: int, hi: int) -> int:
    """Return ``value`` as an int in ``lo..hi``; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field_name, value, f"must be an integer {lo}..{hi}")
    if not lo <= value <= hi:
        raise ConfigError(field_name, value, f"must be in {lo}..{hi}")
    return value


def is_decimal(text: str) -> bool:
    """True for a non-empty run of ASCII digits ``0-9``.

    ``str.isdigit`` alone also accepts digits such as ``'¹'`` that ``int()`` refuses.
    """
    return text.isascii() and text.isdigit()


def parse_port(field_name: str, value: Any) -> int:
    """Return a TCP/UDP port number 1..65535."""
    return parse_int(field_name, value, 1, 65535)


def parse_proto(field_name: str, value: Any) -> str:
    """Return ``tcp`` or ``udp``."""
    if value not in PROTOS:
        raise ConfigError(field_name, value, "must be 'tcp' or 'udp'")
    return value


def check_keys(field_name: str, obj: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse keys of ``obj`` not in ``allowed``."""
    unknown = sorted(set(obj) - set(allowed), key=str)
    if unknown:
        raise ConfigError(f"{field_name}.{unknown[0]}", obj[unknown[0]], "unknown key")


@dataclass(frozen=True, order=True)
class ServiceKey:
    """A virtual service address ``vip:proto:port``."""

    vip: str
    proto: str
    port: int

    def sort_key(self) -> tuple[int, str, int]:
        return self._sort_key

    @functools.cached_property
    def _sort_key(self) -> tuple[int, str, int]:
        # kept: a save sorts all 2,000 services, and parsing their VIPs took 8 ms of it
        return (ip_int(self.vip), self.proto, self.port)

    def __str__(self) -> str:
        return f"{self.vip}:{self.proto}:{self.port}"

    @functools.cached_property
    def service_id(self) -> int:
        """Stable 31-bit id (group id, register and cookie field) derived from the key."""
        return (zlib.crc32(str(self).encode()) & 0x7FFFFFFF) or 1


@dataclass(frozen=True)
class Backend:
    """A real server ``ip:port`` with a weight (0 = draining)."""

    ip: str
    port: int
    weight: int = 1

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    @functools.cached_property
    def backend_id(self) -> int:
        """Stable 24-bit id (register and cookie field) derived from ``ip:port``."""
        return (zlib.crc32(f"{self.ip}:{self.port}".encode()) & 0xFFFFFF) or 1

    def sort_key(self) -> tuple[int, int]:
        return (ip_int(self.ip), self.port)

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port, "weight": self.weight}


@dataclass(frozen=True)
class Service:
    """A virtual service with its backends (kept sorted by ip, port)."""

    key: ServiceKey
    name: str = ""
    backends: tuple[Backend, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends",
                           tuple(sorted(self.backends, key=Backend.sort_key)))

    def backend(self, ip: str, port: int) -> Backend | None:
        for b in self.backends:
            if b.addr == (ip, port):
                return b
        return None

    @property
    def active_backends(self) -> tuple[Backend, ...]:
        """Backends that may receive new sessions (weight > 0)."""
        return tuple(b for b in self.backends if b.weight > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"vip": self.key.vip, "proto": self.key.proto, "port": self.key.port,
                "name": self.name, "backends": [b.to_dict() for b in self.backends]}


@dataclass(frozen=True)
class Settings:
    """Bridge ports and data-path defaults."""

    frontend_port: int | str = 1
    backend_port: int | str = 2
    tcp_idle_timeout: int = 300
    tcp_fin_timeout: int = 12  # learn: > OVS's datapath max-idle (pipeline.short_timeouts)
    udp_idle_timeout: int = 60
    max_sessions: int = 200_000
    packet_in_rate: int = 200
    packet_in_burst: int = 50
    stats_interval: int = 10
    datapath_max_idle_ms: int = 0
    conntrack_dump_interval: int = 0
    session_pinning: str = "learn"


SETTING_LIMITS: dict[str, tuple[int, int]] = {
    "tcp_idle_timeout": (1, 65535),
    "tcp_fin_timeout": (1, 65535),
    "udp_idle_timeout": (1, 65535),
    "max_sessions": (100, 10_000_000),
    "packet_in_rate": (1, 100_000),
    "packet_in_burst": (1, 100_000),
    "stats_interval": (0, 3600),
    "datapath_max_idle_ms": (0, 600_000),
    "conntrack_dump_interval": (0, 86_400),
}


Address = tuple[str, str, int]  # proto, ip, port of a backend


@dataclass(frozen=True)
class Config:
    """The whole configured state: settings and services keyed by ServiceKey."""

    settings: Settings = field(default_factory=Settings)
    services: Mapping[ServiceKey, Service] = field(default_factory=dict)
    # set by _replaced: the config this one was made from (weakly: configs must not keep
    # the chain of all earlier ones alive) and the service it changed
    derived_from: tuple[weakref.ref[Config], ServiceKey] | None = field(
        default=None, compare=False, repr=False)

    def changed_since(self, old: Config) -> list[ServiceKey] | None:
        """The services changed from ``old`` if this config was made from it (or it from
        this one) by one :meth:`with_service` or :meth:`without_service`; else None."""
        for a, b in ((self, old), (old, self)):
            if (a.derived_from is not None and a.derived_from[0]() is b
                    and a.settings is b.settings):  # not a replace() of other fields
                return [a.derived_from[1]]
        return None

    def sorted_services(self) -> list[Service]:
        return [self.services[k] for k in sorted(self.services, key=ServiceKey.sort_key)]

    @functools.cached_property
    def vip_set(self) -> frozenset[str]:
        """VIPs that carry a service (computed once per config: packet-ins use it)."""
        return frozenset(k.vip for k in self.services)

    def vips(self) -> list[str]:
        """VIPs that carry at least one service, sorted."""
        return sorted({k.vip for k in self.services}, key=ip_int)

    @functools.cached_property
    def service_ids(self) -> dict[int, ServiceKey]:
        """Service id -> service (computed once per config; ids are checked unique)."""
        return {k.service_id: k for k in self.services}

    @functools.cached_property
    def backend_users(self) -> dict[Address, tuple[ServiceKey, ...]]:
        """(proto, ip, port) of each backend -> the services it serves, sorted.

        Computed once per config; a config made by :meth:`with_service` or
        :meth:`without_service` gets it updated from this one's, if computed.
        """
        users: dict[Address, list[ServiceKey]] = {}
        for key in sorted(self.services, key=ServiceKey.sort_key):
            for b in self.services[key].backends:
                users.setdefault((key.proto, b.ip, b.port), []).append(key)
        return {addr: tuple(keys) for addr, keys in users.items()}

    def _replaced(self, key: ServiceKey, svc: Service | None) -> Config:
        """A copy with service ``key`` replaced by ``svc`` (None: removed)."""
        services = dict(self.services)
        old = services.get(key)
        if svc is None:
            services.pop(key, None)
        else:
            services[key] = svc
        new = replace(self, services=services, derived_from=(weakref.ref(self), key))
        users = self.__dict__.get("backend_users")
        if users is not None:  # about 16,000 entries at 2,000 x 8: patch, do not rebuild
            users = dict(users)
            for b in old.backends if old else ():
                addr = (key.proto, b.ip, b.port)
                rest = tuple(k for k in users[addr] if k != key)
                if rest:
                    users[addr] = rest
                else:
                    del users[addr]
            for b in svc.backends if svc else ():
                addr = (key.proto, b.ip, b.port)
                users[addr] = tuple(sorted({*users.get(addr, ()), key},
                                           key=ServiceKey.sort_key))
            new.__dict__["backend_users"] = users  # what cached_property would store
        return new

    def with_service(self, svc: Service) -> Config:
        """Return a copy with ``svc`` added or replaced (validated)."""
        other = self.service_ids.get(svc.key.service_id, svc.key)
        if other != svc.key:
            raise _id_collision(svc.key, other)
        _check_backend_ids(svc)
        return self._replaced(svc.key, svc)

    def without_service(self, key: ServiceKey) -> Config:
        return self._replaced(key, None)


def check_ids(cfg: Config) -> None:
    """Refuse the (very rare) collisions of the hash-derived ids.

    Service ids (31 bits) name groups and cookies; backend ids (24 bits) must be
    unique within a service. A collision is refused rather than mis-programmed.
    """
    seen: dict[int, ServiceKey] = {}
    for key, svc in cfg.services.items():
        other = seen.setdefault(key.service_id, key)
        if other != key:
            raise _id_collision(key, other)
        _check_backend_ids(svc)


def _id_collision(key: ServiceKey, other: ServiceKey) -> ConfigError:
    return ConfigError("services", str(key),
                       f"internal service id collides with {other}; use another port or VIP")


def _check_backend_ids(svc: Service) -> None:
    ids: dict[int, Backend] = {}
    for b in svc.backends:
        prev = ids.setdefault(b.backend_id, b)
        if prev is not b:
            raise ConfigError(f"services[{svc.key}].backends", f"{b.ip}:{b.port}",
                              f"internal backend id collides with {prev.ip}:{prev.port}")


def parse_backend(where: str, obj: Any, current: Backend | None = None) -> Backend:
    """Build a Backend from a mapping ``{ip, port, weight?}``."""
    if not isinstance(obj, Mapping):
        raise ConfigError(where, obj, "must be a mapping with ip, port and weight")
    check_keys(where, obj, ("ip", "port", "weight"))
    for req in ("ip", "port"):
        if req not in obj:
            raise ConfigError(f"{where}.{req}", None, "is required")
    ip = parse_ipv4(f"{where}.ip", obj["ip"])
    port = parse_port(f"{where}.port", obj["port"])
    weight = parse_int(f"{where}.weight", obj.get("weight", current.weight if current else 1),
                       0, MAX_WEIGHT)
    return Backend(ip, port, weight)


def parse_backends(where: str, items: Any) -> tuple[Backend, ...]:
    """Parse a list of backends, refusing duplicates."""
    if not isinstance(items, list):
        raise ConfigError(where, items, "must be a list")
    out: dict[tuple[str, int], Backend] = {}
    for i, item in enumerate(items):
        b = parse_backend(f"{where}[{i}]", item)
        if b.addr in out:
            raise ConfigError(f"{where}[{i}]", f"{b.ip}:{b.port}", "duplicate backend")
        out[b.addr] = b
    return tuple(out.values())


def parse_name(where: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise ConfigError(where, value, "must be a string of at most 256 characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON) cannot be saved
        raise ConfigError(where, value, "must be valid Unicode text") from None
    return value


def parse_settings(obj: Mapping[str, Any]) -> Settings:
    """Build Settings from the top-level YAML mapping (other keys ignored here)."""
    kwargs: dict[str, Any] = {}
    for name in ("frontend_port", "backend_port"):
        if name in obj:
            v = obj[name]
            if isinstance(v, str) and v and not is_decimal(v) and len(v) <= 15:
                kwargs[name] = v
            else:
                kwargs[name] = parse_int(name, v, 1, 0xFFFFFF00)
    for name, (lo, hi) in SETTING_LIMITS.items():
        if name in obj:
            kwargs[name] = parse_int(name, obj[name], lo, hi)
    if "session_pinning" in obj:
        if obj["session_pinning"] not in PINNING_MODES:
            raise ConfigError("session_pinning", obj["session_pinning"],
                              f"must be one of {', '.join(PINNING_MODES)}")
        kwargs["session_pinning"] = obj["session_pinning"]
    settings = Settings(**kwargs)
    if settings.frontend_port == settings.backend_port:
        raise ConfigError("backend_port", settings.backend_port, "must differ from frontend_port")
    return settings


SERVICE_KEYS = ("vip", "proto", "port", "name", "backends")
TOP_KEYS = ("frontend_port", "backend_port", "session_pinning", "services", *SETTING_LIMITS)


def _list_or_none(value: Any) -> Any:
    """A list key left empty (``services:``) is an empty list; any other value is
    checked as given, so ``{}``, ``0`` or ``''`` are refused, not read as empty."""
    return [] if value is None else value


def parse_config(obj: Any) -> Config:
    """Build and validate a Config from the parsed YAML document (None = empty)."""
    if obj is None:
        return Config()
    if not isinstance(obj, Mapping):
        raise ConfigError("(top level)", type(obj).__name__, "must be a mapping")
    check_keys("(top level)", obj, TOP_KEYS)
    settings = parse_settings(obj)
    raw = _list_or_none(obj.get("services"))
    if not isinstance(raw, list):
        raise ConfigError("services", raw, "must be a list")
    services: dict[ServiceKey, Service] = {}
    for i, item in enumerate(raw):
        where = f"services[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, item, "must be a mapping")
        check_keys(where, item, SERVICE_KEYS)
        for req in ("vip", "proto", "port"):
            if req not in item:
                raise ConfigError(f"{where}.{req}", None, "is required")
        key = ServiceKey(parse_ipv4(f"{where}.vip", item["vip"]),
                         parse_proto(f"{where}.proto", item["proto"]),
                         parse_port(f"{where}.port", item["port"]))
        if key in services:
            raise ConfigError(where, str(key), "duplicate service")
        services[key] = Service(key, parse_name(f"{where}.name", item.get("name", "")),
                                parse_backends(f"{where}.backends",
                                               _list_or_none(item.get("backends"))))
    cfg = Config(settings, services)
    check_ids(cfg)
    return cfg


def config_to_dict(cfg: Config, services: bool = True) -> dict[str, Any]:
    """The YAML document for ``cfg`` (inverse of :func:`parse_config`); the settings
    alone without ``services``."""
    s = cfg.settings
    doc: dict[str, Any] = {"frontend_port": s.frontend_port, "backend_port": s.backend_port,
                           "session_pinning": s.session_pinning}
    for name in SETTING_LIMITS:
        doc[name] = getattr(s, name)
    if services:
        doc["services"] = [svc.to_dict() for svc in cfg.sorted_services()]
    return doc
