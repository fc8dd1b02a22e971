"""The controller's steps of programming a switch, timed without a switch.

Usage: .venv/bin/python bench/results/startup20/encode_steps.py learn|conntrack [RUNS]
(PYTHONPATH=<worktree> to time another version of lbrp_app). Builds bench/run.py's
2,000 services x 8 backends, then times, with the garbage collector off as the app has
it: the pipeline state, the messages, the bundle's adds, and serialising them.
"""

import gc
import sys
import time
from pathlib import Path

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbrp_app import ofmsg, switch
from lbrp_app import pipeline as pl
from lbrp_app.model import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from run import big_config  # bench/run.py


class Stand:
    id, ofproto, ofproto_parser, xid = 1, ofp, parser, 0

    def set_xid(self, m):
        self.xid += 1
        m.set_xid(self.xid)


def main() -> None:
    cfg = parse_config(big_config(sys.argv[1], 2000, 8))
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
        dp = Stand()
        gc.disable()
        t0 = time.monotonic()
        state = pl.desired_state(cfg, pl.Ports(1, 2), 0)
        t1 = time.monotonic()
        msgs = ofmsg.reconcile_messages(parser, ofp, state)
        t2 = time.monotonic()
        _, adds = switch._bundle(dp, msgs)
        if not isinstance(adds, list):  # since the twentieth session: one BundleAdds
            adds = [adds]
        t3 = time.monotonic()
        size = 0
        for m in adds:
            m.datapath = dp
            dp.set_xid(m)
            m.serialize()
            size += len(m.buf)
        t4 = time.monotonic()
        gc.enable()
        print(f"state {t1 - t0:.3f} s, messages {t2 - t1:.3f} s, bundle {t3 - t2:.3f} s, "
              f"serialising {t4 - t3:.3f} s ({len(adds)} objects sent, {size} bytes)")


if __name__ == "__main__":
    main()
