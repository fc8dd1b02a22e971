"""REST contract (spec section 6) over an in-memory controller stand-in.

The stand-in only stores the config; switches and files are exercised by the
integration tests. Here: paths, bodies, status codes, sorting, error shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from webob import Request

from lbrp_app.app import ChangeError
from lbrp_app.model import Config
from lbrp_app.rest import MAX_BODY, RestApi

BASE = "/lbrp/v1"


class FakeApp:
    def __init__(self) -> None:
        self.config = Config()
        self.switches: dict[int, Any] = {}
        self.applied = 0
        self.fail = False

    def apply(self, edit: Callable[[Config], Config], received: float | None = None) -> None:
        new = edit(self.config)
        if new is self.config:
            return
        if self.fail:
            raise ChangeError("switch refused the change: test")
        self.applied += 1
        self.config = new


@pytest.fixture
def api() -> tuple[RestApi, FakeApp]:
    app = FakeApp()
    return RestApi(app), app


def call(api: RestApi, method: str, path: str, body: Any = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    req = Request.blank(path, method=method)
    if raw is not None:
        req.body = raw
    elif body is not None:
        req.body = json.dumps(body).encode()
    resp = req.get_response(api)
    return resp.status_int, (json.loads(resp.body) if resp.body else None)


SVC = f"{BASE}/services/13.13.13.13/tcp/8000"


def test_create_replace_get_list_delete(api: tuple[RestApi, FakeApp]) -> None:
    rest, _app = api
    assert call(rest, "GET", f"{BASE}/services") == (200, [])
    status, body = call(rest, "PUT", SVC, {"name": "web", "backends": [
        {"ip": "10.0.1.3", "port": 80, "weight": 2}, {"ip": "10.0.1.2", "port": 80}]})
    assert status == 201
    assert body == {"vip": "13.13.13.13", "proto": "tcp", "port": 8000, "name": "web",
                    "backends": [{"ip": "10.0.1.2", "port": 80, "weight": 1},
                                 {"ip": "10.0.1.3", "port": 80, "weight": 2}]}
    # omitted backends keep the current ones; name replaced
    status, body = call(rest, "PUT", SVC, {"name": "www"})
    assert status == 200 and len(body["backends"]) == 2 and body["name"] == "www"
    # a backend left out of a given list is removed
    status, body = call(rest, "PUT", SVC, {"backends": [{"ip": "10.0.1.3", "port": 80}]})
    assert status == 200 and [b["ip"] for b in body["backends"]] == ["10.0.1.3"]
    assert call(rest, "GET", SVC)[1]["backends"][0]["weight"] == 1
    call(rest, "PUT", f"{BASE}/services/10.0.0.9/udp/53", {})
    call(rest, "PUT", f"{BASE}/services/13.13.13.13/udp/8000", {})
    listed = [(s["vip"], s["proto"], s["port"]) for s in call(rest, "GET", f"{BASE}/services")[1]]
    assert listed == [("10.0.0.9", "udp", 53), ("13.13.13.13", "tcp", 8000),
                      ("13.13.13.13", "udp", 8000)]
    assert call(rest, "DELETE", SVC) == (204, None)
    assert call(rest, "GET", SVC)[0] == 404


def test_backend_resource(api: tuple[RestApi, FakeApp]) -> None:
    rest, _app = api
    be = f"{SVC}/backends/10.0.1.2/8002"
    assert call(rest, "PUT", be, {})[0] == 404  # no such service
    call(rest, "PUT", SVC, {})
    assert call(rest, "PUT", be, raw=b"") == (201, {"ip": "10.0.1.2", "port": 8002, "weight": 1})
    assert call(rest, "PUT", be, {"weight": 7}) == (200, {"ip": "10.0.1.2", "port": 8002,
                                                          "weight": 7})
    assert call(rest, "PUT", be, {})[1]["weight"] == 7  # omitted weight is kept
    assert call(rest, "GET", be)[1]["weight"] == 7
    assert call(rest, "DELETE", be) == (204, None)
    assert call(rest, "DELETE", be)[0] == 404
    assert call(rest, "GET", SVC)[1]["backends"] == []  # the service stays


@pytest.mark.parametrize(("method", "path", "body", "needle"), [
    ("PUT", f"{BASE}/services/13.13.13/tcp/80", {}, "vip"),
    ("PUT", f"{BASE}/services/13.13.13.13/icmp/80", {}, "proto"),
    ("PUT", f"{BASE}/services/13.13.13.13/tcp/0", {}, "port"),
    ("PUT", f"{BASE}/services/13.13.13.13/tcp/65536", {}, "port"),
    ("PUT", f"{BASE}/services/13.13.13.13/tcp/+80", {}, "port"),
    ("PUT", f"{BASE}/services/13.13.13.13/tcp/%C2%B9", {}, "port"),  # '¹': isdigit(), not int()
    ("PUT", f"{SVC}/backends/10.0.1.2/%C2%B2", {}, "backend port"),
    ("PUT", SVC, {"backends": [{"ip": "10.0.1.2", "port": 80, "weight": 70000}]}, "weight"),
    ("PUT", SVC, {"backends": [{"ip": "10.0.1.2", "port": 80, "weight": "3"}]}, "weight"),
    ("PUT", SVC, {"backends": [{"ip": "10.0.1.2", "port": 80}, {"ip": "10.0.1.2", "port": 80}]},
     "duplicate"),
    ("PUT", SVC, {"backends": {"ip": "10.0.1.2"}}, "list"),
    ("PUT", SVC, {"nmae": "x"}, "unknown key"),
    ("PUT", SVC, [1, 2], "object"),
    ("PUT", SVC, {"name": 5}, "name"),
    ("PUT", SVC, {"name": "\ud800"}, "Unicode"),  # could not be saved, nor loaded back
])
def test_bad_input_is_400_and_changes_nothing(api: tuple[RestApi, FakeApp], method: str,
                                              path: str, body: Any, needle: str) -> None:
    rest, app = api
    status, out = call(rest, method, path, body)
    assert status == 400, out
    assert needle in out["error"]
    assert app.applied == 0 and app.config == Config()


def test_bad_json_and_sizes(api: tuple[RestApi, FakeApp]) -> None:
    rest, app = api
    assert call(rest, "PUT", SVC, raw=b"{not json")[0] == 400
    assert call(rest, "PUT", SVC, raw=b"\xff\xfe")[0] == 400
    assert call(rest, "PUT", SVC, raw=b"x" * (MAX_BODY + 1))[0] == 413
    # json keeps the last of a repeated key; nesting past its limit raised RecursionError (503)
    status, out = call(rest, "PUT", SVC, raw=b'{"name": "a", "name": "b"}')
    assert status == 400 and "'name' is given twice" in out["error"]
    status, out = call(rest, "PUT", SVC, raw=b"[" * 100_000)
    assert status == 400 and "nested too deep" in out["error"]
    status, out = call(rest, "PUT", SVC, raw=b'{"name": ' + b"[" * 500 + b"]" * 500 + b"}")
    assert status == 400 and "name" in out["error"] and len(out["error"]) < 300
    assert app.applied == 0


def test_unknown_paths_and_methods(api: tuple[RestApi, FakeApp]) -> None:
    rest, _ = api
    assert call(rest, "GET", f"{BASE}/nope")[0] == 404
    assert call(rest, "GET", "/")[0] == 404
    status, body = call(rest, "POST", f"{BASE}/services")
    assert status == 405 and "error" in body
    assert call(rest, "DELETE", f"{BASE}/health")[0] == 405


def test_switch_refusal_is_503_and_changes_nothing(api: tuple[RestApi, FakeApp]) -> None:
    rest, app = api
    app.fail = True
    status, body = call(rest, "PUT", SVC, {})
    assert status == 503 and "refused" in body["error"]
    assert app.config == Config()


def test_health_lists_only_programmed_switches(api: tuple[RestApi, FakeApp]) -> None:
    from types import SimpleNamespace

    rest, app = api
    app.switches = {
        0x10: SimpleNamespace(programmed=True, bridge="lb0", ports=SimpleNamespace(
            frontend=1, backend=2), warnings=["conntrack pinning: Open vSwitch 3.1.0: ..."]),
        0x11: SimpleNamespace(programmed=False, bridge=None, ports=None, warnings=[]),
    }
    status, body = call(rest, "GET", f"{BASE}/health")
    assert status == 200 and body["status"] == "ok"
    assert [s["dpid"] for s in body["switches"]] == ["0000000000000010"]
    assert body["switches"][0]["warnings"] == ["conntrack pinning: Open vSwitch 3.1.0: ..."]


def test_token_guards_changes_only() -> None:
    app = FakeApp()
    rest = RestApi(app, token="s3cret")
    assert call(rest, "PUT", SVC, {})[0] == 401
    assert call(rest, "DELETE", SVC)[0] == 401
    assert call(rest, "GET", f"{BASE}/services")[0] == 200
    req = Request.blank(SVC, method="PUT", headers={"Authorization": "Bearer wrong"})
    assert req.get_response(rest).status_int == 401
    req = Request.blank(SVC, method="PUT", headers={"Authorization": "Bearer s3cret"})
    assert req.get_response(rest).status_int == 201
    assert app.applied == 1


def test_openapi_document_is_served_and_lists_every_route(api: tuple[RestApi, FakeApp]) -> None:
    rest, _ = api
    status, doc = call(rest, "GET", f"{BASE}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        f"{BASE}/health", f"{BASE}/openapi.json", f"{BASE}/services", f"{BASE}/stats",
        "/metrics",
        f"{BASE}/services/{{vip}}/{{proto}}/{{port}}",
        f"{BASE}/services/{{vip}}/{{proto}}/{{port}}/backends/{{ip}}/{{bport}}"}


def test_chunked_bodies_are_read_not_ignored(api: tuple[RestApi, FakeApp]) -> None:
    import io

    rest, app = api

    def chunked(raw: bytes) -> int:
        req = Request.blank(SVC, method="PUT", headers={"Transfer-Encoding": "chunked"})
        req.environ["wsgi.input"] = io.BytesIO(raw)  # the server has de-chunked it
        req.environ.pop("CONTENT_LENGTH", None)
        return req.get_response(rest).status_int

    assert chunked(b"{oops") == 400
    assert chunked(b'{"name": "' + b"x" * MAX_BODY + b'"}') == 413
    assert app.applied == 0
    assert chunked(b'{"name": "web"}') == 201
    assert app.config.services[next(iter(app.config.services))].name == "web"


def test_a_change_is_made_on_the_config_as_the_change_before_it_left_it(
        api: tuple[RestApi, FakeApp]) -> None:
    """A change that lands while another waits for the lock is not undone by it."""
    rest, app = api
    call(rest, "PUT", SVC, {"backends": [{"ip": "10.0.1.2", "port": 80}]})
    plain_apply = app.apply

    def after(method: str, path: str, body: Any, status: int) -> None:
        """Make the next change wait for the lock until ``method path`` is applied."""
        def apply(edit: Callable[[Config], Config], received: float | None = None) -> None:
            app.apply = plain_apply  # type: ignore[method-assign]
            assert call(rest, method, path, body)[0] == status
            plain_apply(edit, received)

        app.apply = apply  # type: ignore[method-assign]

    after("PUT", f"{SVC}/backends/10.0.1.3/80", {}, 201)
    assert call(rest, "PUT", f"{SVC}/backends/10.0.1.4/80", {"weight": 3})[0] == 201
    assert [(b["ip"], b["weight"]) for b in call(rest, "GET", SVC)[1]["backends"]] == [
        ("10.0.1.2", 1), ("10.0.1.3", 1), ("10.0.1.4", 3)]
    after("PUT", f"{SVC}/backends/10.0.1.3/80", {"weight": 5}, 200)
    assert call(rest, "DELETE", f"{SVC}/backends/10.0.1.2/80")[0] == 204
    assert [(b["ip"], b["weight"]) for b in call(rest, "GET", SVC)[1]["backends"]] == [
        ("10.0.1.3", 5), ("10.0.1.4", 3)]
    # a backend the other change added is there for this one: 200, not 201
    after("PUT", f"{SVC}/backends/10.0.1.5/80", {}, 201)
    assert call(rest, "PUT", f"{SVC}/backends/10.0.1.5/80", {"weight": 2})[0] == 200
    # a service the other change removed is gone for this one too: 404, nothing applied
    after("DELETE", SVC, None, 204)
    applied = app.applied
    assert call(rest, "PUT", f"{SVC}/backends/10.0.1.6/80", {})[0] == 404
    assert app.applied == applied + 1 and call(rest, "GET", SVC)[0] == 404  # the DELETE only
