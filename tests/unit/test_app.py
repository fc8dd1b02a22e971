"""The app's own helpers that need no switch."""

from __future__ import annotations

import gc

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
    for step in ("lock", "diff", "staged", "commit", "save"):
        times.mark(step)
    assert str(times) == "lock 1.2, diff 1.8, staged 12.1, commit 20.1, save 6.0"
    assert times.total_ms() == pytest.approx(41.2)
    line = (f"2026-11-28 lbrp.app INFO change: 13.13.13.14:udp:9000 live in "
            f"{times.total_ms():.1f} ms ({times})")
    assert change_steps(line) == {"lock": 1.2, "diff": 1.8, "staged": 12.1, "commit": 20.1,
                                  "save": 6.0, "total": 41.2}
    assert change_steps("lbrp.app INFO switch 1 programmed: 3 flows") is None
