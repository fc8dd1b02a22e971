"""The os-ken application: moves messages and events, decides nothing itself.

Decisions live in :mod:`lbrp_app.pipeline` (what to program),
:mod:`lbrp_app.ofmsg` (how it is encoded) and :mod:`lbrp_app.packets`
(what to answer). This module tracks switches, serialises changes, applies
them to every switch, saves the file and answers packet-ins.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from os_ken import cfg
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_5

from lbrp_app import config as config_file
from lbrp_app import ctdump, memtrace, ofmsg, ovsdb, packets
from lbrp_app import pipeline as pl
from lbrp_app.model import Config
from lbrp_app.stats import Reading, StatsBook, count_conntrack_labels
from lbrp_app.stats import fold_reply as stats_fold
from lbrp_app.switch import (
    ChangeGate,
    SwitchError,
    SwitchStateUnknown,
    XidTracker,
    commit,
    commit_staged,
    describe_error,
    request,
    request_paced,
)

LOG = logging.getLogger("lbrp.app")
SWITCH_TIMEOUT = float(os.environ.get("LBRP_SWITCH_TIMEOUT", "10"))
POLL_PER_TRIP = 256  # counter requests per round trip (see switch.request_paced)
# A poll's own work (the stats book's steps) holds the controller's only thread for at
# most about this long at a time. A REST request needs several turns of the hub (accept,
# read, answer), and each waited for a whole step: 4,096 counters, up to 17 ms
# on a busy machine, so a GET took up to 150 ms during a poll at 2,000 x 8.
STEPS_SLICE = 0.002
# OVSDB settings are applied on this host, so the switch is local: OpenFlow listens on
# loopback unless --ofp-listen-host says otherwise (os-ken's default is every address).
cfg.CONF.set_default("ofp_listen_host", "127.0.0.1")


class ChangeError(Exception):
    """A change could not be applied or saved; nothing of it is in effect."""


class ChangeTimes:
    """How long each step of a change took, for its log line (milliseconds)."""

    def __init__(self, start: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = start
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        """``step`` ended now."""
        now = self.clock()
        self.steps.append((step, (now - self.last) * 1000))
        self.last = now

    def total_ms(self) -> float:
        return sum(ms for _, ms in self.steps)

    def __str__(self) -> str:
        return ", ".join(f"{step} {ms:.1f}" for step, ms in self.steps)


@contextlib.contextmanager
def gc_paused(freeze: bool) -> Iterator[None]:
    """Pause Python's cyclic garbage collector around bulk work.

    Loading, building and encoding 2,000 services x 8 backends makes some 10^6
    short-lived objects, and the collections they trigger walk the whole config
    each time: 35-60 % of each step (``config.load``, ``pipeline.desired_state``,
    message encoding; measured). Reference counting still frees everything at once;
    only reference cycles wait for the collection at the end.

    With ``freeze`` (start-up and programming a switch), every object still alive
    after that collection is then frozen (``gc.freeze``): the config and flow state
    are long-lived, and a full collection that walked them took about 300 ms at
    2,000 x 8, stalling whatever waited behind it (a REST change: 100-400 ms instead
    of about 30). A REST change does not freeze: whatever is alive during it (the
    request's socket, environ and buffers, the replaced config) would then never be
    collected once it becomes cyclic garbage; freezing there leaked about 10 KiB per
    change. Its own few new objects stay in the collector's generations. Its
    collection is a full one (2-3 ms at 2,000 x 8): one of the young generations only
    would move the request's objects, still alive then, to the old generation, where
    they would wait as garbage for a full collection that seldom comes (2.25 MiB after
    600 changes in ``test_rest_changes_do_not_grow_the_controller``).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.collect()
            if freeze:
                gc.freeze()
            gc.enable()


@dataclass
class Switch:
    """What the app knows of one connected datapath."""

    dp: Any
    ports: pl.Ports | None = None
    programmed: bool = False
    bridge: str | None = None
    connected_at: float = field(default_factory=time.time)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # from the last programming, for /health
    guard: int = 0  # the phase of the LEARN guard on the switch (pipeline.learn_guard)


class LbrpApp(app_manager.OSKenApp):
    """Reverse-proxy L4 load balancer controller."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ofmsg.decode_flow_removed_fast()
        ofmsg.decode_multipart_replies_fast()
        self.config_path = config_file.config_path()
        try:
            with gc_paused(freeze=True):
                self.config: Config = config_file.load(self.config_path)
        except config_file.ConfigFileError as exc:
            print(f"lbrp: refusing to start: {exc}", file=sys.stderr)
            LOG.error("refusing to start: %s", exc)
            raise SystemExit(2) from None
        self.switches: dict[int, Switch] = {}
        self.tracker = XidTracker()
        self.lock = hub.Semaphore(1)
        self.changes = ChangeGate()  # counter polls wait while a change is pending
        self.stats = StatsBook()
        self.bucket_owners = ofmsg.BucketOwners()  # the polls' group-stats keys, memoised
        self.last_reconcile: float | None = None
        self.conntrack_dumped_at = float("-inf")
        self.stats_pruned_for: Config | None = None
        self.rest_server: Any = None
        LOG.info("loaded %d services from %s", len(self.config.services), self.config_path)

    def start(self) -> Any:
        short = pl.short_timeouts(self.config.settings)
        if short:
            LOG.warning("learn pinning: %s (OVS max-idle plus a revalidator round): a "
                        "client reusing a source port within that time may need a SYN "
                        "retransmission", ", ".join(short))
        thread = super().start()
        memtrace.install()
        from lbrp_app.rest import serve

        self.rest_server = serve(self)
        hub.spawn(self._poll_loop)
        return thread

    # --- switch lifecycle -------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        old = self.switches.get(dp.id)
        if old is not None and old.dp is not dp:
            self.tracker.disconnect(dp.id)
        self.switches[dp.id] = Switch(dp)
        LOG.info("switch %016x connected (OpenFlow 0x%x)", dp.id, dp.ofproto.OFP_VERSION)
        hub.spawn(self._program, dp)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _gone(self, ev: Any) -> None:
        dp = ev.datapath
        sw = self.switches.get(dp.id) if dp.id is not None else None
        if sw is not None and sw.dp is dp:
            del self.switches[dp.id]
            self.tracker.disconnect(dp.id)
            self.stats.forget_switch(dp.id)
            LOG.info("switch %016x disconnected", dp.id)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        """A port appeared: a switch that lacked a configured port can be programmed now."""
        dp = ev.msg.datapath
        sw = self.switches.get(dp.id)
        if sw is not None and sw.dp is dp and not sw.programmed and sw.error \
                and ev.msg.reason == dp.ofproto.OFPPR_ADD:
            hub.spawn(self._program, dp)

    def _resolve_ports(self, dp: Any) -> pl.Ports:
        s = self.config.settings
        numbers: dict[str, int] = {}
        if isinstance(s.frontend_port, str) or isinstance(s.backend_port, str):
            parser = dp.ofproto_parser
            reply = request(dp, self.tracker, [parser.OFPPortDescStatsRequest(dp, 0)],
                            SWITCH_TIMEOUT)
            for msg in reply.replies:
                if not isinstance(msg, parser.OFPPortDescStatsReply):
                    continue
                for port in msg.body:
                    name = port.name.decode() if isinstance(port.name, bytes) else port.name
                    numbers[name.rstrip("\0")] = port.port_no
        out = []
        for name in (s.frontend_port, s.backend_port):
            if isinstance(name, int):
                out.append(name)
            elif name in numbers:
                out.append(numbers[name])
            else:
                raise SwitchError(f"switch has no port named {name!r}")
        return pl.Ports(out[0], out[1])

    def _program(self, dp: Any) -> None:
        """Reconcile a (re)connected switch: replace our flows, keep learned sessions."""
        sw = self.switches.get(dp.id)
        if sw is None:
            return
        with self.lock:
            if self.switches.get(dp.id) is not sw:
                return
            try:
                sw.ports = self._resolve_ports(dp)
                self._setup_meter(dp)
                warnings: list[str] = []
                try:
                    settings = self.config.settings
                    sw.bridge = ovsdb.limit_sessions(dp.id, settings.max_sessions)
                    if settings.datapath_max_idle_ms:
                        ovsdb.datapath_max_idle(settings.datapath_max_idle_ms)
                    elif ovsdb.release_max_idle():
                        LOG.info("ovs-vswitchd max-idle back to the OVS default: "
                                 "datapath_max_idle_ms is no longer set")
                    if settings.session_pinning == "conntrack":
                        ovsdb.limit_connections(settings.max_sessions)
                        ovsdb.conntrack_timeouts(sw.bridge, settings.tcp_idle_timeout,
                                                 settings.tcp_fin_timeout,
                                                 settings.udp_idle_timeout)
                except (RuntimeError, OSError) as exc:
                    warnings.append(f"session bound not applied through OVSDB: {exc}")
                for text in warnings:
                    LOG.warning("switch %016x: %s", dp.id, text)
                sw.warnings = warnings
                t0 = time.monotonic()
                guard, stale = 0, []
                if self.config.settings.session_pinning == "learn":
                    guard = pl.reconcile_guard(bool(self._count_flows(
                        dp, pl.LEARN, cookie=pl.guard_cookie(1), cookie_mask=pl.ALL_ONES)))
                    stale = pl.stale_sessions(self._learn_backends(dp), self.config)
                    if stale:
                        LOG.info("switch %016x: purging the learned sessions of backends "
                                 "it holds and the config no longer has: %d", dp.id,
                                 len(stale))
                steps = [("start", time.monotonic())]  # each step: (name, time it ended)
                with gc_paused(freeze=True):
                    state = pl.desired_state(self.config, sw.ports, guard)
                    msgs = ofmsg.reconcile_messages(dp.ofproto_parser, dp.ofproto, state,
                                                    stale)
                    steps.append(("built", time.monotonic()))
                    commit_staged(dp, self.tracker, msgs, SWITCH_TIMEOUT,
                                  lambda step: steps.append((step, time.monotonic())))
                    n_flows, n_groups = len(state.flows), len(state.groups)
                    del msgs
                    # freed before gc_paused's closing collection, which would walk it:
                    # 0.12-0.18 instead of 0.40-0.53 s at 2,000 x 8 (bench/results/startup19)
                    del state
                sw.programmed, sw.guard = True, guard
                sw.error = None
                self.last_reconcile = time.time()
                LOG.info("switch %016x programmed: %d flows, %d groups in %.3f s (%s)",
                         dp.id, n_flows, n_groups, time.monotonic() - t0, ", ".join(
                             f"{name} {t - prev:.3f}" for (_, prev), (name, t)
                             in itertools.pairwise(steps)))
            except SwitchError as exc:
                sw.error = str(exc)
                LOG.error("switch %016x not programmed: %s", dp.id, exc)
            except Exception as exc:  # keep serving the other switches
                sw.error = f"internal error: {exc}"
                LOG.exception("switch %016x not programmed", dp.id)

    def _setup_meter(self, dp: Any) -> None:
        parser, ofp = dp.ofproto_parser, dp.ofproto
        s = self.config.settings
        add = ofmsg.meter_mod(parser, ofp, s.packet_in_rate, s.packet_in_burst, ofp.OFPMC_ADD)
        if request(dp, self.tracker, [add], SWITCH_TIMEOUT).errors:
            mod = ofmsg.meter_mod(parser, ofp, s.packet_in_rate, s.packet_in_burst,
                                  ofp.OFPMC_MODIFY)
            errors = request(dp, self.tracker, [mod], SWITCH_TIMEOUT).errors
            if errors:
                raise SwitchError(f"meter refused: {describe_error(errors[0])}")

    def stats_snapshot(self) -> dict[str, Any]:
        """The counters document of ``GET /lbrp/v1/stats``."""
        return self.stats.snapshot(self.config, len(self.programmed_switches()),
                                   self.last_reconcile, connected=len(self.switches))

    def programmed_switches(self) -> list[Switch]:
        return [sw for _, sw in sorted(self.switches.items()) if sw.programmed]

    # --- replies and errors ------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        if not self.tracker.error(msg.datapath.id, msg.xid, msg):
            LOG.warning("switch %016x: unsolicited %s", msg.datapath.id, describe_error(msg))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev: Any) -> None:
        self.tracker.reply(ev.msg.datapath.id, ev.msg.xid, ev.msg)

    @set_ev_cls([ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventOFPFlowDescStatsReply, ofp_event.EventOFPGroupStatsReply,
                 ofp_event.EventOFPMeterStatsReply],
                MAIN_DISPATCHER)
    def _multipart(self, ev: Any) -> None:
        msg = ev.msg
        self.tracker.reply(msg.datapath.id, msg.xid, msg, more=bool(msg.flags & 1))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        counts = msg.stats if msg.stats is not None else {}  # OVS always sends them
        self.stats.on_flow_removed(msg.datapath.id, msg.cookie, msg.table_id,
                                   counts.get("packet_count", 0), counts.get("byte_count", 0))

    # --- counters ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while True:
            interval = self.config.settings.stats_interval
            hub.sleep(interval or 5)
            if interval:
                self.poll_stats()

    def poll_stats(self) -> None:
        """Read counters from every programmed switch into the stats book."""
        cfg = self.config
        # the book's work goes in steps, letting REST changes run in between (and go first)
        if cfg is not self.stats_pruned_for:  # after a change: removed backends' totals go
            self._run_steps(self.stats.prune_steps(cfg))
            self.stats_pruned_for = cfg
        started, requests = time.monotonic(), 0
        for sw in self.programmed_switches():
            try:
                reading, sent = self._read_counters(sw.dp, cfg)
                requests += sent
                self._run_steps(self.stats.on_reading_steps(sw.dp.id, reading, time.time(),
                                                            cfg=cfg))
            except SwitchError as exc:
                LOG.warning("switch %016x: counters not read: %s", sw.dp.id, exc)
        self.stats.poll_cost = (time.monotonic() - started, requests)
        if cfg.settings.session_pinning == "conntrack" and self.programmed_switches():
            self._read_conntrack(cfg)
            self._warn_zone_full(cfg)

    def _run_steps(self, steps: Iterable[None]) -> None:
        """Run a long job's steps, letting other work run after each :data:`STEPS_SLICE`
        of them, and waiting then while a REST change is pending."""
        since = time.monotonic()
        for _ in steps:
            if time.monotonic() - since >= STEPS_SLICE:
                hub.sleep(0)
                self.changes.wait_clear(SWITCH_TIMEOUT)
                since = time.monotonic()

    def _warn_zone_full(self, cfg: Config) -> None:
        """Say how many new sessions' packets a full zone dropped (at most once a minute)."""
        news = self.stats.zone_full_news(time.monotonic())
        if news:
            LOG.warning("conntrack zone full: %d packets of new sessions dropped (%d since "
                        "the last warning); raise max_sessions (now %d): OVS 3.1 counts "
                        "ended connections until its sweep, every 20 s", *news,
                        cfg.settings.max_sessions)

    def _read_conntrack(self, cfg: Config) -> None:
        """The zone's connection count every poll; per backend only if asked for."""
        try:
            self.stats.conntrack_sessions = ovsdb.conntrack_sessions()
        except (RuntimeError, OSError) as exc:
            self.stats.conntrack_sessions = None
            LOG.warning("conntrack sessions not read: %s", exc)
        every = cfg.settings.conntrack_dump_interval
        now = time.monotonic()
        if not every:
            self.stats.conntrack_active = None
        elif now - self.conntrack_dumped_at >= every:
            self.conntrack_dumped_at = now
            try:
                self.stats.conntrack_active = count_conntrack_labels(ovsdb.dump_conntrack())
            except (RuntimeError, OSError) as exc:
                self.stats.conntrack_active = None
                LOG.warning("conntrack connections not dumped: %s", exc)

    def _read_counters(self, dp: Any, cfg: Config) -> tuple[Reading, int]:
        """One switch's counters, and how many requests read them: the groups' and the
        meter's first, then the flows lbrp installs, then the learned sessions of the
        backends not found idle."""
        reading = Reading()
        keys: list[tuple[str, Any]] = []

        def on_reply(msg: Any, i: int) -> None:
            stats_fold(self.stats, dp.id, reading, keys[i], msg)

        def before_batch() -> None:
            self.changes.wait_clear(SWITCH_TIMEOUT)

        first = ofmsg.group_and_meter_requests(dp.ofproto_parser, cfg, self.bucket_owners)
        keys += [key for key, _ in first]
        request_paced(dp, self.tracker, [msg for _, msg in first], SWITCH_TIMEOUT, on_reply,
                      POLL_PER_TRIP, before_batch)
        idle: set[tuple[int, int]] = set()
        self._run_steps(self.stats.idle_backends_steps(dp.id, cfg, reading.buckets, idle))

        def requests(batch: Iterator[tuple[tuple[str, Any], Any]]) -> Iterator[Any]:
            for key, msg in batch:
                keys.append(key)  # before the message is sent, so before its reply
                yield msg

        # one flow-desc request a round trip: OVS takes milliseconds over each, and a
        # REST change sent meanwhile waits behind the requests in flight
        for batch, per_trip in ((ofmsg.flow_requests(cfg), 1),
                                (ofmsg.session_requests(cfg, idle), POLL_PER_TRIP)):
            base = len(keys)
            request_paced(dp, self.tracker, requests(batch), SWITCH_TIMEOUT,
                          lambda msg, i, base=base: on_reply(msg, base + i), per_trip,
                          before_batch)
        self._run_steps(self.stats.fill_idle_steps(dp.id, reading, idle))
        return reading, len(keys)

    # --- changes -----------------------------------------------------------------------

    def apply(self, edit: Callable[[Config], Config], received: float | None = None) -> None:
        """Apply ``edit(current config)`` on every programmed switch, save it, then make it
        current.

        ``edit`` runs once this change holds the lock, on the config every earlier change
        left, so changes sent at once apply one after the other and none undoes another.
        It may raise to refuse the change, and returns the config it was given when there
        is nothing to change. Raises ChangeError (with everything rolled back) if a switch
        refuses or the file cannot be written. ``received`` (``time.monotonic()``) is when
        the request arrived, for the change's log line.
        """
        # pending from before the wait for the lock; the save after the switches is quick
        # (only the changed services are formatted), so polls may as well wait for it too
        times = ChangeTimes(time.monotonic() if received is None else received)
        if received is not None:
            times.mark("request")
        with self.changes.change(), self.lock, gc_paused(freeze=False):
            times.mark("lock")
            old = self.config
            new = edit(old)
            if new is old:
                return
            purge = pl.purged_sessions(old, new)
            times.mark("edit")
            done: list[Switch] = []
            try:
                for sw in self.programmed_switches():
                    assert sw.ports is not None
                    d = pl.change(old, new, sw.ports, purge, sw.guard)
                    times.mark("diff")
                    self._apply_diff(sw, d, new, times)
                    done.append(sw)
            except SwitchError as exc:
                if isinstance(exc, SwitchStateUnknown):
                    self._reprogram(sw, f"change not confirmed ({exc})")
                self._roll_back(done, new, old)
                raise ChangeError(f"switch refused the change: {exc}") from None
            try:
                config_file.save(self.config_path, new)
            except OSError as exc:
                self._roll_back(done, new, old)
                self._restore_file(old)
                raise ChangeError(f"could not save {self.config_path}: {exc}") from None
            self.config = new
            times.mark("save")
        times.mark("collect")  # gc_paused's collection
        LOG.info("change: %s live in %.1f ms (%s)", ", ".join(map(str, pl.changed_services(
            old, new))), times.total_ms(), times)

    def _apply_diff(self, sw: Switch, d: pl.Diff, cfg: Config,
                    times: ChangeTimes | None = None) -> None:
        """One atomic bundle, then what cannot be bundled (conntrack flushes)."""
        conntrack = cfg.settings.session_pinning == "conntrack"
        bundle, after = ofmsg.diff_messages(sw.dp.ofproto_parser, sw.dp.ofproto, d, conntrack)
        commit(sw.dp, self.tracker, bundle, SWITCH_TIMEOUT,
               times.mark if times is not None else None)
        sw.guard = d.guard
        labels = {pl.ct_label(p.service, p.backend) for p in d.purge_sessions
                  if conntrack and p.backend is not None}
        # Listed after this switch's bundle, so no new connection gets these labels now.
        # Switches of one host share the zone, yet each lists it again: until its own
        # bundle, a switch could still give the labels to new connections.
        if labels:
            try:
                conns = ctdump.labelled_connections(ovsdb.dump_conntrack(), labels)
            except (RuntimeError, OSError) as exc:
                LOG.warning("switch %016x: conntrack not listed, sessions of removed "
                            "backends stay until they expire: %s", sw.dp.id, exc)
                conns = []
            after += [ofmsg.ct_flush_connection(sw.dp.ofproto_parser, *c) for c in conns]
        if after:
            errors = request(sw.dp, self.tracker, after, SWITCH_TIMEOUT).errors
            if errors:
                LOG.warning("switch %016x: conntrack flush refused: %s", sw.dp.id,
                            describe_error(errors[0]))
            if times is not None:
                times.mark("flush")

    def _restore_file(self, cfg: Config) -> None:
        """After a refused save, the file as ``cfg``: a save can fail after its rename
        (the folder's fsync), and a restart would then bring back the refused change."""
        try:
            config_file.save(self.config_path, cfg)
        except OSError as exc:
            LOG.error("could not write %s back as it was before the refused change: %s",
                      self.config_path, exc)

    def _roll_back(self, switches: list[Switch], new: Config, old: Config) -> None:
        for sw in switches:
            assert sw.ports is not None
            try:
                self._apply_diff(sw, pl.change(new, old, sw.ports, guard=sw.guard), old)
            except SwitchError as exc:
                self._reprogram(sw, f"rollback failed ({exc})")

    def _reprogram(self, sw: Switch, why: str) -> None:
        """Program ``sw`` again from the current config, once this change ends."""
        LOG.error("switch %016x: %s; reprogramming", sw.dp.id, why)
        sw.programmed = False
        hub.spawn(self._program, sw.dp)

    # --- packet-in ---------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        sw = self.switches.get(dp.id)
        decoded = pl.decode_cookie(msg.cookie)
        reply = None
        if sw is not None and sw.ports is not None and decoded is not None:
            kind, sid = decoded[0], decoded[1]
            port = msg.match.get("in_port", sw.ports.frontend)
            counters = self.stats.counters
            if kind == pl.KIND_VIP:
                reply = packets.echo_reply(msg.data, self.config.vip_set)
                if reply is not None:
                    counters.echo_replies += 1
            elif kind == pl.KIND_REJECT:
                reply = packets.reject(msg.data)
                if reply is not None:
                    counters.rejects[sid] = counters.rejects.get(sid, 0) + 1
            elif kind == pl.KIND_NOT_SYN:
                rst = packets.reset(msg.data)
                if rst is not None:
                    hub.spawn(self._reset, dp, port, sid, rst)
                    return
            if reply is not None:
                self._packet_out(dp, port, reply)
                return
        self.stats.counters.ignored_packet_ins += 1

    def _packet_out(self, dp: Any, port: int, data: bytes) -> None:
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(
            datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
            match=parser.OFPMatch(in_port=ofp.OFPP_CONTROLLER),
            actions=[parser.OFPActionOutput(port)], data=data))

    def _count_flows(self, dp: Any, table: int, match: pl.Match = (), cookie: int = 0,
                     cookie_mask: int = 0) -> int | None:
        """How many flows of ``table`` the switch holds that the match and cookie select
        (None if it answers with an error); raises SwitchError."""
        answer = request(dp, self.tracker, [ofmsg.AggregateRequest(
            table, cookie, cookie_mask, match)], SWITCH_TIMEOUT)
        counts = [m.body.stats.get("flow_count", 0) for m in answer.replies
                  if isinstance(m, dp.ofproto_parser.OFPAggregateStatsReply)]
        return None if answer.errors or len(counts) != 1 else counts[0]

    def _learn_backends(self, dp: Any) -> list[int]:
        """The cookies of the backend flows in the switch's LEARN table: the backends
        it was programmed with; raises SwitchError."""
        backends = sum(len(svc.backends) for svc in self.config.services.values())
        answer = request(dp, self.tracker, ofmsg.learn_backend_requests(backends),
                         SWITCH_TIMEOUT)
        if answer.errors:
            raise SwitchError(f"switch refused to list its LEARN flows: {answer.errors[0]}")
        return [flow.cookie for m in answer.replies
                if isinstance(m, ofmsg.OFPFlowDescStatsReply) for flow in m.body]

    def _reset(self, dp: Any, port: int, sid: int, rst: packets.Reset) -> None:
        """Send ``rst`` for a non-SYN that reached the switch's no-session flow.

        Learn pinning: only once the switch confirms it holds no session for the
        segment's 5-tuple. A datapath flow cached before the session was learned (a
        client port reused within OVS's max-idle) may still send a new session's first
        packets here until OVS revalidates it; a RST would end that session.
        """
        if self.config.settings.session_pinning == "learn":
            match = pl.tcp_session_match(rst.client, rst.client_port, rst.vip, rst.vip_port)
            try:
                count = self._count_flows(dp, pl.SESSION_FWD, match)
            except SwitchError:
                return
            if count != 0:
                self.stats.counters.ignored_packet_ins += 1
                return
        self._packet_out(dp, port, rst.data)
        resets = self.stats.counters.resets
        resets[sid] = resets.get(sid, 0) + 1
