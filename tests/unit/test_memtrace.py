"""The allocation-growth report of lbrp_app.memtrace, on a real tracemalloc."""

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrp_app import memtrace


@pytest.fixture
def tracing() -> Iterator[None]:
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start(1)
    try:
        yield
    finally:
        if not was:
            tracemalloc.stop()


def _grow(kept: list[bytes]) -> None:
    kept.extend(bytes(4096) for _ in range(256))  # 1 MiB from this line


def test_the_first_report_is_the_baseline_then_growth_names_the_site(tracing: None) -> None:
    trace, kept = memtrace.MemTrace(), []
    assert trace.report()[0].startswith("memtrace baseline: ")
    _grow(kept)
    lines = trace.report()
    assert lines[0].startswith("memtrace: ") and "since the baseline" in lines[0]
    top = lines[1]
    assert top.endswith(f"test_memtrace.py:{_grow.__code__.co_firstlineno + 1}"), lines
    kib = float(top.split()[1])  # "memtrace   +1030.0 KiB ..."
    assert 1024 <= kib < 1100, top


def test_growth_leaves_out_sites_that_shrank(tracing: None) -> None:
    kept: list[bytes] = []
    _grow(kept)
    before = memtrace.take()
    kept.clear()
    lines = memtrace.growth(before, memtrace.take())
    site = f"test_memtrace.py:{_grow.__code__.co_firstlineno + 1}"
    assert not [ln for ln in lines if ln.endswith(site)], lines


def test_install_needs_tracing_from_the_start() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("this interpreter traces already")
    assert memtrace.install() is False


def test_rss_reads_vmrss(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tx\nVmRSS:\t  68120 kB\n")
    assert memtrace.rss_kib(42, proc=tmp_path) == 68120
    (tmp_path / "42" / "status").write_text("Name:\tx\n")
    assert memtrace.rss_kib(42, proc=tmp_path) is None
    assert memtrace.rss_kib(43, proc=tmp_path) is None  # gone
    assert (memtrace.rss_kib() or 0) > 0  # this process
