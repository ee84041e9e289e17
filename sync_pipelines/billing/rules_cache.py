"""The rules file parsed once per version, for callers that ask often (the deal sensor ticks
every few seconds; a file with hundreds of clients takes long to validate).

A version is (path, mtime in ns, size): an edit changes at least one of them, so a changed file
is always read again, and an invalid one raises `RulesError` exactly like `load_rules`. A file
touched but not changed is not validated again either: `parse_rules` keeps valid texts by their
sha256 (billing/rules.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sync_pipelines.billing.rules import RulesError, RulesFile, load_rules

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int], RulesFile]] = {}
#: How many times a file was actually parsed (tests and the benchmark read it).
parses = 0


def cached_rules(path: str | Path) -> RulesFile:
    """`load_rules(path)`, parsed again only when the file's mtime or size changed."""
    global parses
    key = str(Path(path).resolve())
    try:
        st = os.stat(key)
    except OSError as exc:
        raise RulesError([f"<file>: cannot read {path}: {exc.strerror or exc}"]) from None
    version = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
    rules = load_rules(key)
    with _lock:
        parses += 1
        _cache[key] = (version, rules)
    return rules


def ready_for_billing_stage(path: str | Path) -> str | None:
    """The rules' `hubspot.ready_for_billing_stage`, or None when unset or the file is unreadable
    or invalid (the `billing_rules` asset reports that loudly; extracts must still run)."""
    try:
        rules = cached_rules(path)
    except RulesError:
        return None
    return rules.hubspot.ready_for_billing_stage if rules.hubspot else None
