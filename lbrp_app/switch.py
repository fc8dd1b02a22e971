"""Talking to one switch: transactions (bundles + barrier) and OVSDB settings.

A :class:`Transaction` sends a list of messages to one datapath as one atomic
OpenFlow bundle and waits for the switch to confirm it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from os_ken.lib import hub

from lbrp_app import ofmsg

LOG = logging.getLogger("lbrp.switch")

BUNDLE_ATOMIC_ORDERED = 0x3  # OFPBF_ATOMIC | OFPBF_ORDERED
_bundle_ids = itertools.count(1)


class SwitchError(Exception):
    """The switch refused a change or did not confirm it in time."""


class SwitchStateUnknown(SwitchError):
    """The switch may hold part of the change: it must be programmed again."""


class Waiter:
    """Collects the replies and errors of a set of xids until a final reply arrives."""

    def __init__(self) -> None:
        self.event = hub.Event()
        self.errors: list[Any] = []
        self.replies: list[Any] = []
        self.sent: dict[int, int] = {}  # xid -> position of the message in the request
        # called in the event loop as each reply arrives (with its request's position),
        # in order with the switch's other messages
        self.on_reply: Callable[[Any, int], None] | None = None


class XidTracker:
    """Routes replies and errors by (dpid, xid) to the waiter that sent them."""

    def __init__(self) -> None:
        self._owners: dict[tuple[int, int], Waiter] = {}
        self._final: dict[tuple[int, int], Waiter] = {}

    def own(self, dpid: int, xid: int, waiter: Waiter, final: bool = False) -> None:
        self._owners[(dpid, xid)] = waiter
        if final:
            self._final[(dpid, xid)] = waiter

    def release(self, dpid: int, xids: list[int]) -> None:
        for xid in xids:
            self._owners.pop((dpid, xid), None)
            self._final.pop((dpid, xid), None)

    def error(self, dpid: int, xid: int, msg: Any) -> bool:
        waiter = self._owners.get((dpid, xid))
        if waiter is None:
            return False
        waiter.errors.append(msg)
        return True

    def reply(self, dpid: int, xid: int, msg: Any, more: bool = False) -> bool:
        waiter = self._owners.get((dpid, xid))
        if waiter is None:
            return False
        waiter.replies.append(msg)
        if waiter.on_reply is not None and xid in waiter.sent:
            waiter.on_reply(msg, waiter.sent[xid])
        if not more and (dpid, xid) in self._final:
            waiter.event.set()
        return True

    def disconnect(self, dpid: int) -> None:
        for (d, _), waiter in list(self._owners.items()):
            if d == dpid:
                waiter.errors.append("switch disconnected")
                waiter.event.set()


def request(dp: Any, tracker: XidTracker, msgs: list[Any], timeout: float,
            on_reply: Callable[[Any, int], None] | None = None) -> Waiter:
    """Send ``msgs`` then a barrier, in one write; wait for the barrier reply.

    ``on_reply`` sees each reply in the event loop, in order with the switch's other
    messages (e.g. flow-removed), before the barrier wakes the caller.
    """
    waiter = Waiter()
    waiter.on_reply = on_reply
    batch = [*msgs, dp.ofproto_parser.OFPBarrierRequest(dp)]
    xids: list[int] = []
    try:
        for i, msg in enumerate(batch):
            msg.datapath = dp
            dp.set_xid(msg)
            tracker.own(dp.id, msg.xid, waiter, final=i == len(msgs))
            waiter.sent[msg.xid] = i
            xids.append(msg.xid)
        if not dp.send_msg(ofmsg.Batch(batch)):
            raise SwitchError("switch connection is closed")
        if not waiter.event.wait(timeout):
            raise SwitchError(f"switch {dp.id:016x} did not answer within {timeout:.0f} s")
    finally:
        tracker.release(dp.id, xids)
    return waiter


class ChangeGate:
    """Changes first: counter polls hold their next batch while a change is pending.

    A change waits for a round trip to its switch (its bundle, committed). Each reply
    of a poll's batch sent meanwhile is parsed and folded in the event loop ahead of the
    change's barrier reply, so a poll that kept sending would delay the change by batch
    after batch.
    """

    def __init__(self) -> None:
        self._pending = 0
        self._clear = hub.Event()
        self._clear.set()

    @contextlib.contextmanager
    def change(self) -> Iterator[None]:
        """Mark a change pending for the duration of the block."""
        self._pending += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._pending -= 1
            if not self._pending:
                self._clear.set()

    def wait_clear(self, timeout: float) -> bool:
        """Wait until no change is pending, at most ``timeout`` s; True if none is."""
        return self._pending == 0 or self._clear.wait(timeout)


def request_paced(dp: Any, tracker: XidTracker, msgs: Iterable[Any], timeout: float,
                  on_reply: Callable[[Any, int], None], per_trip: int,
                  before_batch: Callable[[], Any] | None = None) -> None:
    """:func:`request` for many messages, ``per_trip`` at a time, each batch with its barrier.

    A change's bundle, sent meanwhile, then queues behind one batch rather than all of
    them, and a generator of messages is built batch by batch, between waits that let the
    other greenlets run. ``before_batch`` runs before each batch is sent (the app's
    :meth:`ChangeGate.wait_clear`). ``on_reply`` sees each reply with its message's
    position in ``msgs``; the barriers' replies are not passed on.
    """
    it = iter(msgs)
    start = 0
    while batch := list(itertools.islice(it, per_trip)):
        if before_batch is not None:
            before_batch()

        def fold(msg: Any, i: int, start: int = start, n: int = len(batch)) -> None:
            if i < n:
                on_reply(msg, start + i)

        request(dp, tracker, batch, timeout, fold)
        start += len(batch)


def describe_error(err: Any) -> str:
    if isinstance(err, str):
        return err
    return f"OpenFlow error type={err.type} code={err.code}"


def _bundle_ctrl(dp: Any, bid: int, kind: int) -> Any:
    """A bundle control message (open, commit, discard) of an atomic, ordered bundle."""
    return dp.ofproto_parser.OFPBundleCtrlMsg(dp, bid, kind, BUNDLE_ATOMIC_ORDERED, [])


def _bundle(dp: Any, msgs: list[Any]) -> tuple[Any, Any]:
    """The open of a new bundle, and ``msgs`` as its add messages (sent as one)."""
    bid = next(_bundle_ids) & 0xFFFFFFFF
    return (_bundle_ctrl(dp, bid, dp.ofproto.OFPBCT_OPEN_REQUEST),
            ofmsg.BundleAdds(bid, BUNDLE_ATOMIC_ORDERED, msgs))


def _refusal(errors: list[Any]) -> str:
    return "; ".join(describe_error(e) for e in errors[:3])


def commit(dp: Any, tracker: XidTracker, msgs: list[Any], timeout: float,
           on_step: Callable[[str], None] | None = None) -> None:
    """Apply ``msgs`` atomically on ``dp`` as one bundle, in one round trip.

    The bundle's open, its messages, its commit and a barrier go out together. OVS
    checks a message against the tables when the commit runs, and a refusal there undoes
    the whole bundle: SwitchError, the switch holds what it held. A message OVS cannot
    decode is refused when it is added, and OVS 3.1 then commits the bundle without it
    (``handle_bundle_add`` drops just that message): SwitchStateUnknown, as when the
    switch does not answer in time. ``on_step`` is told when the "commit" is confirmed.
    """
    if not msgs:
        return
    opened, adds = _bundle(dp, msgs)
    closing = _bundle_ctrl(dp, adds.bundle_id, dp.ofproto.OFPBCT_COMMIT_REQUEST)
    try:
        done = request(dp, tracker, [opened, adds, closing], timeout)
    except SwitchError as exc:
        raise SwitchStateUnknown(str(exc)) from None
    if done.errors:
        if all(getattr(e, "xid", None) == closing.xid for e in done.errors):
            raise SwitchError(_refusal(done.errors))
        raise SwitchStateUnknown(_refusal(done.errors))
    if on_step is not None:
        on_step("commit")


def commit_staged(dp: Any, tracker: XidTracker, msgs: list[Any], timeout: float,
                  on_step: Callable[[str], None] | None = None) -> None:
    """:func:`commit` in two round trips: the commit is sent only once every message was
    added, so a refusal of any message changes nothing (programming a whole switch).
    ``on_step`` is told when the messages are "added" and when the "commit" is confirmed."""
    if not msgs:
        return
    ofp = dp.ofproto
    opened, adds = _bundle(dp, msgs)
    bid = adds.bundle_id
    staged = request(dp, tracker, [opened, adds], timeout)
    if staged.errors:
        request(dp, tracker, [_bundle_ctrl(dp, bid, ofp.OFPBCT_DISCARD_REQUEST)], timeout)
        raise SwitchError(_refusal(staged.errors))
    if on_step is not None:
        on_step("added")
    done = request(dp, tracker, [_bundle_ctrl(dp, bid, ofp.OFPBCT_COMMIT_REQUEST)], timeout)
    if done.errors:
        raise SwitchError(_refusal(done.errors))
    if on_step is not None:
        on_step("commit")
