"""Reliability and security of lbrp on the Mininet lab.

Restarts (controller ``kill -9``, ovs-vswitchd), floods (SYN, ping), malformed and
fuzzed packets toward the VIP, and the REST API's guards. One lab and one
controller for the module, with ``max_sessions: 2000`` so that the session bound is
reached quickly and a REST token set; each test leaves the services as ``BASE``
declares them. Every measured figure is printed (``pytest -s`` shows them).

The controller fixture is parametrized by ``session_pinning``: it runs
in the modes ``LBRP_PINNING_MODES`` lists (default ``learn,conntrack``).

The ovs-vswitchd restart test restarts the switch daemon of the whole machine: it
skips when bridges other than the lab's exist (someone else's work), unless
``LBRP_ALLOW_VSWITCHD_RESTART=1`` (their flows and groups are then saved with
``ovs-save`` and put back; they still see a few seconds of outage).
"""

from __future__ import annotations

import calendar
import contextlib
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbrp_app.memtrace import rss_kib
from tests.integration.conftest import pinning_modes
from topologies.controller import OSKEN, Controller, free_port, wait_for

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
SNIFFER = HERE / "vip_sniffer.py"
CRAFTER = HERE / "craft_packets.py"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
OVS_SAVE = "/usr/share/openvswitch/scripts/ovs-save"
OVS_RUNDIR = Path("/var/run/openvswitch")
VSWITCHD_LOG = Path("/var/log/openvswitch/ovs-vswitchd.log")

MODES = pinning_modes()
VIP = "13.13.13.13"
PORT = 8000
WEB = f"/services/{VIP}/tcp/{PORT}"
DNS = f"/services/{VIP}/udp/{PORT}"
B1, B2, B3 = "10.0.1.2", "10.0.1.3", "10.0.1.4"
GW_MAC = "02:00:00:0a:00:fe"  # r1's frontend interface (topologies.lbrp_topo)
MAX_SESSIONS = 2000
PACKET_IN_RATE, PACKET_IN_BURST = 200, 50
TOKEN = "reliability-token"
CT_ZONE = 0x4C42  # lbrp_app.pipeline.CT_ZONE: the conntrack zone of the sessions
BASE: list[dict[str, Any]] = [
    {"vip": VIP, "proto": "tcp", "port": PORT, "name": "web",
     "backends": [{"ip": B1, "port": 8002, "weight": 1}, {"ip": B2, "port": 8002, "weight": 1},
                  {"ip": B3, "port": 8002, "weight": 1}]},
    {"vip": VIP, "proto": "udp", "port": PORT, "name": "dns",
     "backends": [{"ip": B1, "port": 8003, "weight": 1}, {"ip": B3, "port": 8003, "weight": 1}]},
]

# A client run inside a lab host: one TCP session every INTERVAL seconds for
# SECONDS (mode "steady"), or until the first success (mode "first"); ONE JSON line.
SESSIONS = r"""
import json, socket, sys, time
vip, port, seconds, interval, timeout, mode = sys.argv[1:7]
port, seconds, interval, timeout = int(port), float(seconds), float(interval), float(timeout)
end = time.time() + seconds
ok = failed = 0
ms, errors, names, first = [], {}, {}, None
while time.time() < end:
    s = socket.socket()
    s.settimeout(timeout)
    t0 = time.perf_counter()
    try:
        s.connect((vip, port))
        c = (time.perf_counter() - t0) * 1000
        s.sendall(b"HELLO\n")
        name = s.recv(64).decode().strip()
        if not name:
            raise OSError("empty answer")
        ok += 1
        ms.append(c)
        names[name] = names.get(name, 0) + 1
        first = first or time.time()
        if mode == "first":
            break
    except OSError as exc:
        failed += 1
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    finally:
        s.close()
    time.sleep(interval)
ms.sort()
def pct(p):
    return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2) if ms else None
print(json.dumps({"ok": ok, "failed": failed, "first_ok": first, "p50_ms": pct(50),
                  "p99_ms": pct(99), "errors": errors, "by_backend": names,
                  "connect_ms": [round(x, 2) for x in ms]}))
"""


def config(mode: str) -> dict[str, Any]:
    """The module's configuration file for ``session_pinning: mode``."""
    return {"session_pinning": mode, "max_sessions": MAX_SESSIONS, "stats_interval": 1,
            "tcp_idle_timeout": 30, "udp_idle_timeout": 10, "tcp_fin_timeout": 1,
            "packet_in_rate": PACKET_IN_RATE, "packet_in_burst": PACKET_IN_BURST,
            "services": BASE}


# --- helpers ---------------------------------------------------------------------------------

def sh(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace (never raises on its exit code)."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=False)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


def daemon_pid(name: str) -> int | None:
    """Pid of a running OVS daemon (from its pidfile), or None."""
    try:
        pid = int((OVS_RUNDIR / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def rss_mib(pid: int | None) -> float:
    """Resident set size of ``pid`` in MiB (0 when gone)."""
    kib = None if pid is None else rss_kib(pid)
    return (kib or 0) / 1024


def start_vswitchd() -> None:
    """Start ovs-vswitchd only (ovs-ctl starts what is not running; ovsdb-server untouched)."""
    res = sh(OVS_CTL, "--no-ovsdb-server", "--no-record-hostname", "--system-id=random",
             "start", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def ensure_vswitchd() -> None:
    """Make sure ovs-vswitchd runs and answers (whatever a test did)."""
    if daemon_pid("ovs-vswitchd") is None:
        start_vswitchd()
    wait_for(lambda: sh("ovs-appctl", "-t", "ovs-vswitchd", "version").returncode == 0, 30,
             "ovs-vswitchd to answer")


def foreign_bridges() -> list[str]:
    """OVS bridges that are not the lab's."""
    from topologies.lbrp_topo import BRIDGE_NAMES

    return [b for b in sh("ovs-vsctl", "--timeout=5", "list-br").stdout.split()
            if b not in BRIDGE_NAMES]


def table_flows(net: Any, table: int, select: str = "") -> int:
    """flow_count of one lb0 table (what OVSDB's flow_limit bounds), or of its flows
    that ``select`` (ovs-ofctl's flow syntax, e.g. a cookie/mask) picks."""
    out = net.lb_ofctl("dump-aggregate", f"table={table}" + (f",{select}" if select else ""))
    return int(re.search(r"flow_count=(\d+)", out).group(1))


def _normal(line: str) -> str:
    return re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]+, ", "", line).strip()


def pinned_sessions(net: Any) -> set[str]:
    """The switch's session state: learned flows (learn) or VIP conntrack entries."""
    if net.mode == "learn":
        out = ""
        for table in (10, 11):
            out += net.lb_ofctl("dump-flows",
                                f"table={table},cookie=0xa800000000000000/0xff00000000000000")
        return {_normal(ln) for ln in out.splitlines() if "cookie=" in ln}
    out = sh("ovs-appctl", "dpctl/dump-conntrack", f"zone={CT_ZONE}").stdout
    return {ln.strip() for ln in out.splitlines() if ln.strip()}


def session_counts(net: Any) -> tuple[int, int]:
    """(forward, reverse) session table sizes the bound applies to."""
    if net.mode == "learn":
        return table_flows(net, 10), table_flows(net, 11)
    n = len(pinned_sessions(net))
    return n, n


def established(net: Any) -> int:
    """Established TCP connections on the backends."""
    from topologies.lbrp_topo import run_in

    return sum(len(run_in(b, "ss -Htn state established", timeout=10).stdout.splitlines())
               for b in net.backends)


def get_stats(ctl: Controller) -> dict[str, Any]:
    status, doc = ctl.request("GET", "/stats")
    assert status == 200, doc
    return doc


def fragments_dropped(ctl: Controller) -> int:
    return sum(v["fragments_dropped"] for v in get_stats(ctl)["vips"] if v["vip"] == VIP)


def meter_drops(net: Any) -> int:
    """Packets dropped by lb0's packet-in meter (its band's packet_count)."""
    m = re.search(r"bands:\s*0: packet_count:(\d+)", net.lb_ofctl("meter-stats"))
    return int(m.group(1)) if m else 0


def run_script(net: Any, host: Any, script: str, *args: Any) -> subprocess.Popen[str]:
    """Start ``python -c script args`` in ``host`` (stopped with the lab)."""
    return net.popen_tracked(host, [sys.executable, "-c", script, *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def json_result(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    """The last stdout line of a finished helper, as JSON."""
    out, err = proc.communicate(timeout=timeout)
    assert out.strip(), f"no output (rc={proc.returncode}): {err[-2000:]}"
    return json.loads(out.strip().splitlines()[-1])


def hold(net: Any, sessions: int, seconds: float, host: int = 0) -> subprocess.Popen[str]:
    """``sessions`` long-lived TCP sessions to the VIP (client.py --hold) in the background."""
    from topologies.lbrp_topo import CLIENT

    return net.popen_tracked(
        net.clients[host],
        [sys.executable, str(CLIENT), "--vip", VIP, "--proto", "tcp", "--port", str(PORT),
         "--sessions", str(sessions), "--concurrency", str(sessions), "--timeout", "2",
         "--hold", str(seconds), "--ping-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def sniffing(net: Any, hosts: Sequence[Any]) -> Iterator[dict[str, dict[str, Any]]]:
    """Count packets to the VIP in ``hosts`` (vip_sniffer.py); results filled on exit."""
    from topologies.lbrp_topo import _readline_until

    procs = []
    for h in hosts:
        p = net.popen_tracked(h, [sys.executable, str(SNIFFER), "--vip", VIP,
                                  "--ports", str(PORT), "--seconds", "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((h, p))
    for h, p in procs:
        line = _readline_until(p.stdout, time.monotonic() + 15)
        assert line.startswith("READY"), f"sniffer in {h.name} did not start: {p.stderr.read()}"
    results: dict[str, dict[str, Any]] = {}
    try:
        yield results
    finally:
        time.sleep(0.3)  # let the last packets in flight arrive
        for _, p in procs:
            p.send_signal(signal.SIGTERM)
        for h, p in procs:
            results[h.name] = json_result(p, timeout=15)


def no_vip_leak(seen: dict[str, dict[str, Any]], router: str = "r1") -> None:
    """Nothing the pipeline claims for the VIP left lb0 un-rewritten; no backend saw the VIP."""
    assert seen[router]["claimed"] == 0, seen[router]
    for name, res in seen.items():
        if name != router:
            assert res["total"] == 0, (name, res)


def controller_log(ctl: Controller) -> str:
    try:
        return ctl.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=MODES)
def env(request: pytest.FixtureRequest, lbrp_lab: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The lab with one controller (REST token set) in the given pinning mode."""
    net = lbrp_lab
    net.mode = request.param
    cfg = tmp_path_factory.mktemp(f"reliability-{net.mode}") / "lbrp.yaml"
    cfg.write_text(yaml.safe_dump(config(net.mode)))
    ctl = Controller(cfg, net.of_port, env={"LBRP_REST_TOKEN": TOKEN}, log_dir=cfg.parent)
    ctl.send_token = True
    ctl.start()
    ctl.wait_programmed(net.lb_dpid)
    net.ctl = ctl
    yield net
    ctl.stop()
    log = controller_log(ctl)
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def lb(env: Any) -> Iterator[Any]:
    """The lab with the BASE services and a programmed switch; restored after the test."""
    ensure_vswitchd()
    env.ctl.wait_programmed(env.lb_dpid)
    yield env
    ensure_vswitchd()
    ctl: Controller = env.ctl
    if ctl.proc is None or ctl.proc.poll() is not None:
        ctl.start()
    ctl.wait_programmed(env.lb_dpid, timeout=60)
    wanted = {(s["vip"], s["proto"], s["port"]) for s in BASE}
    for s in ctl.request("GET", "/services")[1]:
        if (s["vip"], s["proto"], s["port"]) not in wanted:
            assert ctl.request("DELETE", f"/services/{s['vip']}/{s['proto']}/{s['port']}")[0] \
                == 204
    for s in BASE:
        status, _ = ctl.request("PUT", f"/services/{s['vip']}/{s['proto']}/{s['port']}",
                                {"name": s["name"], "backends": s["backends"]})
        assert status in (200, 201)


# --- 1. controller restart -------------------------------------------------------------------

def test_controller_kill_9_breaks_no_session_and_keeps_learned_flows(lb: Any) -> None:
    """kill -9 and restart under 50 held sessions and a steady stream of new ones."""
    ctl: Controller = lb.ctl
    assert ctl.request("PUT", f"{WEB}/backends/{B3}/8004", {"weight": 2})[0] == 201
    acknowledged = ctl.request("GET", "/services")[1]
    with sniffing(lb, [lb.router, *lb.backends]) as seen:
        held = hold(lb, 50, 10)
        wait_for(lambda: established(lb) >= 50, 20, "50 held sessions established")
        before = pinned_sessions(lb)
        stream = run_script(lb, lb.clients[1], SESSIONS, VIP, PORT, 6, 0.02, 2, "steady")
        time.sleep(0.5)
        t0 = time.monotonic()
        ctl.stop(kill=True)
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid, timeout=60)
        restart_s = time.monotonic() - t0
        after = pinned_sessions(lb)
        new = json_result(stream)
        kept = json_result(held)
    print(f"\ncontroller kill -9 -> switch reprogrammed in {restart_s:.2f} s; "
          f"pinned sessions before/after: {len(before)}/{len(after)}, lost {len(before - after)}; "
          f"held: {kept}; new sessions during the restart: {new}; "
          f"VIP packets seen un-rewritten: r1 {seen['r1']['total']}, "
          f"backends {sum(seen[b.name]['total'] for b in lb.backends)}")
    assert kept["ok"] == 50 and kept["failed"] == 0, kept
    assert kept["changed_backend"] == 0, kept
    assert len(before) >= 50 and before <= after, sorted(before - after)[:5]
    assert new["failed"] == 0 and new["ok"] > 0, new
    assert ctl.request("GET", "/services")[1] == acknowledged
    assert seen["r1"]["total"] == 0, seen["r1"]  # no transient pass-through of VIP traffic
    no_vip_leak(seen)


def backend_sessions(net: Any, ip: str, port: int) -> int:
    """Learned forward sessions of one backend of the web service on lb0."""
    from lbrp_app.model import Backend, ServiceKey
    from lbrp_app.pipeline import SESSION_FWD, session_cookie

    ck, mask = session_cookie(ServiceKey(VIP, "tcp", PORT), Backend(ip, port))
    return table_flows(net, SESSION_FWD, f"cookie={ck:#x}/{mask:#x}")


def test_a_backend_removed_while_the_controller_is_down_loses_its_sessions(lb: Any) -> None:
    """The file edited while no controller runs: on its restart the switch still holds
    the removed backend's learned sessions, and the reconnect purges them, as a REST
    removal would; the other backends' sessions stay."""
    if lb.mode != "learn":
        pytest.skip("conntrack: a connection labelled with a backend that has no flows "
                    "is refused at its next packet (pipeline's CT_FWD)")
    ctl: Controller = lb.ctl
    held = hold(lb, 30, 8)
    wait_for(lambda: established(lb) >= 30, 20, "30 held sessions established")
    # earlier tests' sessions expire first (tcp_fin_timeout 1 s): only the held ones count
    wait_for(lambda: sum(backend_sessions(lb, b, 8002) for b in (B1, B2, B3)) == 30, 30,
             "the web service's sessions down to the 30 held")
    before = {b: backend_sessions(lb, b, 8002) for b in (B1, B2, B3)}
    ctl.stop(kill=True)
    doc = yaml.safe_load(ctl.config_path.read_text())
    web = next(s for s in doc["services"] if s["proto"] == "tcp" and s["port"] == PORT)
    web["backends"] = [b for b in web["backends"] if b["ip"] != B2]
    ctl.config_path.write_text(yaml.safe_dump(doc))
    ctl.start()
    ctl.wait_programmed(lb.lb_dpid, timeout=60)
    after = {b: backend_sessions(lb, b, 8002) for b in (B1, B2, B3)}
    kept = json_result(held)
    print(f"\nsessions per backend before/after the restart: {before} / {after}; held: {kept}")
    assert before[B2] > 0 and after[B2] == 0, (before, after)
    assert after[B1] == before[B1] > 0 and after[B3] == before[B3] > 0, (before, after)
    # the removed backend's sessions were answered with a RST at their next packet
    assert kept["failed"] == before[B2] and kept["ok"] == before[B1] + before[B3], kept
    assert "the config no longer has: 1" in controller_log(ctl)


# --- 2. switch restart -----------------------------------------------------------------------

def vswitchd_connected_at(bridge: str, of_port: int, after: float) -> float | None:
    """Wall-clock time ovs-vswitchd logged ``bridge`` connecting to its controller."""
    pattern = re.compile(rf"^(\S+)\|\d+\|rconn\|INFO\|{re.escape(bridge)}<->tcp:127\.0\.0\.1:"
                         rf"{of_port}: connected$")
    try:
        lines = VSWITCHD_LOG.read_text(errors="replace").splitlines()[-3000:]
    except OSError:
        return None
    for ln in lines:
        m = pattern.match(ln)
        if m:
            stamp = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
            t = stamp + float("0." + m.group(1)[20:23])
            if t >= after:
                return t
    return None


def test_vswitchd_restart_is_reprogrammed_and_serves_within_2_s(lb: Any, run_in: Any) -> None:
    """Restart ovs-vswitchd only: bridges come back from OVSDB, the app reprograms lb0."""
    others = foreign_bridges()
    if others and os.environ.get("LBRP_ALLOW_VSWITCHD_RESTART") != "1":
        pytest.skip(f"other bridges exist ({', '.join(others)}): restarting ovs-vswitchd "
                    "would disturb them; set LBRP_ALLOW_VSWITCHD_RESTART=1 to run anyway")
    ctl: Controller = lb.ctl
    ovsdb = daemon_pid("ovsdb-server")
    vswitchd = daemon_pid("ovs-vswitchd")
    assert ovsdb and vswitchd
    groups_before = lb.lb_ofctl("dump-groups").count("type=select")
    # other bridges' flows are not kept by ovs-vswitchd: save them to put them back
    restore = sh(OVS_SAVE, "save-flows", *others).stdout if others else ""
    try:
        res = sh("ovs-appctl", "-t", "ovs-vswitchd", "exit")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: not Path(f"/proc/{vswitchd}").exists(), 30, "ovs-vswitchd to exit")
        t_down = time.time()
        probe = run_script(lb, lb.clients[0], SESSIONS, VIP, PORT, 40, 0.02, 0.25, "first")
        start_vswitchd()
        t_up = time.time()
        wait_for(lb.controller_connected, 30, "lb0 to connect to the controller", 0.05)
        t_conn = vswitchd_connected_at("lb0", lb.of_port, t_down) or time.time()
        wait_for(lambda: (get_stats(ctl)["controller"]["last_reconcile"] or 0) > t_down, 30,
                 "the app to reprogram lb0", 0.05)
        t_prog = get_stats(ctl)["controller"]["last_reconcile"]
        first = json_result(probe)
    finally:
        ensure_vswitchd()
        if restore:
            sh("bash", "-c", restore)
    assert first["first_ok"], first
    serve_s = first["first_ok"] - t_conn
    print(f"\novs-vswitchd restart: up {t_up - t_down:.2f} s after exit, lb0 connected "
          f"{t_conn - t_up:+.2f} s after up, reprogrammed {t_prog - t_conn:.2f} s and first "
          f"new session through the VIP {serve_s:.2f} s after connecting "
          f"({first['first_ok'] - t_up:.2f} s after up; probe tries {first['failed'] + 1})")
    assert daemon_pid("ovsdb-server") == ovsdb  # only ovs-vswitchd was restarted
    assert serve_s <= 2.0, f"new sessions worked {serve_s:.2f} s after lb0 connected"
    assert ctl.programmed(lb.lb_dpid)
    assert lb.lb_ofctl("dump-groups").count("type=select") == groups_before
    assert len([ln for ln in lb.lb_ofctl("dump-flows", "table=0").splitlines()
                if "cookie=0xa" in ln]) >= 5
    tables = sh("ovs-vsctl", "get", "Bridge", "lb0", "flow_tables").stdout
    assert "10=" in tables and "11=" in tables, tables
    # the plain bridges forward again: straight to a backend through lbrpfe0, lb0, lbrpbe0
    direct = lb.run_client(lb.clients[1], B2, "tcp", 8004, sessions=20)
    assert direct["by_backend"] == {"b2": 20}, direct
    for b in lb.backends:
        assert run_in(lb.router, f"ping -c1 -W2 {b.IP()}", timeout=10).returncode == 0
    fresh = lb.run_client(lb.clients[1], VIP, "tcp", PORT, sessions=50)
    assert fresh["ok"] == 50, fresh


def test_a_change_the_switch_does_not_confirm_is_503_and_the_switch_is_programmed_again(
        lb: Any) -> None:
    """ovs-vswitchd stopped (SIGSTOP) through a change: once the switch timeout passes the
    change is refused (503) and not saved. Its commit went out with its bundle, in one
    round trip, so the switch runs it when it resumes; the app then programs the switch
    again from the config it kept, and the switch ends up as it was before the change."""
    ctl: Controller = lb.ctl
    vswitchd = daemon_pid("ovs-vswitchd")
    assert vswitchd
    path = f"{WEB}/backends/{B3}/8004"
    groups_before = lb.lb_ofctl("dump-groups")
    file_before = ctl.config_path.read_text()
    ctl.stop()
    ctl.extra_env = {**ctl.extra_env, "LBRP_SWITCH_TIMEOUT": "2"}
    try:
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)
        t0 = time.time()
        os.kill(vswitchd, signal.SIGSTOP)
        try:
            status, out = ctl.request("PUT", path, {"weight": 9})
        finally:
            os.kill(vswitchd, signal.SIGCONT)
        assert status == 503 and "did not answer" in out["error"], out
        wait_for(lambda: (get_stats(ctl)["controller"]["last_reconcile"] or 0) > t0, 30,
                 "the app to program lb0 again", 0.05)
        ctl.wait_programmed(lb.lb_dpid)
        assert "change not confirmed" in controller_log(ctl)
        assert lb.lb_ofctl("dump-groups") == groups_before
        assert ctl.config_path.read_text() == file_before
        # and the same change lands once the switch answers
        assert ctl.request("PUT", path, {"weight": 9})[0] == 201
        assert lb.lb_ofctl("dump-groups") != groups_before
    finally:
        os.kill(vswitchd, signal.SIGCONT)
        ctl.stop()
        ctl.extra_env = {k: v for k, v in ctl.extra_env.items() if k != "LBRP_SWITCH_TIMEOUT"}
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid, timeout=60)


# --- 3. SYN flood ----------------------------------------------------------------------------

def syn_flood(lb: Any, bound: int) -> dict[str, Any]:
    """30,000 random-source SYNs at the VIP while c2 opens sessions; what happened."""
    pid = daemon_pid("ovs-vswitchd")
    rss_before = rss_mib(pid)
    flood = lb.popen_tracked(
        lb.clients[0], ["timeout", "15", "hping3", "-q", "-S", "-p", str(PORT), "-i", "u100",
                        "-c", "30000", "--rand-source", VIP],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    legit = [run_script(lb, lb.clients[1], SESSIONS, VIP, PORT, 6, 0.02, 3, "steady")
             for _ in range(3)]
    peak = [0, 0]
    rss_peak = rss_before
    t0 = time.monotonic()
    while flood.poll() is None or any(p.poll() is None for p in legit):
        fwd, rev = session_counts(lb)
        peak = [max(peak[0], fwd), max(peak[1], rev)]
        rss_peak = max(rss_peak, rss_mib(pid))
        assert time.monotonic() - t0 < 40, "flood or legit client did not end"
        time.sleep(0.2)
    flood_s = time.monotonic() - t0
    _, flood_err = flood.communicate()
    flood_end = time.monotonic()
    streams = [json_result(p) for p in legit]
    ok = sum(r["ok"] for r in streams)
    total = ok + sum(r["failed"] for r in streams)
    connect_ms = [x for r in streams for x in r["connect_ms"]]
    errors = [r["errors"] for r in streams]
    recovered = wait_for(lambda: lb.run_client(lb.clients[1], VIP, "tcp", PORT, sessions=20,
                                               timeout=1)["ok"] == 20 and time.monotonic(),
                         90, "new sessions to work again after the flood", 0.5)
    rss_after = rss_mib(pid)
    rate = ok / total if total else 0.0
    print(f"\nSYN flood ({flood_s:.1f} s; {flood_err.strip().splitlines()[-2:]}): session tables "
          f"peak fwd/rev {peak[0]}/{peak[1]} (bound {bound}); ovs-vswitchd RSS "
          f"before/max/after {rss_before:.0f}/{rss_peak:.0f}/{rss_after:.0f} MiB; legit client "
          f"{ok}/{total} ok ({rate:.1%}), connect p50 {percentile(connect_ms, 50):.1f} ms "
          f"p99 {percentile(connect_ms, 99):.1f} ms, errors {errors}; all new sessions work "
          f"again {recovered - flood_end:.1f} s after the flood")
    return {"peak": peak, "rss_growth": rss_peak - rss_before, "rate": rate, "total": total}


def test_syn_flood_keeps_session_tables_bounded_and_legit_clients_served(lb: Any) -> None:
    """A flood that overflows the bound: bounded tables and RSS; c2's sessions measured.

    With the table full, learn pinning evicts the least recently used sessions (a
    legitimate client gets through, between ~40 and ~97 % on this 2-vCPU machine) and
    conntrack pinning refuses new connections until the half-open ones expire
    (SYN_TIMEOUT): both are reported, not asserted. After the flood new sessions must
    work again (learn: at once; conntrack: once the half-open connections expire).
    """
    if lb.mode == "conntrack":
        limits = sh("ovs-appctl", "dpctl/ct-get-limits", f"zone={CT_ZONE}").stdout
        assert re.search(rf"zone={CT_ZONE},limit={MAX_SESSIONS}\b", limits), limits
    else:
        ids = dict(re.findall(r"(\d+)=([0-9a-f-]{36})",
                              sh("ovs-vsctl", "get", "Bridge", "lb0", "flow_tables").stdout))
        assert set(ids) >= {"10", "11"}, ids
        for table in ("10", "11"):
            row = sh("ovs-vsctl", "--columns=flow_limit,overflow_policy", "list", "Flow_Table",
                     ids[table]).stdout
            assert re.search(rf"flow_limit\s*:\s*{MAX_SESSIONS}\b", row), row
            assert re.search(r"overflow_policy\s*:\s*evict", row), row
    res = syn_flood(lb, MAX_SESSIONS)
    peak = res["peak"]
    assert peak[0] <= MAX_SESSIONS and peak[1] <= MAX_SESSIONS, peak
    assert peak[0] >= MAX_SESSIONS * 0.9, f"the flood did not fill the table: {peak}"
    if lb.mode == "conntrack":  # what the full zone dropped is counted and reported
        ctl: Controller = lb.ctl
        drops = wait_for(lambda: ctl.request("GET", "/stats")[1]["controller"][
            "conntrack_zone_full_drops"], 30, "zone-full drops in /stats")
        assert "conntrack zone full" in controller_log(ctl)
        print(f"zone-full drops: {drops}")
    assert res["rss_growth"] < 256, res
    if res["rate"] < 0.9:  # the documented behaviour of a full table, not a rule
        warnings.warn(f"during the SYN flood ({lb.mode}) that filled the table the legitimate "
                      f"client completed {res['rate']:.0%} of {res['total']} sessions",
                      stacklevel=1)


FLOOD_BOUND = 200_000  # the default max_sessions


def test_syn_flood_within_the_bound_leaves_legit_clients_served(lb: Any) -> None:
    """The same flood against the default bound: tables stay below it and a legitimate
    client completes at least 90 % of its sessions during the flood (measured: 100 %)."""
    ctl: Controller = lb.ctl
    original = ctl.config_path.read_text()
    ctl.stop()
    ctl.config_path.write_text(yaml.safe_dump({**yaml.safe_load(original),
                                               "max_sessions": FLOOD_BOUND}))
    try:
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)
        res = syn_flood(lb, FLOOD_BOUND)
        assert max(res["peak"]) < FLOOD_BOUND, res
        assert res["rss_growth"] < 256, res
        assert res["total"] >= 30 and res["rate"] >= 0.9, res
    finally:
        ctl.stop()
        ctl.config_path.write_text(original)
        ctl.start()
        ctl.wait_programmed(lb.lb_dpid)
        if lb.mode == "conntrack":  # the flood's half-open connections leave the zone
            wait_for(lambda: session_counts(lb)[0] < MAX_SESSIONS // 2, 60,
                     "the flood's connections to expire")


def test_full_session_table_never_forwards_vip_traffic_unrewritten(lb: Any) -> None:
    """More new UDP sessions than max_sessions: none leaves lb0 still addressed to the VIP.

    Learn pinning evicts the least recently used session. Conntrack pinning: a full
    zone commits nothing, so the packet comes back from its commit with no label and
    is dropped (table 40, reg3=1). Bug seen with an earlier NAT pipeline: a commit the
    zone refused did not translate, and the flow's ``output`` still sent the packet
    to the backend side with destination VIP:port.
    """
    n = MAX_SESSIONS + 500
    with sniffing(lb, [lb.router, *lb.backends]) as seen:
        res = lb.run_client(lb.clients[0], VIP, "udp", PORT, sessions=n, concurrency=20,
                            timeout=1, extra=["--src-port-base", "20000"])
        counts = session_counts(lb)
    print(f"\n{n} new UDP sessions with a bound of {MAX_SESSIONS}: {res['ok']} answered, "
          f"session tables {counts[0]}/{counts[1]}; at r1 {seen['r1']['by_kind']}")
    assert max(counts) <= MAX_SESSIONS, counts
    no_vip_leak(seen)


# --- 4. ping flood ---------------------------------------------------------------------------

def test_ping_flood_is_metered_and_rest_stays_responsive(lb: Any) -> None:
    """ping -f and an hping3 ICMP flood at the VIP: the meter drops the excess, and REST
    stays responsive (GET p99 < 100 ms; PUT p95 < 100 ms and none over 1 s)."""
    ctl: Controller = lb.ctl
    before = get_stats(ctl)["controller"]
    drops_before = meter_drops(lb)
    ping = lb.popen_tracked(lb.clients[0],
                            ["timeout", "-s", "INT", "15", "ping", "-f", "-q", "-c", "20000",
                             "-w", "12", VIP],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hping = lb.popen_tracked(lb.clients[1],
                             ["timeout", "-s", "INT", "15", "hping3", "-q", "-1", "-i", "u200",
                              "-c", "20000", VIP],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    get_ms: list[float] = []
    put_ms: list[float] = []
    weight = 1
    t0 = time.monotonic()
    while ping.poll() is None:
        t = time.perf_counter()
        assert ctl.request("GET", "/health")[0] == 200
        get_ms.append((time.perf_counter() - t) * 1000)
        weight = 3 - weight
        t = time.perf_counter()
        assert ctl.request("PUT", f"{WEB}/backends/{B3}/8002", {"weight": weight})[0] == 200
        put_ms.append((time.perf_counter() - t) * 1000)
        assert time.monotonic() - t0 < 30, "ping did not end"
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    out = ping.communicate()[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    hout = "".join(hping.communicate(timeout=20))
    h = re.search(r"(\d+) packets transmitted, (\d+) packets received", hout)
    assert h, hout
    sent, received = sent + int(h.group(1)), received + int(h.group(2))
    wait_for(lambda: get_stats(ctl)["controller"]["packet_ins_dropped_by_meter"]
             > before["packet_ins_dropped_by_meter"], 15, "the meter drops in /lbrp/v1/stats")
    after = get_stats(ctl)["controller"]
    replies = after["echo_replies"] - before["echo_replies"]
    dropped_rest = after["packet_ins_dropped_by_meter"] - before["packet_ins_dropped_by_meter"]
    dropped = meter_drops(lb) - drops_before
    print(f"\nping flood ({elapsed:.1f} s): echo requests sent {sent}, answered {received}; "
          f"controller echo "
          f"replies +{replies} ({replies / elapsed:.0f}/s, meter {PACKET_IN_RATE}/s burst "
          f"{PACKET_IN_BURST}); meter drops +{dropped} (REST +{dropped_rest}); REST latency "
          f"GET /health p50 {percentile(get_ms, 50):.1f} p99 {percentile(get_ms, 99):.1f} ms "
          f"(n={len(get_ms)}), PUT p50 {percentile(put_ms, 50):.1f} "
          f"p99 {percentile(put_ms, 99):.1f} ms (n={len(put_ms)})")
    assert dropped > 0 and dropped_rest > 0
    assert 0 < replies <= PACKET_IN_RATE * elapsed + PACKET_IN_BURST + PACKET_IN_RATE * 0.5
    assert received <= replies
    assert percentile(get_ms, 99) < 100, sorted(get_ms)[-5:]
    # A PUT also saves the config with two fsyncs. A disk busy with other writes stretches
    # a few of them: with a parallel dd, 5 of 320 PUTs took 95-249 ms while GET's p99 stayed
    # at 12 ms (one full-suite run: 5 of 371 at 208-420 ms). That is the disk, not the
    # flood: the flood must not slow the bulk of the PUTs, nor stall any.
    assert percentile(put_ms, 95) < 100, sorted(put_ms)[-5:]
    assert max(put_ms) < 1000, sorted(put_ms)[-5:]


# --- 5. malformed and fuzzed packets ---------------------------------------------------------

def craft(net: Any, run_in: Callable[..., Any], phase: str, *extra: str) -> dict[str, Any]:
    """Run craft_packets.py in c1 and return its summary."""
    c1 = net.clients[0]
    args = [sys.executable, str(CRAFTER), "--iface", c1.defaultIntf().name, "--dst-mac", GW_MAC,
            "--src", c1.IP(), "--vip", VIP, "--tcp-port", str(PORT), "--udp-port", str(PORT),
            "--phase", phase, *extra]
    res = run_in(c1, args, timeout=120)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_malformed_and_fuzzed_packets_are_never_forwarded_unrewritten(lb: Any,
                                                                       run_in: Any) -> None:
    """Truncated, optioned, bad-checksum, fragmented, odd-flag, ICMP and fuzzed packets."""
    pytest.importorskip("scapy")
    ctl: Controller = lb.ctl
    frags_before = fragments_dropped(ctl)
    echo_before = get_stats(ctl)["controller"]["echo_replies"]
    with sniffing(lb, [lb.router, *lb.backends]) as crafted_seen:
        crafted = craft(lb, run_in, "crafted")
    wait_for(lambda: fragments_dropped(ctl) - frags_before >= crafted["fragments"], 15,
             f"{crafted['fragments']} fragments counted in /lbrp/v1/stats")
    time.sleep(1.5)  # one more counter poll: nothing more than what was sent
    frags = fragments_dropped(ctl) - frags_before
    echoes = get_stats(ctl)["controller"]["echo_replies"] - echo_before
    odd = crafted["odd_flag_sports"]
    learned_odd = [ln for ln in pinned_sessions(lb)
                   if any(re.search(rf"(tp_src|sport)={p}\b", ln) for p in odd)]
    with sniffing(lb, [lb.router, *lb.backends]) as fuzz_seen:
        fuzzed = craft(lb, run_in, "fuzz", "--count", "10000", "--seed", "7")
    print(f"\nmalformed: sent {crafted['sent']} crafted ({crafted['fragments']} fragments, "
          f"fragments_dropped +{frags}, echo replies +{echoes} for {crafted['valid_echoes']} "
          f"valid echo); at r1 {crafted_seen['r1']}; fuzz: sent {fuzzed['sent']} in "
          f"{fuzzed['elapsed_s']} s (build errors {fuzzed['build_errors']}); at r1 "
          f"{fuzz_seen['r1']['by_kind']}")
    no_vip_leak(crafted_seen)
    no_vip_leak(fuzz_seen)
    assert frags == crafted["fragments"], (frags, crafted)
    assert echoes == crafted["valid_echoes"], (echoes, crafted)  # bad echoes are not answered
    assert learned_odd == [], learned_odd  # odd TCP flags never start a session
    assert fuzzed["sent"] >= 9900, fuzzed
    # the controller survived: no traceback, REST answers, the LB still serves
    assert "Traceback" not in controller_log(ctl)
    assert ctl.proc is not None and ctl.proc.poll() is None
    assert ctl.request("GET", "/health")[0] == 200
    # conntrack: the fuzz can fill the zone (bound 2000) with one-way entries; they expire
    # after 5 s (the zone's timeout policy), then new sessions work again
    t0 = time.monotonic()
    wait_for(lambda: lb.run_client(lb.clients[1], VIP, "tcp", PORT, sessions=50,
                                   timeout=1)["ok"] == 50, 30, "50 TCP sessions after the fuzz")
    print(f"  new sessions served again {time.monotonic() - t0:.1f} s after the fuzz")
    assert lb.run_client(lb.clients[1], VIP, "udp", PORT, sessions=50)["ok"] == 50


# --- 6. REST guards --------------------------------------------------------------------------

def raw_request(ctl: Controller, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, chunked: bool = False
                ) -> tuple[int, Any]:
    """One HTTP request with exactly the given headers (no token added)."""
    conn = http.client.HTTPConnection("127.0.0.1", ctl.rest_port, timeout=30)
    try:
        if chunked:
            conn.request(method, "/lbrp/v1" + path, body=iter([body or b""]),
                         headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, "/lbrp/v1" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, json.loads(text) if text else None
    finally:
        conn.close()


HUGE = b'{"name": "' + b"x" * (1 << 20) + b'"}'


def switch_state(net: Any) -> dict[str, list[str]]:
    """lb0's groups and own flows, counters stripped."""
    state = {"groups": sorted(net.lb_ofctl("dump-groups").splitlines()[1:])}
    for t in (0, 20, 30):
        state[f"table{t}"] = sorted(_normal(ln) for ln in
                                    net.lb_ofctl("dump-flows", f"table={t}").splitlines()
                                    if "cookie=" in ln)
    return state


def test_rest_mutations_need_the_token_and_bodies_are_bounded(lb: Any) -> None:
    """Every mutating call without or with a wrong token: 401, nothing changes; >1 MiB: 413."""
    ctl: Controller = lb.ctl
    services = ctl.request("GET", "/services")[1]
    saved = ctl.config_path.read_text()
    switch = switch_state(lb)
    calls = [
        ("PUT", WEB, {"backends": []}),
        ("PUT", f"/services/{VIP}/tcp/9999", {}),
        ("PUT", f"/services/{VIP}/udp/9999", {"backends": [{"ip": B1, "port": 1}]}),
        ("DELETE", WEB, None),
        ("DELETE", DNS, None),
        ("DELETE", "/services/1.2.3.4/tcp/1", None),
        ("PUT", f"{WEB}/backends/{B1}/8002", {"weight": 9}),
        ("PUT", f"{WEB}/backends/{B1}/9999", {}),
        ("DELETE", f"{WEB}/backends/{B1}/8002", None),
        ("PUT", WEB, "{not json"),
    ]
    bad_auth: list[dict[str, str]] = [
        {}, {"Authorization": ""}, {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"}, {"X-Auth-Token": TOKEN},
    ]
    n = 0
    for method, path, body in calls:
        raw = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        for headers in bad_auth:
            status, out = raw_request(ctl, method, path, raw.encode() if raw else None,
                                      {"Content-Type": "application/json", **headers})
            assert status == 401 and out["error"], (method, path, headers, status, out)
            n += 1
    assert ctl.request("GET", "/services")[1] == services
    assert ctl.config_path.read_text() == saved
    assert switch_state(lb) == switch
    # reads stay open; the right token works
    assert raw_request(ctl, "GET", "/services")[0] == 200
    status, _ = raw_request(ctl, "PUT", f"{WEB}/backends/{B1}/8002", b'{"weight": 3}',
                            {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    # a body over 1 MiB: 413, nothing changes
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert raw_request(ctl, "PUT", f"/services/{VIP}/tcp/9998", HUGE, auth)[0] == 413
    assert ctl.request("GET", f"/services/{VIP}/tcp/9998")[0] == 404
    print(f"\nREST: {n} unauthorized mutating calls all 401, nothing changed; "
          f"a {len(HUGE)}-byte body 413")


def test_rest_chunked_body_is_read_or_refused_never_ignored(lb: Any) -> None:
    """A chunked body (no Content-Length) is read like any other, or refused (411).

    Bug seen: rest.py's _body() reads ``req.body_file``, which webob leaves empty when
    there is no Content-Length and the server (eventlet) does not set
    ``wsgi.input_terminated``: the body is silently taken as ``{}`` (201 for a PUT of
    a new service whatever the body said, bad JSON and > 1 MiB included).
    """
    ctl: Controller = lb.ctl
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, out = raw_request(ctl, "PUT", f"/services/{VIP}/tcp/9997", b'{"name": "chunky"}',
                              auth, chunked=True)
    assert status == 411 or (status == 201 and out["name"] == "chunky"), (status, out)
    status, out = raw_request(ctl, "PUT", f"/services/{VIP}/tcp/9996", b"{oops", auth,
                              chunked=True)
    assert status in (400, 411), (status, out)
    status, out = raw_request(ctl, "PUT", f"/services/{VIP}/tcp/9995", HUGE, auth, chunked=True)
    assert status in (411, 413), (status, out)


def test_rest_survives_idle_and_garbage_connections(lb: Any) -> None:
    """50 idle half-requests and garbage on the REST port: /health still answers fast."""
    ctl: Controller = lb.ctl
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", ctl.rest_port), timeout=5)
            s.sendall(b"GET /lbrp/v1/health HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                      bytes(range(256)) * 4)
            socks.append(s)
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            assert ctl.request("GET", "/health", timeout=5)[0] == 200
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        for s in socks:
            s.close()
    print(f"\nREST with 50 idle/garbage connections open: GET /health p50 "
          f"{percentile(lat, 50):.1f} ms, max {max(lat):.1f} ms")
    assert max(lat) < 1000
    assert "Traceback" not in controller_log(ctl)


def test_rest_changes_do_not_grow_the_controller(lb: Any) -> None:
    """600 REST changes (a backend added, reweighted, removed) leave the controller's RSS
    where it was after 99 of them. Freezing the collector inside a change kept each
    request's cyclic garbage for good: about 10 KiB per change, 6 MiB here."""
    ctl: Controller = lb.ctl
    path = f"{WEB}/backends/{B3}/8004"

    def churn(n: int) -> None:
        for i in range(n):
            if i % 3 == 2:
                assert ctl.request("DELETE", path)[0] == 204
            else:
                assert ctl.request("PUT", path, {"weight": 1 + i % 3})[0] in (200, 201)

    churn(99)
    before = rss_mib(ctl.proc.pid if ctl.proc else None)
    t0 = time.monotonic()
    churn(600)
    after = rss_mib(ctl.proc.pid if ctl.proc else None)
    print(f"\ncontroller RSS {before:.2f} -> {after:.2f} MiB over 600 REST changes "
          f"({time.monotonic() - t0:.1f} s)")
    assert after - before < 2.0


def test_rest_api_listens_on_loopback_by_default(tmp_path: Path) -> None:
    """Without LBRP_REST_HOST the API binds 127.0.0.1 only."""
    rest_port, of_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "LBRP_REST_HOST"}
    env.update(LBRP_CONFIG=str(tmp_path / "lbrp.yaml"), LBRP_REST_PORT=str(rest_port))
    with open(tmp_path / "osken.log", "wb") as log:
        proc = subprocess.Popen([str(OSKEN), "--ofp-tcp-listen-port", str(of_port), "lbrp_app"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    try:
        listeners = wait_for(lambda: sh("ss", "-Hltn", f"sport = :{rest_port}").stdout.split(
            "\n") if sh("ss", "-Hltn", f"sport = :{rest_port}").stdout.strip() else None,
            30, "the REST API to listen")
        addrs = [ln.split()[3] for ln in listeners if ln.strip()]
        of_addrs = [ln.split()[3] for ln in sh("ss", "-Hltn", f"sport = :{of_port}")
                    .stdout.splitlines()]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    print(f"\ndefault listeners: REST {addrs}, OpenFlow {of_addrs}")
    assert addrs == [f"127.0.0.1:{rest_port}"], addrs
