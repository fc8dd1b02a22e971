"""Request batching against a stand-in datapath that answers each message at once,
and the gate that holds counter polls while a change is pending."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from lbrp_app.switch import ChangeGate, XidTracker, request_paced


class AnsweringDatapath:
    """Records what is sent and answers every message with itself, as a reply would."""

    ofproto = ofproto_v1_5
    ofproto_parser = ofproto_v1_5_parser
    id = 7

    def __init__(self, tracker: XidTracker) -> None:
        self.tracker = tracker
        self.sent: list[Any] = []
        self.xid = 0

    def set_xid(self, msg: Any) -> None:
        self.xid += 1
        msg.xid = self.xid

    def send_msg(self, msg: Any) -> bool:
        self.sent.append(msg)
        self.tracker.reply(self.id, msg.xid, msg)
        return True


def test_paced_requests_go_in_batches_each_closed_by_a_barrier() -> None:
    tracker = XidTracker()
    dp = AnsweringDatapath(tracker)
    built: list[int] = []

    def messages() -> Any:
        for i in range(7):
            built.append(i)
            msg = ofproto_v1_5_parser.OFPEchoRequest(dp, data=bytes([i]))
            yield msg

    replies: list[tuple[bytes, int]] = []

    def on_reply(msg: Any, i: int) -> None:
        # message i was built before its batch went out, and no later batch was built yet
        assert len(built) <= (i // 3 + 1) * 3
        replies.append((msg.data, i))

    request_paced(dp, tracker, messages(), 5.0, on_reply, per_trip=3)
    kinds = ["barrier" if isinstance(m, ofproto_v1_5_parser.OFPBarrierRequest) else "echo"
             for m in dp.sent]
    assert kinds == ["echo"] * 3 + ["barrier"] + ["echo"] * 3 + ["barrier"] + ["echo", "barrier"]
    # every reply once, with its message's position in the whole sequence; no barrier's
    assert replies == [(bytes([i]), i) for i in range(7)]


def test_paced_requests_of_nothing_send_nothing() -> None:
    tracker = XidTracker()
    dp = AnsweringDatapath(tracker)
    request_paced(dp, tracker, iter(()), 5.0, lambda msg, i: None, per_trip=3)
    assert dp.sent == []


def test_paced_requests_ask_the_gate_before_each_batch() -> None:
    tracker = XidTracker()
    dp = AnsweringDatapath(tracker)
    msgs = (ofproto_v1_5_parser.OFPEchoRequest(dp, data=bytes([i])) for i in range(5))

    def gate() -> None:
        dp.sent.append("gate")

    request_paced(dp, tracker, msgs, 5.0, lambda msg, i: None, per_trip=2, before_batch=gate)
    kinds = [m if m == "gate" else type(m).__name__ for m in dp.sent]
    batch = ["OFPEchoRequest", "OFPEchoRequest", "OFPBarrierRequest"]
    assert kinds == ["gate", *batch, "gate", *batch, "gate", "OFPEchoRequest",
                     "OFPBarrierRequest"]


def test_change_gate_holds_polls_until_the_last_pending_change_ends() -> None:
    gate = ChangeGate()
    assert gate.wait_clear(0.0)
    woken: list[float] = []

    def poll() -> None:
        gate.wait_clear(5.0)
        woken.append(time.monotonic())

    with gate.change():
        assert not gate.wait_clear(0.02)  # times out while a change is pending
        with gate.change():
            waiter = hub.spawn(poll)
            hub.sleep(0.05)
        hub.sleep(0.05)
        assert woken == []  # one change still pending
        ended = time.monotonic()
    waiter.wait()
    assert len(woken) == 1 and woken[0] >= ended
    assert gate.wait_clear(0.0)


def test_change_gate_clears_when_the_change_fails() -> None:
    gate = ChangeGate()
    with contextlib.suppress(RuntimeError), gate.change():
        raise RuntimeError("switch refused")
    assert gate.wait_clear(0.0)
