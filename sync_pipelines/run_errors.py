"""What an operator needs from a failed Dagster step: the step and the user's own error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def step_errors(events: Iterable[Any], limit: int = 300) -> list[str]:
    """``"<step>: <innermost error>"`` for each step-failure event among ``events``.

    Dagster wraps the exception raised in a step; the innermost cause (e.g. the QuickBooks error
    naming the fault code) is what says what went wrong.
    """
    out = []
    for event in events:
        # `step_failure_data` raises (a CheckError) on every other event type, so the type is
        # tested first and the property read only on step failures.
        if not getattr(event, "is_step_failure", False):
            continue
        data = event.step_failure_data
        if data is None or data.error is None:
            continue
        error = data.error
        while error.cause is not None:
            error = error.cause
        out.append(f"{event.step_key}: {error.message.strip()[:limit]}")
    return out
