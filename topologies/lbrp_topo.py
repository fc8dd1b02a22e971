"""Mininet lab of the lbrp reference network (spec section 1).

::

     c1..cN  10.0.0.i/24 (fd00:a::i/64), gw 10.0.0.254
        |  lbrpfe0   plain L2 switch (OVS standalone, no controller)
     [ lb0: port 1 = frontend | port 2 = backend ]   <- the bridge lbrp programs
        |
     r1  10.0.0.254/24 (fd00:a::fe) | 10.0.1.254/24 (fd00:b::fe), forwarding on
        |  lbrpbe0   plain L2 switch
     b1..bM  10.0.1.(i+1)/24 (fd00:b::(i+1)/64), gw 10.0.1.254

Every bridge uses the userspace datapath (``datapath_type=netdev``); ``lb0`` runs
``fail_mode=secure`` with OpenFlow13+15 and points at ``tcp:127.0.0.1:<of_port>``.
Every host/router interface gets ``ethtool -K <if> tx off`` (TCP checksums
through a netdev bridge over veth) and IPv6 DAD off (IPv6 stays enabled).

Command line (Mininet's ``mn``; note ``mn`` runs a by-name cleanup on errors)::

    mn --custom topologies/lbrp_topo.py --topo lbrp,2,3 \\
       --switch ovs,datapath=user --controller remote

(``--topo lbrp,N,M,OFPORT,DPID,PLAIN`` sets lb0's controller port and dpid, and
the plain switches' kind: ``ovs`` (default) or ``linux`` bridges.)

Without ``mn`` (no by-name cleanup; same CLI)::

    .venv/bin/python -m topologies.lbrp_topo --clients 2 --backends 3 [--passthrough]

Python::

    from topologies.lbrp_topo import lab
    with lab(n_clients=2, n_backends=3, servers=True) as net:
        print(net.run_client(net.clients[0], "10.0.1.2", "tcp", 8002, sessions=10))

Only names this module owns are ever deleted: bridges ``lb0``, ``lbrpfe0``,
``lbrpbe0`` and their ``<bridge>-eth<N>`` ports. A lock file serialises labs on
one machine, so two test runs never tear down each other's bridges.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from mininet.net import Mininet
from mininet.node import Host, Node, OVSBridge, OVSSwitch, Switch
from mininet.topo import Topo

HERE = Path(__file__).resolve().parent
BACKEND_SERVER = HERE / "backend_server.py"
CLIENT = HERE / "client.py"

LB_NAME = "lb0"
"""The bridge lbrp programs (Mininet node name = OVS bridge name)."""
FE_NAME = "lbrpfe0"
"""Frontend (clients') plain switch."""
BE_NAME = "lbrpbe0"
"""Backend plain switch."""
ROUTER_NAME = "r1"
BRIDGE_NAMES = (LB_NAME, FE_NAME, BE_NAME)

DEFAULT_OF_PORT = 6653
DEFAULT_LB_DPID = "0000000000000010"
FE_DPID = "00000000000010fe"
BE_DPID = "00000000000010be"
FRONTEND_PORT = 1
"""lb0's OpenFlow port towards the clients."""
BACKEND_PORT = 2
"""lb0's OpenFlow port towards r1 and the backends."""
LB_PORT_TYPES = ("system", "afxdp")
"""How ovs-vswitchd opens lb0's ports: af_packet, read by its main thread
("system", the default), or AF_XDP, read by a busy-polling PMD thread ("afxdp")."""

CLIENT_GW = "10.0.0.254"
BACKEND_GW = "10.0.1.254"
CLIENT_GW6 = "fd00:a::fe"
BACKEND_GW6 = "fd00:b::fe"
DEFAULT_SERVER_PORTS = (8002, 8003, 8004)
"""Ports every backend serves (TCP and UDP) with ``servers=True``."""

LOCK_PATH = "/run/lock/lbrp-lab.lock"
LOG_DIR = "/run/lbrp-lab"
"""Logs of the lab's processes; emptied at lab start, removed at stop."""
OF_PROTOCOLS = "OpenFlow13,OpenFlow15"
MAX_CLIENTS = 253
MAX_BACKENDS = 252


class LabError(RuntimeError):
    """The lab could not be built, started or used."""


# ---------------------------------------------------------------- addresses

def client_ip(i: int) -> str:
    """IPv4 address of client ``c<i>`` (1-based): 10.0.0.i."""
    return f"10.0.0.{i}"


def backend_ip(i: int) -> str:
    """IPv4 address of backend ``b<i>`` (1-based): 10.0.1.(i+1)."""
    return f"10.0.1.{i + 1}"


def client_ip6(i: int) -> str:
    """IPv6 (ULA) address of client ``c<i>``: fd00:a::i (hex)."""
    return f"fd00:a::{i:x}"


def backend_ip6(i: int) -> str:
    """IPv6 (ULA) address of backend ``b<i>``: fd00:b::(i+1) (hex)."""
    return f"fd00:b::{i + 1:x}"


def _mac(net: int, host: int) -> str:
    return f"02:00:00:{net:02x}:00:{host:02x}"


# -------------------------------------------------------------------- nodes

class LbrpHost(Host):
    """Host with TX checksum offload off, IPv6 without DAD, optional IPv6 addresses.

    Extra params: ``ipv6`` = list of ``(intf_name, "addr/len")``,
    ``defaultRoute6`` = IPv6 gateway address.
    """

    def config(self, ipv6: Sequence[tuple[str, str]] = (),
               defaultRoute6: str | None = None, **params: Any) -> dict:
        """Configure interfaces, then addresses and routes."""
        names = [i.name for i in self.intfList() if i.name != "lo"]
        sysctls = ["net.ipv6.conf.all.disable_ipv6=0",
                   "net.ipv6.conf.default.disable_ipv6=0",
                   "net.ipv6.conf.all.accept_dad=0",
                   "net.ipv6.conf.default.accept_dad=0"]
        for name in names:
            sysctls += [f"net.ipv6.conf.{name}.disable_ipv6=0",
                        f"net.ipv6.conf.{name}.accept_dad=0"]
        self.cmd("sysctl -qw " + " ".join(sysctls))
        for name in names:
            # bounce so the link-local address is re-made without DAD
            self.cmd(f"ip link set dev {name} down; ip link set dev {name} up")
        r = super().config(**params)
        for name in names:
            self.cmd(f"ethtool -K {name} tx off >/dev/null 2>&1")
        for name, addr in ipv6:
            self.cmd(f"ip -6 addr replace {addr} dev {name} nodad")
        if defaultRoute6:
            self.cmd(f"ip -6 route replace default via {defaultRoute6}")
        return r


class LbrpRouter(LbrpHost):
    """Linux router: IPv4/IPv6 forwarding on, rp_filter and redirects off."""

    def config(self, **params: Any) -> dict:
        """Configure like a host, then turn it into a router."""
        r = super().config(**params)
        names = [i.name for i in self.intfList() if i.name != "lo"]
        sysctls = ["net.ipv4.ip_forward=1",
                   "net.ipv6.conf.all.forwarding=1",
                   "net.ipv4.conf.all.rp_filter=0",
                   "net.ipv4.conf.default.rp_filter=0",
                   "net.ipv4.conf.all.send_redirects=0",
                   "net.ipv4.conf.default.send_redirects=0"]
        for name in names:
            sysctls += [f"net.ipv4.conf.{name}.rp_filter=0",
                        f"net.ipv4.conf.{name}.send_redirects=0"]
        self.cmd("sysctl -qw " + " ".join(sysctls))
        return r


def _quiet_root_ports(switch: Switch) -> None:
    """Keep the root namespace's own stack off our switch ports.

    No IPv6 link-local noise (DAD, MLD) into the lab, no ARP answers for the
    root namespace's addresses. Traffic through OVS is not affected.
    """
    names = [i.name for i in switch.intfList() if i.name.startswith(f"{switch.name}-eth")]
    if not names:
        return
    sysctls = []
    for name in names:
        sysctls += [f"net.ipv6.conf.{name}.disable_ipv6=1",
                    f"net.ipv4.conf.{name}.arp_ignore=8"]
    switch.cmd("sysctl -qw " + " ".join(sysctls) + " >/dev/null 2>&1")


class _ControllerRef:
    """Just enough of a Mininet Controller for OVSSwitch.start()."""

    protocol = "tcp"

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name = name
        self.ip = ip
        self.port = port

    def IP(self) -> str:
        """Controller address."""
        return self.ip


class LbSwitch(OVSSwitch):
    """The lbrp bridge: netdev datapath, fail_mode=secure, OF1.3+1.5, own controller.

    Ignores the net's controllers and always points at ``tcp:<of_ip>:<of_port>``.
    """

    def __init__(self, name: str, of_port: int = DEFAULT_OF_PORT,
                 of_ip: str = "127.0.0.1", port_type: str = "system", **params: Any) -> None:
        if port_type not in LB_PORT_TYPES:
            raise ValueError(f"port_type must be one of {LB_PORT_TYPES}, got {port_type!r}")
        params.setdefault("failMode", "secure")
        params.setdefault("protocols", OF_PROTOCOLS)
        params["datapath"] = "user"
        self.of_port = int(of_port)
        self.of_ip = of_ip
        self.port_type = port_type
        super().__init__(name, **params)

    def start(self, controllers: list) -> None:
        """Create the bridge pointing at our own controller (queued: see batchStartup)."""
        super().start([_ControllerRef("ctl", self.of_ip, self.of_port)])
        _quiet_root_ports(self)

    @classmethod
    def batchStartup(cls, switches: Sequence[Switch], *args: Any,
                     **kwargs: Any) -> Sequence[Switch]:
        """Run the queued ovs-vsctl commands, then set what needs the bridge to exist.

        Mininet's start() only queues the bridge's creation; this runs it.
        """
        started = super().batchStartup(switches, *args, **kwargs)
        for sw in started:
            # Reconnect within a second after a controller restart (OVS default: 8 s).
            cmd = ["ovs-vsctl", "--timeout=10", "--", "set", "Controller", sw.name,
                   "max_backoff=1000"]
            if sw.port_type != "system":
                # PMD ports: a PMD thread polls them instead of the main thread
                # (OpenFlow port numbers are kept).
                cmd += [arg for intf in sw.intfList() if intf.name.startswith(f"{sw.name}-eth")
                        for arg in ("--", "set", "Interface", intf.name,
                                    f"type={sw.port_type}")]
            res = _sh(cmd)
            if res.returncode:
                raise LabError(f"{' '.join(cmd)}: {res.stderr.strip()}")
        return started


class PlainSwitch(OVSBridge):
    """Plain L2 learning switch: netdev datapath, standalone, no controller."""

    def __init__(self, name: str, **params: Any) -> None:
        params["datapath"] = "user"
        super().__init__(name, **params)

    def start(self, controllers: list) -> None:
        """Create the bridge without controllers."""
        super().start([])
        _quiet_root_ports(self)


class KernelBridgeSwitch(Switch):
    """Plain L2 switch as a Linux bridge (no STP, no multicast snooping, no controller).

    Alternative to PlainSwitch that keeps ovs-vswitchd's single userspace datapath
    thread for lb0 alone (about 1.5-2x more sessions/s through the lab). Note:
    with ``bridge-nf-call-iptables=1`` bridged IPv4 traverses the root
    namespace's iptables.
    """

    def __init__(self, name: str, **params: Any) -> None:
        params.pop("batch", None)
        params.pop("datapath", None)
        params.pop("failMode", None)
        super().__init__(name, **params)

    def start(self, controllers: list) -> None:
        """Create the bridge and enslave our ports."""
        n = self.name
        self.cmd(f"ip link del dev {n} 2>/dev/null; ip link add name {n} type bridge "
                 "stp_state 0 forward_delay 0 mcast_snooping 0")
        self.cmd(f"sysctl -qw net.ipv6.conf.{n}.disable_ipv6=1 "
                 f"net.ipv4.conf.{n}.arp_ignore=8 >/dev/null 2>&1")
        for intf in self.intfList():
            if intf.name.startswith(f"{n}-eth"):
                self.cmd(f"ip link set dev {intf.name} master {n} up")
        self.cmd(f"ip link set dev {n} up")
        _quiet_root_ports(self)

    def stop(self, deleteIntfs: bool = True) -> None:
        """Delete the bridge (and our ports)."""
        self.cmd(f"ip link del dev {self.name}")
        super().stop(deleteIntfs)

    def connected(self) -> bool:
        """Always forwarding."""
        return True


PLAIN_SWITCHES: dict[str, type] = {"ovs": PlainSwitch, "linux": KernelBridgeSwitch}
"""Kinds of plain switch: OVS netdev standalone (default) or Linux bridge."""


# ----------------------------------------------------------------- topology

class LbrpTopo(Topo):
    """The reference network: clients, frontend switch, lb0, r1, backend switch, backends."""

    def build(self, n_clients: int = 2, n_backends: int = 3,
              of_port: int = DEFAULT_OF_PORT, dpid: str = DEFAULT_LB_DPID,
              plain: str = "ovs", lb_ports: str = "system") -> None:
        """Add nodes and links (lb0 port 1 = frontend, port 2 = backend).

        ``plain``: kind of the two plain switches, "ovs" (netdev, standalone) or "linux".
        ``lb_ports``: lb0's port type, one of LB_PORT_TYPES.
        """
        if plain not in PLAIN_SWITCHES:
            raise ValueError(f"plain must be one of {sorted(PLAIN_SWITCHES)}, got {plain!r}")
        plain_cls = PLAIN_SWITCHES[plain]
        n_clients, n_backends = int(n_clients), int(n_backends)
        if not 1 <= n_clients <= MAX_CLIENTS:
            raise ValueError(f"n_clients must be 1..{MAX_CLIENTS}, got {n_clients}")
        if not 1 <= n_backends <= MAX_BACKENDS:
            raise ValueError(f"n_backends must be 1..{MAX_BACKENDS}, got {n_backends}")
        dpid = f"{int(str(dpid), 16):016x}"
        lb = self.addSwitch(LB_NAME, cls=LbSwitch, dpid=dpid, of_port=int(of_port),
                            port_type=lb_ports)
        fe = self.addSwitch(FE_NAME, cls=plain_cls, dpid=FE_DPID)
        be = self.addSwitch(BE_NAME, cls=plain_cls, dpid=BE_DPID)
        r1 = self.addHost(
            ROUTER_NAME, cls=LbrpRouter, ip=f"{CLIENT_GW}/24", mac=_mac(0x0A, 0xFE),
            ipv6=[(f"{ROUTER_NAME}-eth0", f"{CLIENT_GW6}/64"),
                  (f"{ROUTER_NAME}-eth1", f"{BACKEND_GW6}/64")])
        for i in range(1, n_clients + 1):
            c = self.addHost(
                f"c{i}", cls=LbrpHost, ip=f"{client_ip(i)}/24", mac=_mac(0x0A, i),
                defaultRoute=f"via {CLIENT_GW}",
                ipv6=[(f"c{i}-eth0", f"{client_ip6(i)}/64")], defaultRoute6=CLIENT_GW6)
            self.addLink(c, fe, port1=0, port2=i)
        for i in range(1, n_backends + 1):
            b = self.addHost(
                f"b{i}", cls=LbrpHost, ip=f"{backend_ip(i)}/24", mac=_mac(0x0B, i + 1),
                defaultRoute=f"via {BACKEND_GW}",
                ipv6=[(f"b{i}-eth0", f"{backend_ip6(i)}/64")], defaultRoute6=BACKEND_GW6)
            self.addLink(b, be, port1=0, port2=i)
        self.addLink(fe, lb, port1=n_clients + 1, port2=FRONTEND_PORT)
        self.addLink(r1, lb, port1=0, port2=BACKEND_PORT)
        self.addLink(r1, be, port1=1, port2=n_backends + 1, addr1=_mac(0x0B, 0xFE),
                     params1={"ip": f"{BACKEND_GW}/24"})


topos = {"lbrp": LbrpTopo}


# ------------------------------------------------------------------ helpers

def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here (not root, OVS down, tools missing), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, OVS)"
    for tool in ("ovs-vsctl", "ovs-ofctl", "mnexec", "ethtool", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run `make install`)"
    try:
        res = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"OVS not reachable: {exc}"
    if res.returncode != 0:
        return f"OVS is not running (ovs-vsctl show: {res.stderr.strip()})"
    return None


def _sh(args: Sequence[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace, no shell, never raising on rc."""
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=timeout, check=False)


_OWN_PORT = re.compile(rf"^(?:{'|'.join(map(re.escape, BRIDGE_NAMES))})-eth\d+$")


def cleanup_leftovers() -> list[str]:
    """Delete this module's bridges and root-namespace ports left by a crashed run.

    Only the exact names in BRIDGE_NAMES and ``<bridge>-eth<N>`` are touched,
    plus the log folder LOG_DIR. Call it only while holding the lab lock
    (``build_net``/``lab`` do). Returns what was removed.
    """
    removed: list[str] = []
    if os.path.isdir(LOG_DIR):
        shutil.rmtree(LOG_DIR, ignore_errors=True)
        removed.append(f"dir {LOG_DIR}")
    existing = set(_sh(["ovs-vsctl", "--timeout=10", "list-br"]).stdout.split())
    for br in BRIDGE_NAMES:
        if br in existing:
            _sh(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br])
            removed.append(f"bridge {br}")
    links = _sh(["ip", "-o", "link", "show"]).stdout
    for line in links.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if _OWN_PORT.match(name) or name in BRIDGE_NAMES:
            _sh(["ip", "link", "del", "dev", name])
            removed.append(f"link {name}")
    return removed


class _LabLock:
    """Exclusive lock so only one lab exists per machine at a time."""

    held_here: _LabLock | None = None  # the lock this process holds, if any

    def __init__(self, path: str = LOCK_PATH) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the lock; LabError if still busy."""
        if _LabLock.held_here is not None:
            raise LabError("a lab is already running in this process: stop it first "
                           "(the names it uses are fixed, so only one lab at a time)")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise LabError(f"another lbrp lab is running (pid {holder or '?'}, "
                                   f"lock {self.path})") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _LabLock.held_here = self

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            if _LabLock.held_here is self:
                _LabLock.held_here = None


def _kill_tree(p: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM then SIGKILL a process we started (and its process group when it leads one)."""
    if p.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(p.pid) == p.pid:  # mnexec -d made it a session leader
                os.killpg(p.pid, sig)
            else:
                os.kill(p.pid, sig)

    send(signal.SIGTERM)
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=grace)


def run_in(host: Node, cmd: str | Sequence[str], timeout: float = 10.0,
           check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside ``host``'s namespace with a hard timeout.

    A string runs through ``bash -c``; a sequence runs as is. On timeout the
    process (group) is killed and ``subprocess.TimeoutExpired`` raised. With
    ``check`` a non-zero exit raises ``subprocess.CalledProcessError``.
    """
    args = ["bash", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
    p = host.popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(p, grace=1.0)
        out, err = p.communicate()
        raise subprocess.TimeoutExpired(args, timeout, out, err) from None
    res = subprocess.CompletedProcess(args, p.returncode, out, err)
    if check:
        res.check_returncode()
    return res


# ---------------------------------------------------------------------- net

class LbrpNet(Mininet):
    """Mininet of the reference network, with lab helpers.

    Attributes: ``lb`` (LbSwitch), ``router``, ``clients`` and ``backends``
    (lists of hosts in order), ``of_port``, ``lb_dpid``, ``frontend_port``,
    ``backend_port``.
    """

    def __init__(self, n_clients: int = 2, n_backends: int = 3,
                 of_port: int = DEFAULT_OF_PORT, dpid: str = DEFAULT_LB_DPID,
                 plain: str = "ovs", lock_timeout: float = 600.0,
                 lb_ports: str = "system") -> None:
        self.n_clients = int(n_clients)
        self.plain = plain
        self.lb_ports = lb_ports
        self.n_backends = int(n_backends)
        self.of_port = int(of_port)
        self.lb_dpid = f"{int(str(dpid), 16):016x}"
        self.frontend_port = FRONTEND_PORT
        self.backend_port = BACKEND_PORT
        self._procs: list[subprocess.Popen] = []
        self._logdir: str | None = None
        self._stopped = False
        topo = LbrpTopo(n_clients=self.n_clients, n_backends=self.n_backends,
                        of_port=self.of_port, dpid=self.lb_dpid, plain=plain,
                        lb_ports=lb_ports)
        self._lock = _LabLock()
        self._lock.acquire(lock_timeout)
        try:
            cleanup_leftovers()
            super().__init__(topo=topo, switch=PlainSwitch, host=LbrpHost,
                             controller=None, build=False, waitConnected=False)
        except BaseException:
            self._lock.release()
            raise

    # -- nodes
    @property
    def lb(self) -> LbSwitch:
        """The bridge lbrp programs."""
        return self[LB_NAME]

    @property
    def router(self) -> LbrpRouter:
        """r1."""
        return self[ROUTER_NAME]

    @property
    def clients(self) -> list[LbrpHost]:
        """c1..cN."""
        return [self[f"c{i}"] for i in range(1, self.n_clients + 1)]

    @property
    def backends(self) -> list[LbrpHost]:
        """b1..bM."""
        return [self[f"b{i}"] for i in range(1, self.n_backends + 1)]

    @property
    def logdir(self) -> str:
        """Folder for process logs (LOG_DIR; removed by stop())."""
        if self._logdir is None:
            os.makedirs(LOG_DIR, mode=0o700, exist_ok=True)
            self._logdir = LOG_DIR
        return self._logdir

    # -- OVS helpers
    def lb_ofctl(self, *args: str, check: bool = True, timeout: float = 20.0) -> str:
        """``ovs-ofctl -O OpenFlow15 <cmd> lb0 <args...>``; stdout (LabError on failure)."""
        if not args:
            raise ValueError("give an ovs-ofctl command")
        res = _sh(["ovs-ofctl", "-O", "OpenFlow15", args[0], LB_NAME, *args[1:]], timeout)
        if check and res.returncode != 0:
            raise LabError(f"ovs-ofctl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def port_stats(self, switch: str, port: int) -> dict[str, int]:
        """rx/tx packet counters of one OpenFlow port of ``switch``."""
        out = _sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", switch, str(port)]).stdout
        rx = re.search(r"rx pkts=(\d+)", out)
        tx = re.search(r"tx pkts=(\d+)", out)
        return {"rx_packets": int(rx.group(1)) if rx else -1,
                "tx_packets": int(tx.group(1)) if tx else -1}

    def controller_connected(self) -> bool:
        """Is lb0 connected to its controller right now?"""
        out = _sh(["ovs-vsctl", "--timeout=5", "get", "Bridge", LB_NAME, "controller"]).stdout
        for uuid in re.findall(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", out):
            res = _sh(["ovs-vsctl", "--timeout=5", "get", "Controller", uuid, "is_connected"])
            if res.stdout.strip() == "true":
                return True
        return False

    def wait_controller(self, timeout: float = 30.0) -> bool:
        """Wait until lb0 is connected to its controller; True if it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.controller_connected():
                return True
            time.sleep(0.2)
        return self.controller_connected()

    # -- readiness
    def wait_forwarding(self, timeout: float = 20.0) -> float:
        """Wait until both plain switches forward; returns the seconds it took.

        Backend side: r1 pings every backend. Frontend side (lb0 has no flows
        yet): every client sends an ARP for its gateway and lb0's frontend port
        must receive them. Clients' neighbour caches are flushed afterwards.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        pending = list(self.backends)
        while pending:
            b = pending[0]
            if run_in(self.router, f"ping -c1 -W1 -q {b.IP()}", timeout=5).returncode == 0:
                pending.pop(0)
            elif time.monotonic() > deadline:
                raise LabError(f"backend switch does not forward: r1 cannot ping {b.name}")
            else:
                time.sleep(0.1)
        while True:
            before = self.port_stats(LB_NAME, FRONTEND_PORT)["rx_packets"]
            procs = [c.popen(["ping", "-c1", "-W1", "-q", CLIENT_GW],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for c in self.clients]
            got = 0
            for _ in range(20):
                time.sleep(0.05)
                got = self.port_stats(LB_NAME, FRONTEND_PORT)["rx_packets"] - before
                if got >= self.n_clients:
                    break
            for p in procs:
                _kill_tree(p, grace=1.0)
            if got >= self.n_clients:
                break
            if time.monotonic() > deadline:
                raise LabError("frontend switch does not forward: lb0 port 1 saw "
                               f"{got} of {self.n_clients} ARPs")
        for c in self.clients:
            c.cmd(f"ip neigh flush dev {c.defaultIntf().name}")
        return time.monotonic() - t0

    # -- processes
    def popen_tracked(self, host: Node, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process in ``host``; stop() kills it (and its group)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        p = host.popen([str(a) for a in args], **kwargs)
        self._procs.append(p)
        return p

    def start_backend_servers(self, tcp_ports: Sequence[int] = DEFAULT_SERVER_PORTS,
                              udp_ports: Sequence[int] = DEFAULT_SERVER_PORTS,
                              backends: Sequence[Node] | None = None,
                              timeout: float = 15.0, extra_args: Sequence[str] = (),
                              log_suffix: str = "") -> list[subprocess.Popen]:
        """Run backend_server.py in every backend (or the given ones); wait for READY.

        ``extra_args`` are added to backend_server.py's command line;
        ``log_suffix`` tells apart the logs of several servers per backend.
        """
        started: list[tuple[Node, subprocess.Popen, str]] = []
        for b in (self.backends if backends is None else backends):
            args = [sys.executable, str(BACKEND_SERVER), "--name", b.name,
                    "--stop-on-stdin-eof", *extra_args]
            for port in tcp_ports:
                args += ["--tcp", str(port)]
            for port in udp_ports:
                args += ["--udp", str(port)]
            log = os.path.join(self.logdir, f"server-{b.name}{log_suffix}.log")
            with open(log, "w") as errf:
                # stdin is a pipe we keep open: if this process dies, the server exits
                p = self.popen_tracked(b, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=errf, text=True)
            started.append((b, p, log))
        deadline = time.monotonic() + timeout
        for b, p, log in started:
            assert p.stdout is not None
            line = _readline_until(p.stdout, deadline)
            if not line.startswith("READY"):
                p.poll()
                raise LabError(f"backend server in {b.name} did not start "
                               f"(rc={p.returncode}): {Path(log).read_text()[-2000:]}")
        return [p for _, p, _ in started]

    def run_client(self, host: Node, vip: str, proto: str = "tcp", port: int = 8000,
                   sessions: int = 1, concurrency: int = 20, timeout: float = 2.0,
                   extra: Sequence[str] = (), run_timeout: float | None = None
                   ) -> dict[str, Any]:
        """Run client.py in ``host`` and return its JSON summary."""
        args = [sys.executable, str(CLIENT), "--vip", vip, "--proto", proto,
                "--port", str(port), "--sessions", str(sessions),
                "--concurrency", str(concurrency), "--timeout", str(timeout), *extra]
        if run_timeout is None:
            hold = 0.0
            if "--hold" in extra:
                hold = float(extra[list(extra).index("--hold") + 1])
            run_timeout = 30.0 + (sessions / max(1, concurrency) + 1) * (timeout * 3 + hold)
        res = run_in(host, args, timeout=run_timeout)
        lines = res.stdout.strip().splitlines()
        if res.returncode != 0 or not lines:
            raise LabError(f"client.py failed (rc={res.returncode}): "
                           f"{shlex.join(args)}\n{res.stderr[-2000:]}")
        return json.loads(lines[-1])

    def stop_processes(self) -> None:
        """Kill every process started with popen_tracked()."""
        for p in self._procs:
            _kill_tree(p)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        self._procs.clear()

    def stop(self) -> None:
        """Kill our processes, stop Mininet, remove leftovers, release the lock."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.stop_processes()
        finally:
            try:
                super().stop()
            finally:
                try:
                    cleanup_leftovers()
                finally:
                    self._lock.release()


def _readline_until(f: IO[str], deadline: float) -> str:
    """One line from a pipe, or "" at EOF/deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        ready, _, _ = select.select([f], [], [], left)
        if ready:
            return f.readline()


def build_net(n_clients: int = 2, n_backends: int = 3, of_port: int = DEFAULT_OF_PORT,
              dpid: str = DEFAULT_LB_DPID, plain: str = "ovs",
              lock_timeout: float = 600.0, lb_ports: str = "system") -> LbrpNet:
    """Build (not start) the lab; waits for the machine-wide lab lock.

    The caller must call ``net.stop()`` (which also releases the lock), even
    when ``build()`` or ``start()`` fail.
    """
    net = LbrpNet(n_clients, n_backends, of_port=of_port, dpid=dpid, plain=plain,
                  lock_timeout=lock_timeout, lb_ports=lb_ports)
    try:
        net.build()
    except BaseException:
        net.stop()
        raise
    return net


@contextlib.contextmanager
def lab(n_clients: int = 2, n_backends: int = 3, of_port: int = DEFAULT_OF_PORT,
        dpid: str = DEFAULT_LB_DPID, plain: str = "ovs", servers: bool = False,
        tcp_ports: Sequence[int] = DEFAULT_SERVER_PORTS,
        udp_ports: Sequence[int] = DEFAULT_SERVER_PORTS,
        forward_timeout: float = 20.0, lock_timeout: float = 600.0,
        lb_ports: str = "system") -> Iterator[LbrpNet]:
    """Build and start the lab, wait until the plain switches forward, yield it.

    With ``servers`` every backend runs backend_server.py on ``tcp_ports`` /
    ``udp_ports``. ``plain`` picks the plain switches ("ovs" or "linux"),
    ``lb_ports`` lb0's port type (LB_PORT_TYPES).
    Always stops everything on exit (exceptions included).
    """
    net = build_net(n_clients, n_backends, of_port=of_port, dpid=dpid, plain=plain,
                    lock_timeout=lock_timeout, lb_ports=lb_ports)
    try:
        net.start()
        net.wait_forwarding(forward_timeout)
        if servers:
            net.start_backend_servers(tcp_ports, udp_ports)
        yield net
    finally:
        net.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m topologies.lbrp_topo``: run the lab with Mininet's CLI (no by-name cleanup)."""
    import argparse

    from mininet.cli import CLI
    from mininet.log import setLogLevel

    p = argparse.ArgumentParser(description="lbrp reference lab (Ctrl-D / exit stops it)")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--backends", type=int, default=3)
    p.add_argument("--of-port", type=int, default=DEFAULT_OF_PORT)
    p.add_argument("--dpid", default=DEFAULT_LB_DPID)
    p.add_argument("--plain", choices=sorted(PLAIN_SWITCHES), default="ovs")
    p.add_argument("--lb-ports", choices=LB_PORT_TYPES, default="system",
                   help="lb0's port type (afxdp: read by a PMD thread)")
    p.add_argument("--no-servers", action="store_true", help="do not start backend servers")
    p.add_argument("--passthrough", action="store_true",
                   help="program lb0 by hand as a wire (port 1 <-> 2), no controller needed")
    args = p.parse_args(argv)
    setLogLevel("info")
    with lab(args.clients, args.backends, of_port=args.of_port, dpid=args.dpid,
             plain=args.plain, servers=not args.no_servers, lb_ports=args.lb_ports) as net:
        if args.passthrough:
            net.lb_ofctl("add-flow", f"in_port={FRONTEND_PORT},actions=output:{BACKEND_PORT}")
            net.lb_ofctl("add-flow", f"in_port={BACKEND_PORT},actions=output:{FRONTEND_PORT}")
        CLI(net)
    return 0


if __name__ == "__main__":
    sys.exit(main())
