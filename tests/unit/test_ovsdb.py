"""The pure parts of lbrp_app.ovsdb."""

from __future__ import annotations

import pytest

from lbrp_app.ovsdb import nat_reuse_caveat


@pytest.mark.parametrize("version", ["3.1.0", "3.1.2", "3.0.4", "2.17.7", "3.2.2", "2.15.0"])
def test_versions_before_the_conntrack_nat_fix_get_a_caveat(version: str) -> None:
    caveat = nat_reuse_caveat(version)
    assert caveat is not None and version in caveat and "source port" in caveat


def test_the_caveat_names_the_fixed_release_of_the_same_branch() -> None:
    assert "fixed in 3.1.3" in (nat_reuse_caveat("3.1.0") or "")
    assert "fixed in 2.17.8" in (nat_reuse_caveat("2.17.2") or "")
    assert "fixed in 2.17.8, 3.0.5, 3.1.3, 3.2.3 and 3.3.0" in (nat_reuse_caveat("2.15.0") or "")


@pytest.mark.parametrize("version", ["3.1.3", "3.1.7", "3.0.5", "2.17.8", "3.2.3", "3.3.0",
                                     "3.4.1", "4.0.0"])
def test_fixed_versions_get_none(version: str) -> None:
    assert nat_reuse_caveat(version) is None


@pytest.mark.parametrize("version", ["", "3.1", "unknown", "3.x.0"])
def test_unparsable_versions_make_no_claim(version: str) -> None:
    assert nat_reuse_caveat(version) is None
