"""Stopping `sync-pipelines bill` at a safe point when asked (SIGTERM, SIGINT / Ctrl-C).

A signal only sets a flag. The posting loop reads it between invoices and the billing command
between clients, so an invoice whose QuickBooks call has started always gets its ledger update:
a stop never leaves a key half-done (and if the process is killed instead, the ledger's pending
row and the DocNumber lookup cover it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_stop = threading.Event()
_signal_number: list[int] = []


def requested() -> bool:
    """True once a stop was asked for in this process."""
    return _stop.is_set()


def signal_name() -> str | None:
    return signal.Signals(_signal_number[0]).name if _signal_number else None


def exit_status() -> int:
    """The shell convention for a command ended by a signal: 128 + its number (130, 143)."""
    return 128 + (_signal_number[0] if _signal_number else signal.SIGTERM)


def request(signum: int = signal.SIGTERM) -> None:
    if not _signal_number:
        _signal_number.append(int(signum))
    _stop.set()


def reset() -> None:
    _stop.clear()
    _signal_number.clear()


@contextmanager
def stop_on_signals(notify=None) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT set the stop flag instead of killing the process.

    Must be entered on the main thread (Python delivers signals there); ``notify(name)`` is
    called on the first signal, e.g. to tell the operator that the run stops after the current
    invoice.
    """
    reset()

    def handler(signum: int, _frame: object) -> None:
        first = not requested()
        request(signum)
        if first and notify is not None:
            notify(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
