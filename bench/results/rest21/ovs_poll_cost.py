"""OVS's own time to answer a counter poll's requests, without the controller.

Usage: .venv/bin/python bench/results/rest21/ovs_poll_cost.py learn|conntrack [RUNS]

Programs a scratch netdev bridge (lbrpx0, created here and deleted at the end) with
bench/run.py's 2,000 services x 8 backends in that mode, raw over its management
socket, then times, RUNS times:
- the poll's aggregate requests with every backend idle (learn: the 6,002 per-service
  and per-VIP ones; conntrack reads every backend: all 38,009), 256 per round trip with a
  barrier, as the app sends them;
- for comparison, one flow-desc (flow stats) request per kind of per-service flow
  (classifier, fragment drop, not-SYN drop), which OVS answers in one go.
No traffic is sent. Needs root and a running ovs-vswitchd.

ovs_poll_cost.txt was made with the code of b9383f6, whose polls read the per-service
counters by aggregates. From the next change on, ``ofmsg.counter_requests`` asks for
those with flow-desc requests itself, so the first timing then covers those.
"""

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbrp_app import ofmsg, switch
from lbrp_app import pipeline as pl
from lbrp_app.model import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "startup20"))
from ovs_alone import BRIDGE, Stand
from ovs_alone import raw as raw_once


def raw(dp, m):
    """ovs_alone.raw for a message that may have been sent before (a fresh xid)."""
    m.xid = None
    return raw_once(dp, m)


def read_until(s, xid):
    """Read up to the barrier reply ``xid``: (messages, bytes)."""
    buf, n, nbytes = b"", 0, 0
    while True:
        while len(buf) < 8:
            buf += s.recv(1 << 20)
        _, kind, length, got = struct.unpack("!BBHI", buf[:8])
        while len(buf) < length:
            buf += s.recv(1 << 20)
        msg, buf = buf[:length], buf[length:]
        if kind == ofp.OFPT_ERROR:
            print("error", got, msg[8:12].hex())
        n, nbytes = n + 1, nbytes + length
        if kind == ofp.OFPT_BARRIER_REPLY and got == xid:
            return n, nbytes


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from run import big_config  # bench/run.py

    mode = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cfg = parse_config(big_config(mode, 2000, 8))
    idle = {(svc.key.service_id, be.backend_id) for svc in cfg.services.values()
            for be in svc.backends}
    not_syn_table = pl.CT_FWD if mode == "conntrack" else pl.SERVICE
    subprocess.run(["ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                    "datapath_type=netdev", "protocols=OpenFlow15", "fail_mode=secure"],
                   check=True)
    try:
        dp = Stand()
        msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(cfg, pl.Ports(1, 2)))
        opened, adds = switch._bundle(dp, msgs)
        commit = switch._bundle_ctrl(dp, adds.bundle_id, ofp.OFPBCT_COMMIT_REQUEST)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(f"/var/run/openvswitch/{BRIDGE}.mgmt")
            s.sendall(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 0)
                      + raw(dp, ofmsg.meter_mod(parser, ofp, 200, 50, ofp.OFPMC_ADD))[0])
            bar, x = raw(dp, parser.OFPBarrierRequest(dp))
            s.sendall(raw(dp, opened)[0] + raw(dp, adds)[0] + raw(dp, commit)[0] + bar)
            read_until(s, x)
            for _ in range(runs):
                aggregates = [m for _, m in ofmsg.counter_requests(cfg, idle)]
                t0, total = time.monotonic(), 0
                for i in range(0, len(aggregates), 256):
                    data = b"".join(raw(dp, m)[0] for m in aggregates[i:i + 256])
                    bar, x = raw(dp, parser.OFPBarrierRequest(dp))
                    s.sendall(data + bar)
                    total += read_until(s, x)[1]
                t1 = time.monotonic()
                print(f"{len(aggregates)} aggregates answered in {t1 - t0:.3f} s "
                      f"({total} bytes)")
                for table, kind in ((pl.CLASSIFY, pl.KIND_SERVICE), (pl.CLASSIFY, pl.KIND_FRAG),
                                    (not_syn_table, pl.KIND_NOT_SYN)):
                    req = parser.OFPFlowDescStatsRequest(None, 0, table, ofp.OFPP_ANY,
                                                         ofp.OFPG_ANY, pl.cookie(kind),
                                                         0xFF << 56, parser.OFPMatch())
                    t2 = time.monotonic()
                    data, _ = raw(dp, req)
                    bar, x = raw(dp, parser.OFPBarrierRequest(dp))
                    s.sendall(data + bar)
                    n, nbytes = read_until(s, x)
                    print(f"  or flow-desc of table {table}, cookie kind {kind}: {n - 1} "
                          f"replies, {nbytes} bytes in {time.monotonic() - t2:.4f} s")
    finally:
        subprocess.run(["ovs-vsctl", "del-br", BRIDGE], check=True)


if __name__ == "__main__":
    main()
