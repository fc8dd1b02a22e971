"""Bridge settings the app applies through OVSDB (``ovs-vsctl``).

The session tables get a ``Flow_Table`` row with ``flow_limit`` and
``overflow_policy=evict``: when full, OVS evicts the least recently used
learned session instead of refusing new ones. ``LBRP_OVSDB`` names the
database (``ovs-vsctl --db``); unset means the local default socket.
"""

from __future__ import annotations

import logging
import os

from eventlet.green import subprocess

from lbrp_app import pipeline as pl

LOG = logging.getLogger("lbrp.ovsdb")


def _vsctl(*args: str) -> str:
    cmd = ["ovs-vsctl", "--timeout=5"]
    if os.environ.get("LBRP_OVSDB"):
        cmd.append(f"--db={os.environ['LBRP_OVSDB']}")
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise RuntimeError(out.stderr.strip() or f"ovs-vsctl exited {out.returncode}")
    return out.stdout.strip()


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
