"""Request batching against a stand-in datapath that answers each message at once."""

from __future__ import annotations

from typing import Any

from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from lbrp_app.switch import XidTracker, request_paced


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
