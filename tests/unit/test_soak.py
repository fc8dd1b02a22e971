"""The soak's attribution of a failed short session to a backend's removal."""

from __future__ import annotations

from tests.soak import RACE_S, during_a_removal

REMOVAL = "/services/13.13.13.13/tcp/8000/backends/10.0.1.4/8003"


def failure(t: float, after_s: float) -> dict[str, object]:
    return {"t": t, "after_s": after_s, "port": 40000, "stage": "reply", "error": "reset"}


def test_a_removal_during_the_session_or_just_before_its_start_is_named() -> None:
    removals = [(100.0, REMOVAL)]
    assert during_a_removal(failure(99.5, 0.6), removals) == REMOVAL  # during its life
    assert during_a_removal(failure(100.0 + RACE_S - 0.01, 1.0), removals) == REMOVAL


def test_a_removal_after_the_failure_or_well_before_the_start_is_not() -> None:
    removals = [(100.0, REMOVAL)]
    assert during_a_removal(failure(99.0, 0.5), removals) is None  # failed before it
    assert during_a_removal(failure(100.0 + RACE_S + 0.01, 2.0), removals) is None
    assert during_a_removal(failure(99.5, 0.6), []) is None
