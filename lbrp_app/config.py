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

import yaml

from lbrp_app.model import Config, ConfigError, Service, config_to_dict, parse_config

DEFAULT_PATH = "/var/lib/lbrp/lbrp.yaml"
# libyaml's parser and emitter are several times faster (2,000 services: 3 s -> 1 s to load)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class ConfigFileError(Exception):
    """The configuration file cannot be used; the message names file, field and value."""


def config_path() -> Path:
    """The configuration file named by ``LBRP_CONFIG`` (or the default)."""
    return Path(os.environ.get("LBRP_CONFIG") or DEFAULT_PATH)


def load(path: Path) -> Config:
    """Read and validate ``path``; a missing or empty file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}") from None
    try:
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
_RESOLVER = yaml.resolver.Resolver()


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
