"""The app's own helpers, and its handling of a change against a stand-in switch
(no OpenFlow connection)."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lbrp_app.app import gc_paused


def test_gc_paused_restores_the_collector_as_it_found_it() -> None:
    """Bulk work pauses the cyclic GC; nesting and a disabled collector are respected."""
    assert gc.isenabled()
    with gc_paused(freeze=True):
        assert not gc.isenabled()
        with gc_paused(freeze=True):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not end the outer one
    assert gc.isenabled()
    # what the bulk work left alive is frozen out of later full collections
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # lists: always tracked by the collector
    with gc_paused(freeze=True):
        more = [[i] for i in range(1000)]
    assert gc.get_freeze_count() >= len(kept) + len(more)
    gc.unfreeze()
    # but cyclic garbage is collected first, not frozen for good
    import weakref

    class Node:
        pass

    with gc_paused(freeze=True):
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        ref = weakref.ref(cycle)
        del cycle
    assert ref() is None
    gc.unfreeze()
    with pytest.raises(RuntimeError), gc_paused(freeze=True):
        raise RuntimeError("a failed change")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused(freeze=True):
            pass
        assert not gc.isenabled()  # left disabled, as found
    finally:
        gc.enable()


def test_a_change_freezes_nothing_so_its_request_cycles_are_collected_later() -> None:
    """A REST change runs gc_paused(freeze=False): what is alive during it (the request,
    the replaced config) and later becomes cyclic garbage is collected, not kept for good
    (freezing there leaked about 10 KiB per change)."""
    import weakref

    class Request:
        pass

    def cycle() -> tuple[Request, weakref.ref[Request]]:
        """A reference cycle, as eventlet's request objects make, and a weak ref to it."""
        obj = Request()
        obj.self = obj  # type: ignore[attr-defined]
        return obj, weakref.ref(obj)

    gc.unfreeze()
    request, ref = cycle()
    with gc_paused(freeze=False):
        assert not gc.isenabled()
        state = [[i] for i in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    del request, state
    gc.collect()
    assert ref() is None
    # the change's own cyclic garbage goes at its end
    with gc_paused(freeze=False):
        made, made_ref = cycle()
        del made
        assert made_ref() is not None
    assert made_ref() is None
    # what is alive as one change ends (its request) and garbage after it goes as the next
    # ends: a collection of the young generations only would have made it old by then
    request, ref = cycle()
    with gc_paused(freeze=False):
        pass
    del request
    with gc_paused(freeze=False):
        pass
    assert ref() is None
    # the same with freeze=True keeps it: what start-up and programming a switch accept
    request, ref = cycle()
    with gc_paused(freeze=True):
        pass
    del request
    gc.collect()
    assert ref() is not None
    gc.unfreeze()
    gc.collect()
    assert ref() is None


def test_change_times_log_each_step_and_the_bench_reads_them_back() -> None:
    """A change's log line gives each step's time; the control phase parses it per sample."""
    from bench.run import change_steps
    from lbrp_app.app import ChangeTimes

    now = iter([0.0012, 0.0030, 0.0151, 0.0352, 0.0412])
    times = ChangeTimes(0.0, clock=lambda: next(now))
    for step in ("lock", "edit", "diff", "commit", "save"):
        times.mark(step)
    assert str(times) == "lock 1.2, edit 1.8, diff 12.1, commit 20.1, save 6.0"
    assert times.total_ms() == pytest.approx(41.2)
    line = (f"2026-11-28 lbrp.app INFO change: 13.13.13.14:udp:9000 live in "
            f"{times.total_ms():.1f} ms ({times})")
    assert change_steps(line) == {"lock": 1.2, "edit": 1.8, "diff": 12.1, "commit": 20.1,
                                  "save": 6.0, "total": 41.2}
    assert change_steps("lbrp.app INFO switch 1 programmed: 3 flows") is None


def _app_with_one_switch(tmp_path: Path, refuse: set[int | str]
                         ) -> tuple[Any, Any, list[Any]]:
    """An app (not started) with one programmed stand-in switch refusing the messages
    at ``refuse``; returns it, its switch and the switches it was asked to reprogram."""
    from os_ken.lib import hub

    from lbrp_app import pipeline as pl
    from lbrp_app.app import LbrpApp, Switch
    from lbrp_app.model import Backend, Config, Service, ServiceKey
    from lbrp_app.switch import ChangeGate, XidTracker
    from tests.unit.test_switch import RefusingDatapath

    app = object.__new__(LbrpApp)  # the parts of __init__ a change uses, no OpenFlow
    key = ServiceKey("13.13.13.13", "tcp", 80)
    app.config = Config().with_service(Service(key, "web", (Backend("10.0.1.2", 80, 1),)))
    app.config_path = tmp_path / "lbrp.yaml"
    app.tracker, app.lock, app.changes = XidTracker(), hub.Semaphore(1), ChangeGate()
    dp = RefusingDatapath(app.tracker, refuse)
    sw = Switch(dp, ports=pl.Ports(1, 2), programmed=True)
    app.switches = {dp.id: sw}
    reprogrammed: list[Any] = []
    app._program = reprogrammed.append
    return app, sw, reprogrammed


def _add_backend(cfg: Any) -> Any:
    from lbrp_app.model import Backend

    svc = cfg.sorted_services()[0]
    return cfg.with_service(replace(svc, backends=(*svc.backends, Backend("10.0.1.3", 80, 1))))


def test_a_change_the_switch_may_hold_in_part_has_it_programmed_again(tmp_path: Path) -> None:
    """A message refused when added (the rest committed without it): the change is
    refused, nothing saved, and the switch is programmed again from the config kept."""
    from os_ken.lib import hub

    from lbrp_app.app import ChangeError

    app, sw, reprogrammed = _app_with_one_switch(tmp_path, refuse={1})
    before = app.config
    with pytest.raises(ChangeError, match="refused"):
        app.apply(_add_backend)
    hub.sleep(0)  # the reprogramming runs once the change has let go of the lock
    assert reprogrammed == [sw.dp] and not sw.programmed
    assert app.config is before and not app.config_path.exists()
    # refused at the commit: OVS undid the bundle, so the switch keeps its program
    app, sw, reprogrammed = _app_with_one_switch(tmp_path, refuse={"commit"})
    before = app.config
    with pytest.raises(ChangeError, match="refused"):
        app.apply(_add_backend)
    hub.sleep(0)
    assert reprogrammed == [] and sw.programmed
    assert app.config is before and not app.config_path.exists()
    # and a change it takes is saved and current
    app, sw, reprogrammed = _app_with_one_switch(tmp_path, refuse=set())
    app.apply(_add_backend)
    assert len(app.config.sorted_services()[0].backends) == 2 and app.config_path.exists()


def test_a_save_that_fails_after_its_rename_leaves_the_file_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's fsync fails once the new file is in place: the change is refused,
    rolled back on the switch, and the file holds the config kept (a restart must not
    bring the refused change back)."""
    import os
    import stat

    from lbrp_app import config
    from lbrp_app.app import ChangeError

    app, sw, _ = _app_with_one_switch(tmp_path, refuse=set())
    before = app.config
    config.save(app.config_path, before)
    real_fsync, failed = os.fsync, []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and not failed:
            failed.append(fd)
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(ChangeError, match="could not save"):
        app.apply(_add_backend)
    assert failed and app.config is before and sw.programmed
    assert config.load(app.config_path) == before
