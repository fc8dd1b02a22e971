"""Switch settings the app applies outside OpenFlow (``ovs-vsctl``, ``ovs-appctl``).

Learn pinning: the session tables get a ``Flow_Table`` row with ``flow_limit``
and ``overflow_policy=evict``: when full, OVS evicts the least recently used
learned session instead of refusing new ones. ``LBRP_OVSDB`` names the
database (``ovs-vsctl --db``); unset means the local default socket.

Conntrack pinning: the conntrack zone gets a connection limit
(``dpctl/ct-set-limits``, local ``ovs-vswitchd`` only): when full, new sessions
are not committed and dropped (table 40) until existing ones expire; half-open
connections expire after SYN_TIMEOUT seconds; TCP sequence checking
is turned off (see limit_connections). Both are per datapath, shared by every
netdev bridge of that ``ovs-vswitchd``.
"""

from __future__ import annotations

import contextlib
import logging
import os

from eventlet.green import subprocess

from lbrp_app import pipeline as pl
from lbrp_app.ctdump import parse_zone_count

LOG = logging.getLogger("lbrp.ovsdb")
SYN_TIMEOUT = 5  # seconds a conntrack session may stay half-open (UDP: one-way)


def _run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise RuntimeError(out.stderr.strip() or f"{cmd[0]} exited {out.returncode}")
    return out.stdout.strip()


def _vsctl(*args: str) -> str:
    cmd = ["ovs-vsctl", "--timeout=5"]
    if os.environ.get("LBRP_OVSDB"):
        cmd.append(f"--db={os.environ['LBRP_OVSDB']}")
    return _run(cmd + list(args))


def bridge_name(dpid: int) -> str | None:
    """The bridge whose datapath id is ``dpid``, or None if OVSDB does not know it."""
    name = _vsctl("--bare", "--columns=name", "find", "Bridge", f"datapath_id={dpid:016x}")
    return name.splitlines()[0] if name else None


def limit_sessions(dpid: int, max_sessions: int) -> str:
    """Bound each session table of the bridge to ``max_sessions`` flows (LRU eviction)."""
    br = bridge_name(dpid)
    if br is None:
        raise RuntimeError(f"no bridge with datapath_id {dpid:016x} in OVSDB")
    args = ["--", "--id=@ft", "create", "Flow_Table", "name=lbrp-sessions",
            f"flow_limit={max_sessions}", "overflow_policy=evict", "--", "set", "Bridge", br]
    args += [f"flow_tables:{t}=@ft" for t in pl.SESSION_TABLES]
    _vsctl(*args)
    return br


def limit_connections(max_sessions: int) -> None:
    """Bound the conntrack zone of the sessions and relax TCP checks (conntrack pinning).

    The userspace conntrack's TCP sequence check marks a client's SYN invalid when it
    reuses a source port whose previous connection is still in the table (the
    backend closed first, so the client's port is free at once): such SYNs were
    dropped and the client retried for seconds (58 of 5,226 sessions in a 5 s run,
    4 of 17,219 without the check). Like LVS, lbrp does not check sequence numbers.
    This setting is per ``ovs-vswitchd``, not per bridge.
    """
    _run(["ovs-appctl", "--timeout=5", "dpctl/ct-set-limits",
          f"zone={pl.CT_ZONE},limit={max_sessions}"])
    _run(["ovs-appctl", "--timeout=5", "dpctl/ct-disable-tcp-seq-chk"])


def conntrack_sessions() -> int | None:
    """Connections now in the sessions' zone (conntrack pinning).

    The zone's limit keeps this count, so reading it is cheap (about 9 ms). The only
    per-backend source, ``dpctl/dump-conntrack``, took about 230 ms for 60,000
    connections, in the main thread that also forwards a netdev datapath's packets.
    """
    return parse_zone_count(_run(["ovs-appctl", "--timeout=5", "dpctl/ct-get-limits",
                                  f"zone={pl.CT_ZONE}"]), pl.CT_ZONE)


def dump_conntrack() -> str:
    """Every connection of the sessions' zone, one per line (costly: see above)."""
    return _run(["ovs-appctl", "--timeout=10", "dpctl/dump-conntrack", f"zone={pl.CT_ZONE}"])


def conntrack_timeouts(bridge: str, tcp_idle: int, tcp_fin: int, udp_idle: int) -> None:
    """Give the sessions' zone the configured idle timeouts (a CT_Zone timeout policy).

    Creates the bridge's ``Datapath`` row if it has none (ovs-vsctl needs it).
    """
    dp = _vsctl("get", "Bridge", bridge, "datapath_type").strip('"') or "system"
    if f"{dp}=" not in _vsctl("get", "Open_vSwitch", ".", "datapaths"):
        _vsctl("--", "--id=@d", "create", "Datapath", "datapath_version=0", "--", "set",
               "Open_vSwitch", ".", f"datapaths:{dp}=@d")
    with contextlib.suppress(RuntimeError):  # no policy yet
        _vsctl("del-zone-tp", dp, f"zone={pl.CT_ZONE}")
    fin = [f"tcp_{state}={tcp_fin}" for state in ("fin_wait", "close_wait", "last_ack",
                                                  "time_wait", "close")]
    # half-open connections (a SYN flood) must not hold the zone's slots for 30 s
    _vsctl("add-zone-tp", dp, f"zone={pl.CT_ZONE}", f"tcp_established={tcp_idle}", *fin,
           f"tcp_syn_sent={SYN_TIMEOUT}", f"tcp_syn_recv={SYN_TIMEOUT}",
           f"udp_first={SYN_TIMEOUT}", f"udp_single={SYN_TIMEOUT}", f"udp_multiple={udp_idle}")


MAX_IDLE_MARK = "lbrp-max-idle"  # Open_vSwitch external_ids: the max-idle lbrp set


def datapath_max_idle(ms: int) -> None:
    """Expire idle datapath flows after ``ms`` (OVS default 10 s). Global to ovs-vswitchd.

    Learn pinning makes OVS revalidate every datapath flow after each learned flow;
    fewer idle datapath flows make that cheaper. The value is also recorded in
    ``external_ids``, so that :func:`release_max_idle` can take it back.
    """
    _vsctl("set", "Open_vSwitch", ".", f"other_config:max-idle={ms}",
           f"external_ids:{MAX_IDLE_MARK}={ms}")


def release_max_idle() -> bool:
    """Remove the max-idle lbrp set, unless someone changed it since; True if removed."""
    mark = _vsctl("--if-exists", "get", "Open_vSwitch", ".", f"external_ids:{MAX_IDLE_MARK}")
    if not mark:
        return False
    now = _vsctl("--if-exists", "get", "Open_vSwitch", ".", "other_config:max-idle")
    ours = now.strip('"') == mark.strip('"')
    args = ["remove", "Open_vSwitch", ".", "external_ids", MAX_IDLE_MARK]
    if ours:
        args += ["--", "remove", "Open_vSwitch", ".", "other_config", "max-idle"]
    _vsctl(*args)
    return ours
