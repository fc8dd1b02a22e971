"""How long gc_paused's closing collection takes after programming 2,000 x 8, with the
pipeline state alive or freed first (the config frozen, as the app freezes it at load).

    .venv/bin/python bench/results/startup19/gc_collect.py conntrack|learn
"""
import gc
import pathlib
import sys
import tempfile
import time

import yaml
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbrp_app import config as cf
from lbrp_app import ofmsg
from lbrp_app import pipeline as pl

mode = sys.argv[1]
services = [{"vip": f"13.{1 + i // 250}.{i % 250}.1", "proto": "tcp", "port": 80,
             "backends": [{"ip": f"10.{1 + i // 250}.{i % 250}.{b + 1}", "port": 8000, "weight": 1} for b in range(8)]}
            for i in range(2000)]
p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
p.write_text(yaml.safe_dump({"session_pinning": mode, "services": services}))
gc.disable()
cfg = cf.load(p)
gc.collect(); gc.freeze()
for keep in (True, False):
    state = pl.desired_state(cfg, pl.Ports(1, 2), 0)
    msgs = ofmsg.reconcile_messages(parser, ofp, state)
    del msgs
    t = time.perf_counter()
    if not keep:
        del state
    t1 = time.perf_counter()
    gc.collect()
    t2 = time.perf_counter()
    print(mode, "state kept" if keep else "state deleted", f"del {t1 - t:.3f} s, collect {t2 - t1:.3f} s")
    if keep:
        del state
        gc.collect()
