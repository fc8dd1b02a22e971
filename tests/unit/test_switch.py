"""Request batching and bundles against a stand-in datapath that answers each message
at once, and the gate that holds counter polls while a change is pending."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from lbrp_app import ofmsg
from lbrp_app.switch import (
    ChangeGate,
    SwitchError,
    SwitchStateUnknown,
    XidTracker,
    commit,
    commit_staged,
    request_paced,
)


class AnsweringDatapath:
    """Records what is sent and answers every message with itself, as a reply would."""

    ofproto = ofproto_v1_5
    ofproto_parser = ofproto_v1_5_parser
    id = 7

    def __init__(self, tracker: XidTracker) -> None:
        self.tracker = tracker
        self.sent: list[Any] = []
        self.writes: list[int] = []  # the messages of each write
        self.xid = 0

    def set_xid(self, msg: Any) -> None:
        self.xid += 1
        msg.xid = self.xid

    def send_msg(self, msg: Any) -> bool:
        msgs = msg.msgs if isinstance(msg, ofmsg.Batch) else [msg]
        self.writes.append(len(msgs))
        for m in msgs:
            self.receive(m)
        return True

    def receive(self, msg: Any) -> None:
        self.sent.append(msg)
        self.tracker.reply(self.id, msg.xid, msg)


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
    assert dp.writes == [4, 4, 2]  # a round trip's messages and its barrier in one write
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


class RefusingDatapath(AnsweringDatapath):
    """Answers barriers; refuses with an OpenFlow error, as OVS does, the messages at the
    positions given (in sending order) and, with "commit" given, every bundle commit;
    never answers at all if ``silent``."""

    def __init__(self, tracker: XidTracker, refuse: set[int | str] = frozenset(),
                 silent: bool = False) -> None:
        super().__init__(tracker)
        self.refuse, self.silent = refuse, silent

    def receive(self, msg: Any) -> None:
        position = len(self.sent)
        self.sent.append(msg)
        if self.silent:
            return
        if position in self.refuse or ("commit" in self.refuse and isinstance(
                msg, ofproto_v1_5_parser.OFPBundleCtrlMsg)
                and msg.type == ofproto_v1_5.OFPBCT_COMMIT_REQUEST):
            err = ofproto_v1_5_parser.OFPErrorMsg(self, type_=1, code=9)
            err.xid = msg.xid
            self.tracker.error(self.id, msg.xid, err)
        elif isinstance(msg, ofproto_v1_5_parser.OFPBarrierRequest):
            self.tracker.reply(self.id, msg.xid, msg)

    def kinds(self) -> list[str]:
        names = {ofproto_v1_5.OFPBCT_OPEN_REQUEST: "open",
                 ofproto_v1_5.OFPBCT_COMMIT_REQUEST: "commit",
                 ofproto_v1_5.OFPBCT_DISCARD_REQUEST: "discard"}
        out: list[str] = []
        for m in self.sent:  # the adds of a bundle go as one message: one "add" each
            out += ([names[m.type]] if isinstance(m, ofproto_v1_5_parser.OFPBundleCtrlMsg)
                    else ["add"] * len(m) if isinstance(m, ofmsg.BundleAdds)
                    else ["barrier"] if isinstance(m, ofproto_v1_5_parser.OFPBarrierRequest)
                    else [type(m).__name__])
        return out


def _flow_mods(dp: Any, n: int) -> list[Any]:
    return [ofproto_v1_5_parser.OFPFlowMod(dp, table_id=i) for i in range(n)]


def test_a_change_goes_as_one_bundle_in_one_round_trip() -> None:
    tracker = XidTracker()
    dp = RefusingDatapath(tracker)
    steps: list[str] = []
    commit(dp, tracker, _flow_mods(dp, 3), 5.0, steps.append)
    # the commit does not wait for the adds' barrier: one barrier, after the commit
    assert dp.kinds() == ["open", "add", "add", "add", "commit", "barrier"]
    assert dp.writes == [4]  # the open, the adds, the commit and the barrier: one write
    assert len({m.bundle_id for m in dp.sent[:3]}) == 1
    assert steps == ["commit"]
    commit(dp, tracker, [], 5.0)  # nothing to change: nothing sent
    assert len(dp.sent) == 4


def test_a_refused_commit_changed_nothing_a_refused_add_leaves_the_switch_unknown() -> None:
    tracker = XidTracker()
    # OVS checks a message against its tables at the commit, and undoes the whole bundle
    dp = RefusingDatapath(tracker, refuse={"commit"})
    with pytest.raises(SwitchError, match="type=1 code=9") as refused:
        commit(dp, tracker, _flow_mods(dp, 3), 5.0)
    assert not isinstance(refused.value, SwitchStateUnknown)
    assert dp.kinds() == ["open", "add", "add", "add", "commit", "barrier"]
    # a message it cannot decode is dropped when added, and the rest still committed
    dp = RefusingDatapath(tracker, refuse={1})  # the adds: one message, one xid
    with pytest.raises(SwitchStateUnknown, match="type=1 code=9"):
        commit(dp, tracker, _flow_mods(dp, 3), 5.0)
    # no answer in time: the commit may still come
    dp = RefusingDatapath(tracker, silent=True)
    with pytest.raises(SwitchStateUnknown, match="did not answer"):
        commit(dp, tracker, _flow_mods(dp, 1), 0.05)


def test_programming_a_switch_commits_only_once_every_message_was_added() -> None:
    tracker = XidTracker()
    dp = RefusingDatapath(tracker)
    steps: list[str] = []
    commit_staged(dp, tracker, _flow_mods(dp, 2), 5.0, steps.append)
    assert dp.kinds() == ["open", "add", "add", "barrier", "commit", "barrier"]
    assert steps == ["added", "commit"]
    dp = RefusingDatapath(tracker, refuse={1})
    steps.clear()
    with pytest.raises(SwitchError, match="type=1 code=9"):
        commit_staged(dp, tracker, _flow_mods(dp, 2), 5.0, steps.append)
    assert steps == []
    assert dp.kinds() == ["open", "add", "add", "barrier", "discard", "barrier"]
