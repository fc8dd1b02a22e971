"""Prometheus exposition of the counters (``GET /metrics`` on the REST listener)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SVC_LABELS = ["vip", "proto", "port"]
BE_LABELS = [*SVC_LABELS, "backend"]


class _Snapshot:
    """A one-shot collector over a stats document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Iterator[Metric]:
        doc = self.doc
        new = CounterMetricFamily("lbrp_backend_sessions",
                                  "New sessions sent to the backend (group bucket hits)",
                                  labels=BE_LABELS)
        active = GaugeMetricFamily("lbrp_backend_active_sessions",
                                   "Pinned sessions that currently exist", labels=BE_LABELS)
        weight = GaugeMetricFamily("lbrp_backend_weight", "Configured weight (0 = draining)",
                                   labels=BE_LABELS)
        packets = CounterMetricFamily("lbrp_backend_packets",
                                      "Packets of pinned sessions; in = client to backend",
                                      labels=[*BE_LABELS, "direction"])
        nbytes = CounterMetricFamily("lbrp_backend_bytes",
                                     "Bytes of pinned sessions; in = client to backend",
                                     labels=[*BE_LABELS, "direction"])
        rejected = CounterMetricFamily("lbrp_service_rejected_sessions",
                                       "New sessions rejected for lack of a usable backend",
                                       labels=SVC_LABELS)
        resets = CounterMetricFamily("lbrp_service_not_syn_resets",
                                     "TCP RSTs sent for packets that were not a SYN and "
                                     "matched no session", labels=SVC_LABELS)
        not_syn = CounterMetricFamily("lbrp_service_dropped_packets",
                                      "Packets dropped by the service", labels=[*SVC_LABELS,
                                                                                "reason"])
        for svc in doc["services"]:
            sl = [svc["vip"], svc["proto"], str(svc["port"])]
            rejected.add_metric(sl, svc["rejected_sessions"])
            if svc["proto"] == "tcp":
                not_syn.add_metric([*sl, "not_syn_without_session"], svc["dropped_not_syn"])
                resets.add_metric(sl, svc["not_syn_resets"])
            for be in svc["backends"]:
                bl = [*sl, f"{be['ip']}:{be['port']}"]
                new.add_metric(bl, be["new_sessions"])
                if be["active_sessions"] is not None:
                    active.add_metric(bl, be["active_sessions"])
                weight.add_metric(bl, be["weight"])
                for d in ("in", "out"):
                    packets.add_metric([*bl, d], be[f"packets_{d}"])
                    nbytes.add_metric([*bl, d], be[f"bytes_{d}"])
        frags = CounterMetricFamily("lbrp_vip_dropped_fragments",
                                    "IPv4 fragments to the VIP dropped", labels=["vip"])
        for v in doc["vips"]:
            frags.add_metric([v["vip"]], v["fragments_dropped"])
        ctl = doc["controller"]
        yield from (new, active, weight, packets, nbytes, rejected, not_syn, resets, frags)
        yield CounterMetricFamily("lbrp_echo_replies", "ICMP echo replies sent for VIPs",
                                  value=ctl["echo_replies"])
        yield CounterMetricFamily("lbrp_packet_ins_dropped_by_meter",
                                  "Packet-ins dropped by the rate-limiting meter",
                                  value=ctl["packet_ins_dropped_by_meter"])
        yield GaugeMetricFamily("lbrp_switches_connected", "Switches connected",
                                value=ctl["switches_connected"])
        yield GaugeMetricFamily("lbrp_switches_programmed", "Switches fully programmed",
                                value=ctl["switches_programmed"])
        if ctl["conntrack_sessions"] is not None:
            yield GaugeMetricFamily("lbrp_conntrack_sessions",
                                    "Connections in the sessions' conntrack zone (all services)",
                                    value=ctl["conntrack_sessions"])
        if ctl["conntrack_zone_full_drops"] is not None:
            drops = CounterMetricFamily(
                "lbrp_conntrack_dropped_new_session_packets",
                "Packets of new sessions dropped after their conntrack commit: the zone was "
                "at max_sessions (zone_full) or the backends picked were removed as the "
                "session began, twice in a row (backend_gone)", labels=["reason"])
            drops.add_metric(["zone_full"], ctl["conntrack_zone_full_drops"])
            drops.add_metric(["backend_gone"], ctl["conntrack_backend_gone_drops"])
            yield drops
            yield CounterMetricFamily(
                "lbrp_conntrack_repicked_new_sessions",
                "New sessions committed to a backend removed as they began, and balanced "
                "again among the live backends", value=ctl["conntrack_backend_gone_repicks"])
        if ctl["last_reconcile"] is not None:
            yield GaugeMetricFamily("lbrp_last_reconcile_timestamp_seconds",
                                    "When a switch was last reconciled",
                                    value=ctl["last_reconcile"])
        if ctl["last_poll"] is not None:
            yield GaugeMetricFamily("lbrp_last_stats_poll_timestamp_seconds",
                                    "When counters were last read from the switches",
                                    value=ctl["last_poll"])
        if ctl["last_poll_seconds"] is not None:
            yield GaugeMetricFamily("lbrp_last_stats_poll_duration_seconds",
                                    "How long the last counter poll took",
                                    value=ctl["last_poll_seconds"])
            yield GaugeMetricFamily("lbrp_last_stats_poll_requests",
                                    "Stats requests the last counter poll sent",
                                    value=ctl["last_poll_requests"])


def render(doc: dict[str, Any]) -> bytes:
    """Prometheus text exposition of a stats document."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(doc))
    return generate_latest(registry)
