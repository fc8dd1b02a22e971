"""Counters per service and backend, from switch readings and controller events.

Pure: the app feeds readings (aggregate flow stats per session cookie, group
bucket stats, drop-flow stats, meter stats), flow-removed messages of learned
sessions and its own counters; :class:`StatsBook` turns them into monotonic
totals and the JSON served at ``/lbrp/v1/stats``. Time is passed in.

Exact: new sessions (group bucket hits; a retransmitted SYN counts again),
active sessions, packets and bytes out (replies through the learned reverse
flows) and a service's packets and bytes in (its classifier flow sees every
client packet). A backend's packets and bytes in are the bucket hits plus its
learned forward flows and may over-count at first: when OVS revalidates a
megaflow that carried several sessions' first packets, it credits the packets
since the last revalidation to the session learned from it.

Switch counters reset when a flow or group is replaced (reconnect, changes):
:class:`Monotonic` keeps running totals across resets. Learned session flows
take their counts with them when they expire, so their flow-removed messages
(learn's ``send_flow_rem`` flag) are added to the totals.

Learn pinning: a poll reads the buckets first and skips the session flows of
backends with none at the last reading and no new session since
(:meth:`StatsBook.idle_backends`), so its cost follows the backends in use, not
the backends configured.

Conntrack pinning: connections are not visible through OpenFlow. The app reads
the zone's total every poll, and per backend (by ct_label) only from an opt-in
conntrack dump (``conntrack_dump_interval``; see :mod:`lbrp_app.ovsdb`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lbrp_app import pipeline as pl
from lbrp_app.ctdump import labelled_entries
from lbrp_app.model import Config

ZONE_FULL_WARN_EVERY_S = 60.0  # the log's zone-full warning, at most this often
# Work of a poll comes in steps of about a millisecond (at 2,000 x 8 on the bench's
# machine), which the app groups into slices of STEPS_SLICE seconds (app.py)
READING_STEP = 1024  # counters per step of StatsBook.on_reading_steps
SERVICE_STEP = 64  # services per step of StatsBook.prune_steps and idle_backends_steps
IDLE_RECHECK_POLLS = 16  # an idle backend's session flows are read at least this often


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter): one list a step."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Monotonic:
    """Running totals of counters that may drop back to zero, in spaces (a switch and a
    kind of counter) that are read whole."""

    def __init__(self) -> None:
        self._base: dict[Any, dict[Any, int]] = {}
        self._last: dict[Any, dict[Any, int]] = {}

    def update(self, space: Any, key: Any, raw: int) -> int:
        """Take one counter's reading; returns its total."""
        self.update_all(space, ((key, raw),))
        return self.total(space, key)

    def update_all(self, space: Any, raws: Iterable[tuple[Any, int]]) -> None:
        """Take the readings (key, raw value) of many counters of ``space``."""
        last = self._last.setdefault(space, {})
        base = self._base.setdefault(space, {})
        prev = last.get
        for key, raw in raws:
            was = prev(key, 0)
            if raw < was:
                base[key] = base.get(key, 0) + was
            last[key] = raw

    def total(self, space: Any, key: Any) -> int:
        base, last = self._base.get(space), self._last.get(space)
        return (base.get(key, 0) if base else 0) + (last.get(key, 0) if last else 0)

    def forget(self, space: Any, keys: Iterable[Any]) -> int:
        """Drop the totals of ``keys`` in ``space``; returns how many there were."""
        base, last = self._base.get(space, {}), self._last.get(space, {})
        n = 0
        for k in keys:
            n += (last.pop(k, None) is not None) | (base.pop(k, None) is not None)
        return n


@dataclass
class Reading:
    """Raw counters read from one switch in one poll."""

    # (service id, backend id, session table) -> (live flows, packets, bytes); packets and
    # bytes include the switch's sessions that already expired (see StatsBook.session_total)
    sessions: dict[tuple[int, int, int], tuple[int, int, int]] = field(default_factory=dict)
    # (group id, bucket id) -> (packets, bytes): first packets of new sessions per backend
    buckets: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    # cookie of a counted flow (drops: fragments per VIP, not-SYN per service;
    # conntrack's three after the commit: two drops and the re-pick) -> packets
    counted: dict[int, int] = field(default_factory=dict)
    # service id -> (packets, bytes) of its classifier flow: every client packet to it
    service_in: dict[int, tuple[int, int]] = field(default_factory=dict)
    meter_dropped: int = 0


@dataclass
class ControllerCounters:
    """What the controller counts itself."""

    echo_replies: int = 0
    rejects: dict[int, int] = field(default_factory=dict)  # service id -> sessions
    resets: dict[int, int] = field(default_factory=dict)  # service id -> RSTs for non-SYNs
    ignored_packet_ins: int = 0


class StatsBook:
    """Accumulates readings and events into the totals served to operators."""

    def __init__(self) -> None:
        self.mono = Monotonic()
        self.removed: dict[tuple[int, int, int, int], list[int]] = {}
        self.active: dict[int, dict[tuple[int, int], int]] = {}
        self.dpids: set[int] = set()  # switches that were ever read or sent a flow-removed
        self.polled_at: float | None = None
        self.conntrack_sessions: int | None = None  # the zone's count (conntrack pinning)
        # (service id, backend id) -> connections, from the last conntrack dump, if any
        self.conntrack_active: dict[tuple[int, int], int] | None = None
        self.counters = ControllerCounters()
        # what the totals hold, so that prune visits only what is gone
        self.seen_pairs: set[tuple[int, int]] = set()  # (service id, backend id)
        self.seen_sids: set[int] = set()
        self.seen_counted: set[int] = set()  # counted flows' cookies (drops, re-picks)
        self.zone_full_reported = (0, float("-inf"))  # (drops, when) at the last warning
        # switch -> the config of its last reading, the backends that had session flows
        # then, and the bucket counters it read
        self.last_read: dict[int, tuple[Config, frozenset[tuple[int, int]],
                                        dict[tuple[int, int], tuple[int, int]]]] = {}
        self.readings = 0
        self.poll_cost: tuple[float, int] | None = None  # the last poll's seconds, requests

    def on_flow_removed(self, dpid: int, cookie: int, table: int, packets: int,
                        nbytes: int) -> None:
        """A learned session flow expired or was purged: keep its counts."""
        decoded = pl.decode_cookie(cookie)
        if decoded is None or decoded[0] != pl.KIND_SESSION:
            return
        self.dpids.add(dpid)
        self.seen_pairs.add((decoded[1], decoded[2]))
        acc = self.removed.setdefault((dpid, decoded[1], decoded[2], table), [0, 0])
        acc[0] += packets
        acc[1] += nbytes

    def session_total(self, dpid: int, key: tuple[int, int, int], flows: int, packets: int,
                      nbytes: int) -> tuple[int, int, int]:
        """Live counts of a session cookie plus those of its expired flows.

        Call it when the aggregate reply is handled, in order with the switch's
        flow-removed messages: a flow removed before the reply was generated is in
        ``removed`` and not in the reply; one removed after, the other way round.
        """
        rp, rb = self.removed.get((dpid, *key), (0, 0))
        return flows, packets + rp, nbytes + rb

    def on_reading(self, dpid: int, reading: Reading, now: float) -> None:
        """Take a poll's reading of switch ``dpid``."""
        for _ in self.on_reading_steps(dpid, reading, now):
            pass

    def on_reading_steps(self, dpid: int, reading: Reading, now: float,
                         step: int = READING_STEP, cfg: Config | None = None
                         ) -> Iterator[None]:
        """:meth:`on_reading` in steps of at most ``step`` counters: the caller may run
        other work between them. (At 2,000 services x 8 backends a poll reads about
        100,000 counters, which took 90 ms in one go in the controller's only thread.)
        ``cfg``, the config the reading was taken for, lets the next poll of the switch
        skip idle backends (:meth:`idle_backends`)."""
        self.dpids.add(dpid)
        self.readings += 1
        sessions, buckets = reading.sessions.items(), reading.buckets.items()
        service_in = reading.service_in.items()
        spaces: list[tuple[str, Iterable[tuple[Any, int]]]] = [
            ("sp", ((k, v[1]) for k, v in sessions)),
            ("sb", ((k, v[2]) for k, v in sessions)),
            ("bucket", ((k, v[0]) for k, v in buckets)),
            ("bucket_bytes", ((k, v[1]) for k, v in buckets)),
            ("counted", reading.counted.items()),
            ("svc_in", ((k, v[0]) for k, v in service_in)),
            ("svc_in_bytes", ((k, v[1]) for k, v in service_in)),
            ("meter", ((None, reading.meter_dropped),)),
        ]
        for kind, raws in spaces:
            for chunk in _chunks(raws, step):
                self.mono.update_all((dpid, kind), chunk)
                yield
        active: dict[tuple[int, int], int] = {}
        busy: set[tuple[int, int]] = set()  # backends with a live session flow
        for chunk in _chunks(sessions, step):
            for (sid, bid, table), (flows, _, _) in chunk:
                if table == pl.SESSION_FWD:
                    active[(sid, bid)] = flows
                if flows:
                    busy.add((sid, bid))
            self.seen_pairs.update(k[:2] for k, _ in chunk)
            yield
        for chunk in _chunks(reading.buckets, step):
            self.seen_pairs.update(chunk)
            yield
        self.active[dpid] = active
        self.seen_counted.update(reading.counted)
        self.seen_sids.update(reading.service_in)
        self.polled_at = now
        if cfg is not None:
            self.last_read[dpid] = (cfg, frozenset(busy), reading.buckets)

    def idle_backends(self, dpid: int, cfg: Config,
                      buckets: dict[tuple[int, int], tuple[int, int]],
                      recheck: int = IDLE_RECHECK_POLLS) -> set[tuple[int, int]]:
        """Learn pinning: the (service id, backend id) whose session flows this poll of
        switch ``dpid`` need not read, given its buckets' counters read first.

        Only a packet through a backend's bucket runs the ``learn`` that makes its
        session flows (pipeline, table LEARN). So a backend that had none at the last
        reading, and whose bucket counters have not moved since, has none now, and its
        counts are those of its expired flows. That needs the same group: only backends
        of a service that is the very one of the last reading qualify (a change or a
        reprogramming can replace a group and restart its counters). Each backend is
        read anyway once every ``recheck`` polls, spread over them: OVS credits the
        packets of cached datapath flows to buckets and runs their ``learn`` later, in
        its revalidator, not in one step.
        """
        idle: set[tuple[int, int]] = set()
        for _ in self.idle_backends_steps(dpid, cfg, buckets, idle, recheck):
            pass
        return idle

    def idle_backends_steps(self, dpid: int, cfg: Config,
                            buckets: dict[tuple[int, int], tuple[int, int]],
                            idle: set[tuple[int, int]], recheck: int = IDLE_RECHECK_POLLS,
                            step: int = SERVICE_STEP) -> Iterator[None]:
        """:meth:`idle_backends` into ``idle``, in steps of ``step`` services: the caller
        may run other work between them (at 2,000 x 8 it took 24-50 ms in one go)."""
        last = self.last_read.get(dpid)
        if last is None or cfg.settings.session_pinning != "learn":
            return
        last_cfg, busy, last_buckets = last
        for i, (key, svc) in enumerate(cfg.services.items(), 1):
            if i % step == 0:
                yield
            if last_cfg.services.get(key) is not svc:
                continue
            sid = key.service_id
            for be in svc.backends:
                k = (sid, be.backend_id)
                if (k not in busy and (sid + k[1] + self.readings) % recheck
                        and buckets.get(k) == last_buckets.get(k)):
                    idle.add(k)

    def fill_idle(self, dpid: int, reading: Reading, idle: Iterable[tuple[int, int]]) -> None:
        """Put the idle backends' session counts (:meth:`idle_backends`) in ``reading``,
        as a read would have found them: no live flow, the expired ones' counts."""
        for _ in self.fill_idle_steps(dpid, reading, idle):
            pass

    def fill_idle_steps(self, dpid: int, reading: Reading, idle: Iterable[tuple[int, int]],
                        step: int = READING_STEP // len(pl.SESSION_TABLES)) -> Iterator[None]:
        """:meth:`fill_idle` in steps of ``step`` backends (at 2,000 x 8 it took 24-35 ms
        in one go)."""
        for i, (sid, bid) in enumerate(idle, 1):
            if i % step == 0:
                yield
            for table in pl.SESSION_TABLES:
                key = (sid, bid, table)
                reading.sessions[key] = self.session_total(dpid, key, 0, 0, 0)

    def prune(self, cfg: Config) -> int:
        """Forget the counters of services and backends ``cfg`` no longer has.

        Ids come from addresses, so without this a config that goes through many
        backend addresses (autoscaling) would keep every one's totals for good. A
        backend removed and added again starts from zero. Only what was seen and is
        gone is visited. Returns the totals dropped.
        """
        steps = self.prune_steps(cfg)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            return int(done.value)

    def prune_steps(self, cfg: Config, step: int = SERVICE_STEP) -> Generator[None, None, int]:
        """:meth:`prune` in steps of at most ``step`` services: the caller may run other
        work between them. (At 2,000 services x 8 backends a prune took 12 ms in one go,
        and up to 38 ms in the controller's only thread on a busy machine.)"""
        pairs: set[tuple[int, int]] = set()
        sids: set[int] = set()
        vips: set[str] = set()
        for chunk in _chunks(cfg.services.values(), step):
            for svc in chunk:
                sid = svc.key.service_id
                sids.add(sid)
                vips.add(svc.key.vip)
                pairs.update((sid, be.backend_id) for be in svc.backends)
            yield
        counted = ({pl.cookie(pl.KIND_NOT_SYN, sid) for sid in sids}
                   | {pl.vip_cookie(pl.KIND_FRAG, vip) for vip in vips}
                   | set(pl.CT_AFTER_COMMIT_COOKIES))
        dead_pairs, dead_sids = self.seen_pairs - pairs, self.seen_sids - sids
        dead_counted = self.seen_counted - counted
        removed = 0
        forget = self.mono.forget
        for dpid in self.dpids:
            sessions = [(sid, bid, table) for sid, bid in dead_pairs for table in pl.SESSION_TABLES]
            for kind in ("sp", "sb"):
                removed += forget((dpid, kind), sessions)
            removed += sum(self.removed.pop((dpid, *k), None) is not None for k in sessions)
            for kind in ("bucket", "bucket_bytes"):
                removed += forget((dpid, kind), dead_pairs)
            for kind in ("svc_in", "svc_in_bytes"):
                removed += forget((dpid, kind), dead_sids)
            removed += forget((dpid, "counted"), dead_counted)
        for per_service in (self.counters.rejects, self.counters.resets):
            for sid in [s for s in per_service if s not in sids]:
                del per_service[sid]
                removed += 1
        self.seen_pairs -= dead_pairs
        self.seen_sids -= dead_sids
        self.seen_counted -= dead_counted
        return removed

    def counted(self, cookie: int) -> int:
        """Packets of the counted flow ``cookie`` (see ``Reading.counted``), all switches;
        e.g. ``pl.CT_DROP_FULL_COOKIE``: new sessions' packets a full zone dropped."""
        return self._total("counted", cookie)

    def zone_full_news(self, now: float, every: float = ZONE_FULL_WARN_EVERY_S
                       ) -> tuple[int, int] | None:
        """(drops, new since the last warning) when a full zone dropped packets since the
        last warning and ``every`` seconds passed (monotonic ``now``); then they count as
        warned about. None otherwise."""
        drops = self.counted(pl.CT_DROP_FULL_COOKIE)
        reported, at = self.zone_full_reported
        if drops <= reported or now - at < every:
            return None
        self.zone_full_reported = (drops, now)
        return drops, drops - reported

    def forget_switch(self, dpid: int) -> None:
        """A switch went away: its sessions are no longer active here (totals are kept)."""
        self.active.pop(dpid, None)
        self.last_read.pop(dpid, None)

    def _session_counts(self, sid: int, bid: int) -> dict[str, int]:
        """Per backend: the first packet of a session crosses the group bucket, the rest
        the learned flows (forward = in, reverse = out)."""
        total = self._total
        fwd, rev = (sid, bid, pl.SESSION_FWD), (sid, bid, pl.SESSION_REV)
        new = total("bucket", (sid, bid))
        return {
            "new_sessions": new,
            "active_sessions": sum(a.get((sid, bid), 0) for a in self.active.values()),
            "packets_in": new + total("sp", fwd),
            "bytes_in": total("bucket_bytes", (sid, bid)) + total("sb", fwd),
            "packets_out": total("sp", rev),
            "bytes_out": total("sb", rev),
        }

    def _total(self, kind: str, key: Any = None) -> int:
        """A running total summed over every switch."""
        return sum(self.mono.total((dpid, kind), key) for dpid in self.dpids)

    def snapshot(self, cfg: Config, switches: int, last_reconcile: float | None,
                 connected: int | None = None) -> dict[str, Any]:
        """The ``/lbrp/v1/stats`` document."""
        # conntrack pinning: connections per backend are not visible through OpenFlow
        learn = cfg.settings.session_pinning == "learn"
        services = []
        for svc in cfg.sorted_services():
            sid = svc.key.service_id
            backends = []
            for be in svc.backends:
                counts = self._session_counts(sid, be.backend_id)
                if not learn:
                    ct = self.conntrack_active
                    counts["active_sessions"] = (None if ct is None
                                                 else ct.get((sid, be.backend_id), 0))
                backends.append({"ip": be.ip, "port": be.port, "weight": be.weight, **counts})
            totals = {k: sum(b[k] for b in backends) for k in (
                "new_sessions", "packets_out", "bytes_out")}
            totals["active_sessions"] = (None if not learn and self.conntrack_active is None
                                         else sum(b["active_sessions"] for b in backends))
            totals["packets_in"] = self._total("svc_in", sid)
            totals["bytes_in"] = self._total("svc_in_bytes", sid)
            services.append({
                "vip": svc.key.vip, "proto": svc.key.proto, "port": svc.key.port,
                "name": svc.name, **totals,
                "rejected_sessions": self.counters.rejects.get(sid, 0),
                "dropped_not_syn": self.counted(pl.cookie(pl.KIND_NOT_SYN, sid)),
                "not_syn_resets": self.counters.resets.get(sid, 0),
                "backends": backends})
        vips = [{"vip": vip,
                 "fragments_dropped": self.counted(pl.vip_cookie(pl.KIND_FRAG, vip))}
                for vip in cfg.vips()]
        meter = self._total("meter")
        return {
            "services": services,
            "vips": vips,
            "controller": {
                "switches_programmed": switches,
                "switches_connected": switches if connected is None else connected,
                "stats_interval": cfg.settings.stats_interval,
                "echo_replies": self.counters.echo_replies,
                "packet_ins_dropped_by_meter": meter,
                "packet_ins_ignored": self.counters.ignored_packet_ins,
                "conntrack_sessions": None if learn else self.conntrack_sessions,
                "conntrack_zone_full_drops":
                    None if learn else self.counted(pl.CT_DROP_FULL_COOKIE),
                "conntrack_backend_gone_drops":
                    None if learn else self.counted(pl.CT_DROP_GONE_COOKIE),
                "conntrack_backend_gone_repicks":
                    None if learn else self.counted(pl.CT_REPICK_COOKIE),
                "last_poll": self.polled_at,
                "last_poll_seconds": None if self.poll_cost is None else self.poll_cost[0],
                "last_poll_requests": None if self.poll_cost is None else self.poll_cost[1],
                "last_reconcile": last_reconcile,
            },
        }


def count_conntrack_labels(dump: str) -> dict[tuple[int, int], int]:
    """Connections per (service id, backend id) in ``dpctl/dump-conntrack`` output.

    Each session's connection carries its backend's ct_label (pipeline.ct_label).
    """
    return dict(Counter(pl.ct_label_ids(label) for label, _ in labelled_entries(dump)))


_COUNTED_KINDS = frozenset((pl.KIND_NOT_SYN, pl.KIND_FRAG, pl.KIND_CT_AFTER_COMMIT))


def fold_flows(reading: Reading, flows: Iterable[Any]) -> None:
    """File the counts of the flows of a flow-desc reply (``ofmsg.FlowCounts``: table,
    cookie, packets, bytes) into ``reading`` by their cookies: a service's classifier
    flows (summed: TCP has two), the counted drops and checks, and with conntrack pinning
    each backend's forwarding flow after ct() (table CT_FWD: in, CT_REV: out). Adds to
    what ``reading`` holds: a poll's reading starts empty, and its replies come in parts.
    A counter whose flow is missing keeps its total (``Monotonic``), as a reading of 0
    would."""
    for table, ck, packets, nbytes in flows:
        decoded = pl.decode_cookie(ck)
        if decoded is None:
            continue
        kind, obj, backend = decoded
        if kind == pl.KIND_SERVICE and table == pl.CLASSIFY:  # not its group flow
            p, b = reading.service_in.get(obj, (0, 0))
            reading.service_in[obj] = (p + packets, b + nbytes)
        elif kind in _COUNTED_KINDS:
            reading.counted[ck] = reading.counted.get(ck, 0) + packets
        elif kind == pl.KIND_BACKEND and table in (pl.CT_FWD, pl.CT_REV):
            key = (obj, backend, pl.SESSION_FWD if table == pl.CT_FWD else pl.SESSION_REV)
            n, p, b = reading.sessions.get(key, (0, 0, 0))
            reading.sessions[key] = (n + 1, p + packets, b + nbytes)


def fold_reply(book: StatsBook, dpid: int, reading: Reading, key: tuple[str, Any],
               msg: Any) -> None:
    """File one stats reply into ``reading``, under the ``key`` its request came with
    (``ofmsg.group_and_meter_requests``, ``flow_requests``, ``session_requests``).

    Must run as the reply is handled (see StatsBook.session_total).
    """
    kind, k = key
    if kind == "session":
        st = msg.body.stats
        reading.sessions[k] = book.session_total(dpid, k, st.get("flow_count", 0),
                                                 st.get("packet_count", 0),
                                                 st.get("byte_count", 0))
    elif kind == "flows":
        fold_flows(reading, msg.body)
    elif kind == "groups":
        # bucket counters come in the order of the group's buckets (one or two a backend);
        # the request's key carries each group's bucket owners
        owners = k
        for g in msg.body:  # ofmsg.GroupCounts
            sums: dict[int, tuple[int, int]] = {}
            for bid, (packets, nbytes) in zip(owners.get(g.group_id, ()), g.bucket_stats,
                                              strict=False):
                p, b = sums.get(bid, (0, 0))
                sums[bid] = (p + packets, b + nbytes)
            for bid, value in sums.items():
                reading.buckets[(g.group_id, bid)] = value
    elif kind == "meter":
        for m in msg.body:
            reading.meter_dropped += sum(b.packet_band_count for b in m.band_stats)
