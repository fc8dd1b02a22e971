"""How long OVS itself takes to add and commit a switch's whole programming.

Usage: .venv/bin/python bench/results/startup20/ovs_alone.py learn|conntrack|CONFIG.yaml [RUNS]
(learn or conntrack: bench/run.py's 2,000 services x 8 backends in that mode)

Builds the bundle the app sends when a switch connects (same messages, same bytes),
serialises it up front, then sends it raw over the management socket of a scratch
netdev bridge (lbrpx0, created here and deleted at the end): the open and every add,
then a barrier; the commit, then a barrier. The two times are OVS's alone (no traffic
is sent). Needs root and a running ovs-vswitchd.
"""

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbrp_app import config, ofmsg, switch
from lbrp_app import pipeline as pl
from lbrp_app.model import parse_config

BRIDGE = "lbrpx0"


class Stand:
    id, ofproto, ofproto_parser, xid = 1, ofp, parser, 0

    def set_xid(self, m):
        self.xid += 1
        m.set_xid(self.xid)


def raw(dp, m):
    m.datapath = dp
    dp.set_xid(m)
    m.serialize()
    return bytes(m.buf), m.xid


def read_until(s, xid):
    buf = b""
    while True:
        while len(buf) < 8:
            buf += s.recv(65536)
        _, kind, length, got = struct.unpack("!BBHI", buf[:8])
        while len(buf) < length:
            buf += s.recv(65536)
        msg, buf = buf[:length], buf[length:]
        if kind == ofp.OFPT_ERROR and msg[8:12] != b"\x00\x0c\x00\x01":  # not "meter exists"
            print("error", got, msg[8:12].hex())
        if kind == ofp.OFPT_BARRIER_REPLY and got == xid:
            return


def main() -> None:
    if sys.argv[1] in ("learn", "conntrack"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from run import big_config  # bench/run.py

        cfg = parse_config(big_config(sys.argv[1], 2000, 8))
    else:
        cfg = config.load(Path(sys.argv[1]))
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    subprocess.run(["ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                    "datapath_type=netdev", "protocols=OpenFlow15", "fail_mode=secure"],
                   check=True)
    try:
        for _ in range(runs):
            dp = Stand()
            msgs = ofmsg.reconcile_messages(parser, ofp, pl.desired_state(cfg, pl.Ports(1, 2)))
            open_msg, adds = switch._bundle(dp, msgs)
            opened, _ = raw(dp, open_msg)
            added, _ = raw(dp, adds)
            bar1, x1 = raw(dp, parser.OFPBarrierRequest(dp))
            commit, _ = raw(dp, switch._bundle_ctrl(dp, adds.bundle_id,
                                                    ofp.OFPBCT_COMMIT_REQUEST))
            bar2, x2 = raw(dp, parser.OFPBarrierRequest(dp))
            meter, _ = raw(dp, ofmsg.meter_mod(parser, ofp, 200, 50, ofp.OFPMC_ADD))
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(f"/var/run/openvswitch/{BRIDGE}.mgmt")
                s.sendall(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 0) + meter)
                t0 = time.monotonic()
                s.sendall(opened + added + bar1)
                read_until(s, x1)
                t1 = time.monotonic()
                s.sendall(commit + bar2)
                read_until(s, x2)
                t2 = time.monotonic()
            print(f"{len(adds)} adds, {len(added)} bytes: OVS added them in {t1 - t0:.3f} s, "
                  f"committed in {t2 - t1:.3f} s")
    finally:
        subprocess.run(["ovs-vsctl", "del-br", BRIDGE], check=True)


if __name__ == "__main__":
    main()
