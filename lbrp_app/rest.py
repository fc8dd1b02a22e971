"""The REST API (spec section 6), a webob application served by os-ken's hub.

Every change follows: validate, apply to every switch (bundle + barrier),
save, answer. Errors are ``{"error": "..."}`` with 400, 404, 405, 413 or 503.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from os_ken.lib import hub
from webob import Request, Response

from lbrp_app.model import (
    MAX_WEIGHT,
    Backend,
    Config,
    ConfigError,
    Service,
    ServiceKey,
    check_keys,
    is_decimal,
    parse_backends,
    parse_int,
    parse_ipv4,
    parse_name,
    parse_port,
    parse_proto,
)

if TYPE_CHECKING:
    from lbrp_app.app import LbrpApp

LOG = logging.getLogger("lbrp.rest")
BASE = "/lbrp/v1"
MAX_BODY = 1 << 20
MUTATING = ("PUT", "DELETE", "POST", "PATCH")
RECEIVED = "lbrp.received"  # environ key: time.monotonic() when the app got the request


class HttpError(Exception):
    def __init__(self, status: int, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


def _json(status: int, body: Any) -> Response:
    resp = Response(status=status, content_type="application/json", charset="utf-8")
    if body is not None:
        resp.text = json.dumps(body) + "\n"
    return resp


def _path_port(where: str, raw: str) -> int:
    if not is_decimal(raw) or len(raw) > 5:
        raise ConfigError(where, raw, "must be a port number 1..65535")
    return parse_port(where, int(raw))


def _service_key(vip: str, proto: str, port: str) -> ServiceKey:
    return ServiceKey(parse_ipv4("vip", vip), parse_proto("proto", proto), _path_port("port", port))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json keeps the last, silently)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice")
        seen.add(key)
    return dict(pairs)


def _body(req: Request) -> dict[str, Any]:
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise HttpError(413, f"request body larger than {MAX_BODY} bytes")
    if "chunked" in req.headers.get("Transfer-Encoding", "").lower():
        # no Content-Length: webob would hand out an empty body; the server de-chunks
        req.is_body_readable = True
        raw = req.environ["wsgi.input"].read(MAX_BODY + 1)
    else:
        raw = req.body_file.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HttpError(413, f"request body larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HttpError(400, "body is not valid JSON: nested too deep") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "body must be a JSON object")
    return doc


Route = tuple[re.Pattern[str], dict[str, Callable[..., Response]]]


class RestApi:
    """WSGI application over an :class:`LbrpApp`."""

    def __init__(self, app: LbrpApp, token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.openapi = resources.files("lbrp_app").joinpath("openapi.json").read_bytes()
        seg = r"([^/]+)"
        svc = rf"{BASE}/services/{seg}/{seg}/{seg}"
        self.routes: list[Route] = [
            (re.compile(rf"^{BASE}/health$"), {"GET": self.health}),
            (re.compile(rf"^{BASE}/openapi.json$"), {"GET": self.openapi_doc}),
            (re.compile(rf"^{BASE}/services$"), {"GET": self.list_services}),
            (re.compile(rf"^{BASE}/stats$"), {"GET": self.get_stats}),
            (re.compile(r"^/metrics$"), {"GET": self.get_metrics}),
            (re.compile(rf"^{svc}$"), {"GET": self.get_service, "PUT": self.put_service,
                                       "DELETE": self.delete_service}),
            (re.compile(rf"^{svc}/backends/{seg}/{seg}$"),
             {"GET": self.get_backend, "PUT": self.put_backend, "DELETE": self.delete_backend}),
        ]

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        environ[RECEIVED] = time.monotonic()
        req = Request(environ)
        try:
            resp = self.dispatch(req)
        except HttpError as exc:
            resp = _json(exc.status, {"error": exc.message})
            if exc.allow:
                resp.headers["Allow"] = exc.allow
        except ConfigError as exc:
            resp = _json(400, {"error": str(exc)})
        except Exception as exc:  # the API never answers 500
            LOG.exception("unexpected error on %s %s", req.method, req.path)
            resp = _json(503, {"error": f"internal error, nothing changed: {exc}"})
        return resp(environ, start_response)

    def dispatch(self, req: Request) -> Response:
        for pattern, methods in self.routes:
            m = pattern.match(req.path_info)
            if m:
                handler = methods.get(req.method)
                if handler is None:
                    allow = ", ".join(sorted(methods))
                    raise HttpError(405, f"method {req.method} not allowed here", allow)
                if req.method in MUTATING:
                    self._authorize(req)
                return handler(req, *m.groups())
        raise HttpError(404, f"no such resource: {req.path_info}")

    def _authorize(self, req: Request) -> None:
        if not self.token:
            return
        got = req.headers.get("Authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
            raise HttpError(401, "this call needs the header 'Authorization: Bearer <token>'")

    # --- handlers ----------------------------------------------------------------------

    def openapi_doc(self, req: Request) -> Response:
        resp = Response(status=200, content_type="application/json", charset="utf-8")
        resp.body = self.openapi
        return resp

    def health(self, req: Request) -> Response:
        switches = [{"dpid": f"{dpid:016x}", "bridge": sw.bridge,
                     "frontend_port": sw.ports.frontend if sw.ports else None,
                     "backend_port": sw.ports.backend if sw.ports else None,
                     "warnings": list(sw.warnings)}
                    for dpid, sw in sorted(self.app.switches.items()) if sw.programmed]
        return _json(200, {"status": "ok", "switches": switches})

    def get_stats(self, req: Request) -> Response:
        return _json(200, self.app.stats_snapshot())

    def get_metrics(self, req: Request) -> Response:
        from lbrp_app.metrics import render

        resp = Response(status=200, content_type="text/plain", charset="utf-8")
        resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        resp.body = render(self.app.stats_snapshot())
        return resp

    def list_services(self, req: Request) -> Response:
        return _json(200, [s.to_dict() for s in self.app.config.sorted_services()])

    def _existing(self, key: ServiceKey, cfg: Config | None = None) -> Service:
        svc = (self.app.config if cfg is None else cfg).services.get(key)
        if svc is None:
            raise HttpError(404, f"no service {key}")
        return svc

    def get_service(self, req: Request, vip: str, proto: str, port: str) -> Response:
        return _json(200, self._existing(_service_key(vip, proto, port)).to_dict())

    def _apply(self, req: Request, edit: Callable[[Config], Config]) -> None:
        """Run ``edit`` on the current config as a change (see :meth:`LbrpApp.apply`)."""
        from lbrp_app.app import ChangeError

        try:
            self.app.apply(edit, req.environ.get(RECEIVED))
        except ChangeError as exc:
            raise HttpError(503, str(exc)) from None

    def put_service(self, req: Request, vip: str, proto: str, port: str) -> Response:
        key = _service_key(vip, proto, port)
        body = _body(req)
        check_keys("body", body, ("name", "backends"))
        name = parse_name("name", body["name"]) if "name" in body else None
        backends = parse_backends("backends", body["backends"]) if "backends" in body else None
        done: list[tuple[Service | None, Service]] = []

        def edit(cfg: Config) -> Config:
            cur = cfg.services.get(key)
            svc = Service(key, name if name is not None else (cur.name if cur else ""),
                          backends if backends is not None else (cur.backends if cur else ()))
            done.append((cur, svc))
            return cfg if cur == svc else cfg.with_service(svc)

        self._apply(req, edit)
        cur, svc = done[-1]
        return _json(200 if cur else 201, svc.to_dict())

    def delete_service(self, req: Request, vip: str, proto: str, port: str) -> Response:
        key = _service_key(vip, proto, port)

        def edit(cfg: Config) -> Config:
            self._existing(key, cfg)
            return cfg.without_service(key)

        self._apply(req, edit)
        return _json(204, None)

    def _backend_addr(self, ip: str, bport: str) -> tuple[str, int]:
        return parse_ipv4("backend ip", ip), _path_port("backend port", bport)

    def get_backend(self, req: Request, vip: str, proto: str, port: str, ip: str,
                    bport: str) -> Response:
        svc = self._existing(_service_key(vip, proto, port))
        be = svc.backend(*self._backend_addr(ip, bport))
        if be is None:
            raise HttpError(404, f"service {svc.key} has no backend {ip}:{bport}")
        return _json(200, be.to_dict())

    def put_backend(self, req: Request, vip: str, proto: str, port: str, ip: str,
                    bport: str) -> Response:
        key = _service_key(vip, proto, port)
        addr = self._backend_addr(ip, bport)
        body = _body(req)
        check_keys("body", body, ("weight",))
        weight = parse_int("weight", body["weight"], 0, MAX_WEIGHT) if "weight" in body else None
        done: list[tuple[Backend | None, Backend]] = []

        def edit(cfg: Config) -> Config:
            svc = self._existing(key, cfg)
            cur = svc.backend(*addr)
            be = Backend(addr[0], addr[1],
                         weight if weight is not None else (cur.weight if cur else 1))
            done.append((cur, be))
            if cur == be:
                return cfg
            others = tuple(b for b in svc.backends if b.addr != addr)
            return cfg.with_service(Service(key, svc.name, others + (be,)))

        self._apply(req, edit)
        cur, be = done[-1]
        return _json(200 if cur else 201, be.to_dict())

    def delete_backend(self, req: Request, vip: str, proto: str, port: str, ip: str,
                       bport: str) -> Response:
        key = _service_key(vip, proto, port)
        addr = self._backend_addr(ip, bport)

        def edit(cfg: Config) -> Config:
            svc = self._existing(key, cfg)
            if svc.backend(*addr) is None:
                raise HttpError(404, f"service {key} has no backend {addr[0]}:{addr[1]}")
            others = tuple(b for b in svc.backends if b.addr != addr)
            return cfg.with_service(Service(key, svc.name, others))

        self._apply(req, edit)
        return _json(204, None)


def serve(app: LbrpApp) -> Any:
    """Start the REST server on LBRP_REST_HOST:LBRP_REST_PORT in a green thread."""
    host = os.environ.get("LBRP_REST_HOST", "127.0.0.1")
    port = int(os.environ.get("LBRP_REST_PORT", "8080"))
    server = hub.WSGIServer((host, port), RestApi(app, os.environ.get("LBRP_REST_TOKEN") or None))
    hub.spawn(server.serve_forever)
    LOG.info("REST API on http://%s:%d%s", host, port, BASE)
    return server
