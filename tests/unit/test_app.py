"""The app's own helpers that need no switch."""

from __future__ import annotations

import gc

import pytest

from lbrp_app.app import gc_paused


def test_gc_paused_restores_the_collector_as_it_found_it() -> None:
    """Bulk work pauses the cyclic GC; nesting and a disabled collector are respected."""
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not end the outer one
    assert gc.isenabled()
    # what the bulk work left alive is frozen out of later full collections
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # lists: always tracked by the collector
    with gc_paused():
        more = [[i] for i in range(1000)]
    assert gc.get_freeze_count() >= len(kept) + len(more)
    gc.unfreeze()
    # but cyclic garbage is collected first, not frozen for good
    import weakref

    class Node:
        pass

    with gc_paused():
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        ref = weakref.ref(cycle)
        del cycle
    assert ref() is None
    gc.unfreeze()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failed change")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left disabled, as found
    finally:
        gc.enable()
