"""Loading and saving the YAML configuration file (``LBRP_CONFIG``).

The file is both the start-up configuration and where run-time changes are
saved: rewritten whole and atomically (temp file, fsync, rename, fsync of the
folder), so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lbrp_app.model import Config, ConfigError, Service, config_to_dict, parse_config

DEFAULT_PATH = "/var/lib/lbrp/lbrp.yaml"
# libyaml's parser and emitter are several times faster (2,000 services: 3 s -> 1 s to load)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


_MERGE = "tag:yaml.org,2002:merge"  # "<<": the keys it brings in may be overridden


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml's safe loader, refusing a key given twice in one mapping: yaml keeps the
    last, which would drop a service list or a field without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:  # scalar keys, compared as written: no extra work
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key_node.value!r} twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


class ConfigFileError(Exception):
    """The configuration file cannot be used; the message names file, field and value."""


def config_path() -> Path:
    """The configuration file named by ``LBRP_CONFIG`` (or the default)."""
    return Path(os.environ.get("LBRP_CONFIG") or DEFAULT_PATH)


MAX_DEPTH = 64  # nesting levels of a config file (lbrp's format has 5)
_NESTING = {yaml.SequenceStartEvent: 1, yaml.MappingStartEvent: 1,
            yaml.SequenceEndEvent: -1, yaml.MappingEndEvent: -1}


def _check_depth(text: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH before yaml builds it: libyaml's
    composer recurses in C, and about 50,000 levels (a 100 KB file) crash the process.
    Its parser's events come without recursion (0.2 s for 2,000 x 8)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        depth += _NESTING.get(type(event), 0)
        if depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")


def load(path: Path) -> Config:
    """Read and validate ``path``; a missing or empty file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}") from None
    doc = read_own_format(text)
    if doc is None:
        try:
            _check_depth(text)
            doc = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


class ServiceTexts:
    """Each service's YAML text, kept from one save to the next.

    A REST change replaces one service and keeps every other :class:`Service`
    object, so only that one is written out again: at 2,000 services x 8 backends a
    document whose services are all formatted anew (:func:`service_text`) takes 15-20 ms,
    one whose services are all kept here about 4 ms. Keyed by identity; each
    :meth:`texts` keeps only the services it was given.
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Service, str]] = {}

    def texts(self, services: list[Service]) -> list[str]:
        """The YAML text of each of ``services``, as an item of the ``services`` list."""
        kept: dict[int, tuple[Service, str]] = {}
        out = []
        for svc in services:
            hit = self._texts.get(id(svc))
            text = hit[1] if hit is not None and hit[0] is svc else service_text(svc)
            kept[id(svc)] = (svc, text)
            out.append(text)
        self._texts = kept
        return out


_SERVICE_TEXTS = ServiceTexts()
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_RESOLVER = yaml.resolver.Resolver()


class _NotOwnFormat(Exception):
    pass


# One line of the file as dump() writes it: the lead says where it is (top level, a
# service's first key or one of its keys, a backend's first key or one of its keys).
_LINE = re.compile(r"(|- |  |  - |    )([a-z_]+):(?: (.+))?\Z")
_INT = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_SERVICE_KEYS = ("vip", "proto", "port", "name", "backends")
_BACKEND_KEYS = ("ip", "port", "weight")


def read_own_format(text: str) -> dict[str, Any] | None:
    """The YAML document in ``text`` if the file is laid out as :func:`dump` writes it,
    else None (then yaml reads it).

    yaml, even with libyaml, took 1.1-1.8 s for 2,000 services x 8 backends, before
    the switch could be programmed; this reads the same file in about 0.1 s. Every
    line must be a ``key: value`` at one of dump()'s places, keys in dump()'s order,
    and every value a scalar that yaml reads as itself (a string) or as a decimal
    integer; anything else (comments after a value, quoting, flow style, other
    orders) leaves the file to yaml, so the result is always what yaml would read.
    """
    values: dict[str, Any] = {}

    def scalar(raw: str | None) -> Any:
        if raw is None:
            raise _NotOwnFormat
        got = values.get(raw)
        if got is None:
            if raw == "''":
                got = ""
            elif not _PLAIN_NAME.match(raw):
                raise _NotOwnFormat
            else:
                tag = _RESOLVER.resolve(yaml.ScalarNode, raw, (True, False))
                if tag == _STR_TAG:
                    got = raw
                elif tag == _INT_TAG and _INT.match(raw):
                    got = int(raw)
                else:
                    raise _NotOwnFormat
            values[raw] = got
        return got

    doc: dict[str, Any] = {}
    services: list[dict[str, Any]] | None = None
    svc: dict[str, Any] = dict.fromkeys(_SERVICE_KEYS)  # complete: no key may follow
    be: dict[str, Any] = dict.fromkeys(_BACKEND_KEYS)
    svc_done = item_next = False  # may a "- vip" / a "  - ip" line come next?
    try:
        for line in text.split("\n"):
            if not line or line[0] == "#":
                continue
            m = _LINE.match(line)
            if m is None:
                return None
            lead, key, raw = m.groups()
            if services is None:
                if lead or key in doc:
                    return None
                if key == "services" and raw is None:
                    services = doc[key] = []
                    svc_done = True
                else:
                    doc[key] = [] if key == "services" and raw == "[]" else scalar(raw)
            elif lead == "- " and key == "vip" and svc_done:
                svc = {key: scalar(raw)}
                services.append(svc)
                svc_done = item_next = False
            elif lead == "  " and len(svc) < 5 and key == _SERVICE_KEYS[len(svc)]:
                if key != "backends":
                    svc[key] = scalar(raw)
                elif raw in (None, "[]"):
                    svc[key] = []
                    svc_done, item_next = raw == "[]", raw is None
                else:
                    return None
            elif lead == "  - " and key == "ip" and item_next:
                be = {key: scalar(raw)}
                svc["backends"].append(be)
                svc_done = item_next = False
            elif lead == "    " and len(be) < 3 and key == _BACKEND_KEYS[len(be)]:
                be[key] = scalar(raw)
                svc_done = item_next = key == "weight"
            else:
                return None
    except _NotOwnFormat:
        return None
    if not doc or services is not None and not (services and svc_done):
        return None
    return doc


def service_text(svc: Service) -> str:
    """``svc`` as an item of the ``services`` list: the text yaml.dump writes for it.

    Written directly: yaml's representer, in Python even with libyaml, took 0.46 s for
    2,000 services x 8 backends, and the first save after a start formats them all.
    Every field but the name is a validated address, protocol or integer; the name is
    written plain (or ``''``) when yaml would read it back as that string, else by yaml
    itself.
    """
    k = svc.key
    if not svc.name or _PLAIN_NAME.match(svc.name) and \
            _RESOLVER.resolve(yaml.ScalarNode, svc.name, (True, False)) == _STR_TAG:
        name = svc.name or "''"
        head = f"- vip: {k.vip}\n  proto: {k.proto}\n  port: {k.port}\n  name: {name}\n"
    else:  # quoted, escaped or folded: yaml decides, in place (folding depends on the column)
        head = _yaml([{"vip": k.vip, "proto": k.proto, "port": k.port, "name": svc.name}])
    if not svc.backends:
        return head + "  backends: []\n"
    return head + "  backends:\n" + "".join(
        f"  - ip: {b.ip}\n    port: {b.port}\n    weight: {b.weight}\n" for b in svc.backends)


def _yaml(doc: object) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def dump(cfg: Config) -> str:
    """The YAML text for ``cfg``: the same as dumping :func:`config_to_dict` whole."""
    header = "# Written by lbrp; run-time changes are saved here (comments are not kept).\n"
    doc = config_to_dict(cfg, services=False)
    services = cfg.sorted_services()
    if not services:
        return header + _yaml({**doc, "services": []})
    return header + _yaml(doc) + "services:\n" + "".join(_SERVICE_TEXTS.texts(services))


def save(path: Path, cfg: Config) -> None:
    """Write ``cfg`` to ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dump(cfg).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
