"""``lbrpctl``: command-line client of the lbrp REST API.

Examples::

    lbrpctl service show
    lbrpctl service add 13.13.13.13:tcp:8000 --name web --backend 10.0.1.2:8002:10
    lbrpctl backend add 13.13.13.13:tcp:8000 10.0.1.3:8003 --weight 100
    lbrpctl backend set 13.13.13.13:tcp:8000 10.0.1.3:8003 --weight 0
    lbrpctl backend del 13.13.13.13:tcp:8000 10.0.1.3:8003
    lbrpctl service del 13.13.13.13:tcp:8000
    lbrpctl health --json
    lbrpctl stats

The endpoint is ``--url`` or ``LBRP_URL`` (default http://127.0.0.1:8080);
the token is ``--token`` or ``LBRP_REST_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from lbrp_app.model import is_decimal

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BAD_REQUEST = 4
EXIT_EXISTS = 5
EXIT_UNAVAILABLE = 6
EXIT_CONNECT = 7
EXIT_UNAUTHORIZED = 8
STATUS_EXIT = {400: EXIT_BAD_REQUEST, 401: EXIT_UNAUTHORIZED, 404: EXIT_NOT_FOUND,
               405: EXIT_BAD_REQUEST, 413: EXIT_BAD_REQUEST, 503: EXIT_UNAVAILABLE}


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """Minimal JSON client of the REST API."""

    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        self.base = url.rstrip("/") + "/lbrp/v1"
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                doc = json.loads(raw) if raw else {}
            except ValueError:
                doc = {}
            msg = doc.get("error") if isinstance(doc, dict) else None
            raise CliError(f"{method} {path}: {err.code} {msg or err.reason}",
                           STATUS_EXIT.get(err.code, EXIT_UNAVAILABLE)) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise CliError(f"cannot reach {self.base}: {reason}", EXIT_CONNECT) from None


def parse_service(text: str) -> tuple[str, str, int]:
    """``VIP:PROTO:PORT`` -> (vip, proto, port)."""
    parts = text.split(":")
    if len(parts) != 3 or not is_decimal(parts[2]):
        raise CliError(f"service must be VIP:PROTO:PORT (e.g. 13.13.13.13:tcp:80), got {text!r}",
                       EXIT_USAGE)
    return parts[0], parts[1].lower(), int(parts[2])


def parse_backend(text: str, with_weight: bool = False) -> dict[str, Any]:
    """``IP:PORT`` (or ``IP:PORT:WEIGHT`` when allowed) -> backend dict."""
    parts = text.split(":")
    n = len(parts)
    if n not in ((2, 3) if with_weight else (2,)) or not all(map(is_decimal, parts[1:])):
        form = "IP:PORT[:WEIGHT]" if with_weight else "IP:PORT"
        raise CliError(f"backend must be {form}, got {text!r}", EXIT_USAGE)
    be: dict[str, Any] = {"ip": parts[0], "port": int(parts[1])}
    if n == 3:
        be["weight"] = int(parts[2])
    return be


def svc_path(svc: tuple[str, str, int]) -> str:
    return "/services/{}/{}/{}".format(*svc)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def format_services(services: list[dict[str, Any]]) -> str:
    rows: list[list[str]] = []
    for s in services:
        total = sum(b["weight"] for b in s["backends"]) or 1
        rows.append([f"{s['proto'].upper()}  {s['vip']}:{s['port']}", s["name"] or "-", "", ""])
        if not s["backends"]:
            rows.append(["  (no backend: new sessions rejected)", "", "", ""])
        for b in s["backends"]:
            share = f"{100 * b['weight'] / total:.1f}%" if b["weight"] else "drain"
            rows.append([f"  -> {b['ip']}:{b['port']}", "", str(b["weight"]), share])
    return table(rows, ["SERVICE / BACKEND", "NAME", "WEIGHT", "SHARE"])


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def format_health(health: dict[str, Any]) -> str:
    """``GET /health`` as a table of switches, then each switch's warnings."""
    rows = [[s["dpid"], s.get("bridge") or "-", str(s.get("frontend_port")),
             str(s.get("backend_port"))] for s in health["switches"]]
    text = f"status: {health['status']}\n" + table(rows, ["DPID", "BRIDGE", "FRONTEND",
                                                            "BACKEND"])
    notes = [f"warning: switch {s['dpid']}: {w}" for s in health["switches"]
             for w in s.get("warnings", [])]
    return text + "".join(f"\n{n}" for n in notes)


def format_stats(doc: dict[str, Any]) -> str:
    """A table in the manner of ``ipvsadm -L --stats``."""
    cols = ["new_sessions", "active_sessions", "packets_in", "packets_out", "bytes_in",
            "bytes_out"]
    rows: list[list[str]] = []
    for s in doc["services"]:
        rows.append([f"{s['proto'].upper()}  {s['vip']}:{s['port']}",
                     *(_cell(s[c]) for c in cols), str(s["rejected_sessions"])])
        rows += [[f"  -> {b['ip']}:{b['port']}", *(_cell(b[c]) for c in cols), ""]
                 for b in s["backends"]]
    text = table(rows, ["Prot LocalAddress:Port", "Conns", "Active", "InPkts", "OutPkts",
                        "InBytes", "OutBytes", "Rejected"])
    ctl = doc["controller"]
    zone, full = ctl.get("conntrack_sessions"), ctl.get("conntrack_zone_full_drops")
    gone = ctl.get("conntrack_backend_gone_drops")
    repicked = ctl.get("conntrack_backend_gone_repicks")
    return (f"{text}\nswitches programmed: {ctl['switches_programmed']}, echo replies: "
            f"{ctl['echo_replies']}, packet-ins dropped by meter: "
            f"{ctl['packet_ins_dropped_by_meter']}"
            + (f", conntrack sessions (all services): {zone}" if zone is not None else "")
            + (f", dropped with the zone full: {full}" if full else "")
            + (f", balanced again as their backend went: {repicked}" if repicked else "")
            + (f", dropped as their backends went: {gone}" if gone else ""))


def run(args: argparse.Namespace, out: Any) -> int:
    client = Client(args.url, args.token)
    result: Any = None
    text = ""
    if args.cmd == "health":
        _, result = client.call("GET", "/health")
        text = format_health(result)
    elif args.cmd == "stats":
        _, result = client.call("GET", "/stats")
        text = format_stats(result)
    elif args.cmd == "service":
        if args.action == "show":
            if args.service:
                _, one = client.call("GET", svc_path(parse_service(args.service)))
                result = [one]
            else:
                _, result = client.call("GET", "/services")
            text = format_services(result)
        elif args.action == "add":
            svc = parse_service(args.service)
            if _exists(client, svc_path(svc)):
                raise CliError(f"service {args.service} already exists", EXIT_EXISTS)
            body: dict[str, Any] = {"backends": [parse_backend(b, True) for b in args.backend]}
            if args.name is not None:
                body["name"] = args.name
            _, result = client.call("PUT", svc_path(svc), body)
            text = format_services([result])
        else:
            client.call("DELETE", svc_path(parse_service(args.service)))
            text = f"deleted service {args.service}"
    else:
        svc = parse_service(args.service)
        be = parse_backend(args.backend)
        path = f"{svc_path(svc)}/backends/{be['ip']}/{be['port']}"
        if args.action == "del":
            client.call("DELETE", path)
            text = f"deleted backend {args.backend} of {args.service}"
        else:
            exists = _exists(client, path)
            if args.action == "add" and exists:
                raise CliError(f"backend {args.backend} of {args.service} already exists",
                               EXIT_EXISTS)
            if args.action == "set" and not exists:
                raise CliError(f"backend {args.backend} of {args.service} does not exist",
                               EXIT_NOT_FOUND)
            body = {} if args.weight is None else {"weight": args.weight}
            _, result = client.call("PUT", path, body)
            text = f"{args.service} -> {result['ip']}:{result['port']} weight {result['weight']}"
    if args.json:
        print(json.dumps(result if result is not None else {"ok": True}, indent=2), file=out)
    else:
        print(text, file=out)
    return EXIT_OK


def _exists(client: Client, path: str) -> bool:
    try:
        client.call("GET", path)
        return True
    except CliError as err:
        if err.code == EXIT_NOT_FOUND:
            return False
        raise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lbrpctl", description="Manage an lbrp load balancer.")
    p.add_argument("--url", default=os.environ.get("LBRP_URL", "http://127.0.0.1:8080"),
                   help="REST endpoint (env LBRP_URL; default %(default)s)")
    p.add_argument("--token", default=os.environ.get("LBRP_REST_TOKEN"),
                   help="bearer token for changes (env LBRP_REST_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("health", help="switches programmed by the controller")
    sub.add_parser("stats", help="counters per service and backend (like ipvsadm -L --stats)")
    svc = sub.add_parser("service", help="virtual services").add_subparsers(
        dest="action", required=True)
    show = svc.add_parser("show", help="list services (or one)")
    show.add_argument("service", nargs="?", help="VIP:PROTO:PORT")
    add = svc.add_parser("add", help="create a service")
    add.add_argument("service", help="VIP:PROTO:PORT")
    add.add_argument("--name")
    add.add_argument("--backend", action="append", default=[], metavar="IP:PORT[:WEIGHT]")
    dele = svc.add_parser("del", help="delete a service and purge its sessions")
    dele.add_argument("service", help="VIP:PROTO:PORT")
    be = sub.add_parser("backend", help="backends of a service").add_subparsers(
        dest="action", required=True)
    for action, helptext in (("add", "add a backend"), ("set", "change a backend's weight"),
                             ("del", "remove a backend and purge its sessions")):
        sp = be.add_parser(action, help=helptext)
        sp.add_argument("service", help="VIP:PROTO:PORT")
        sp.add_argument("backend", help="IP:PORT")
        if action != "del":
            sp.add_argument("--weight", type=int, required=action == "set")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except CliError as err:
        print(f"lbrpctl: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
