"""A node process returns freed heap memory to the OS (``kaires_fl.node.process``)."""

from __future__ import annotations

import os
import sys

import pytest

from kaires_fl.bench.soak import rss_mb
from kaires_fl.node.process import malloc_trim


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_returns_freed_fragmented_heap_to_the_os() -> None:
    """Freed buffers between live ones (a drained queue, a sync batch) stay resident
    until trimmed: after malloc_trim the process's RSS drops by most of what was freed."""
    trim = malloc_trim()
    assert trim is not None
    trim()
    before = rss_mb(os.getpid())
    assert before is not None
    bufs = [bytes(2000 + i % 7) for i in range(40_000)]  # ~80 MB through malloc
    keep = bufs[::50]  # a live buffer every 100 KB: the heap cannot shrink from its top
    del bufs
    freed = rss_mb(os.getpid())
    assert freed is not None and freed - before > 40
    trim()
    after = rss_mb(os.getpid())
    assert after is not None and after - before < (freed - before) / 2
    assert len(keep) == 800
