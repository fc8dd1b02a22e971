"""A crash while saving leaves the old or the new file, never a broken one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbrp_app import config
from lbrp_app.model import Backend, Config, Service, ServiceKey


def big_config(port: int) -> Config:
    cfg = Config()
    for i in range(150):
        key = ServiceKey(f"13.13.{i // 250}.{i % 250 + 1}", "tcp", port)
        cfg = cfg.with_service(Service(key, f"svc{i}", tuple(
            Backend(f"10.0.{j}.{i % 250 + 1}", 8000 + j) for j in range(8))))
    return cfg


def test_failed_rename_keeps_old_file_and_no_temp(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lbrp.yaml"
    old = big_config(80)
    config.save(path, old)

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        config.save(path, big_config(81))
    assert config.load(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["lbrp.yaml"]


SAVER = """
import sys
from lbrp_app import config
from tests.unit.test_save_crash import big_config
path = config.Path(sys.argv[1])
cfgs = [big_config(80), big_config(81)]
print("ready", flush=True)
i = 0
while True:
    config.save(path, cfgs[i % 2])
    i += 1
"""


def test_kill_9_during_saves_leaves_old_or_new(tmp_path: Path) -> None:
    path = tmp_path / "lbrp.yaml"
    expected = (big_config(80), big_config(81))
    config.save(path, expected[0])
    rng = random.Random(7)
    repo = Path(__file__).resolve().parents[2]
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=repo,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert config.load(path) in expected
