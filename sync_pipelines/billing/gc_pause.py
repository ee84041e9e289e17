"""Python's cyclic garbage collector held off while a month is priced.

Pricing builds its output as ~10^5 lists and dicts (entry ids per line, rows per invoice) that all
live until the result is returned and contain no reference cycles. Each burst of allocations
triggers collections that re-scan every container alive, which cost up to a third of a 1,000,000
entry run (measured: benchmarks/reconcile.py, docs/benchmarks.md). Reference counting still frees
everything as usual; the collector resumes, as it was, when the last concurrent pricing ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_active = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    global _active, _was_enabled
    with _lock:
        if _active == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _was_enabled:
                gc.enable()
