"""Human-readable texts: QBO line descriptions and the rounding / hours notation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import lru_cache

MAX_DESCRIPTION = 4000  # QBO Line.Description limit


@lru_cache(maxsize=65536)
def hours(centi: int) -> Decimal:
    """Centihours as an exact 2-dp Decimal (1.5 h -> Decimal('1.50')); Decimals are immutable."""
    return Decimal(int(centi)).scaleb(-2)


def hours_text(centi: int) -> str:
    return f"{hours(centi)} h"


def money_text(amount: Decimal, currency: str) -> str:
    return f"{currency} {amount}"


def period_text(start: date, end: date) -> str:
    if start == end:
        return start.isoformat()
    return f"{start.isoformat()} to {end.isoformat()}"


def time_line_description(
    *, kind: str, detail: str, project: str | None, task: str | None, person: str | None,
    entry_date: date | None, notes: str | None, billed_centi: int, rate: Decimal | None, currency: str,
    service_start: date, service_end: date, raw_centi: int,
) -> str:
    if detail == "summary":
        label = "Professional services"
    elif detail == "project":
        label = project or "Project"
    elif detail == "task":
        label = task or "Services"
    elif detail == "person":
        label = person or "Services"
    elif detail == "task_person":
        label = f"{task} — {person}"
    else:  # entry
        label = f"{task} — {person}"
        if notes:
            label += f": {notes}"
    if project and detail not in ("project",):
        label += f" [{project}]"
    prefix = {"included": "Included in retainer: ", "overage": "Overage: "}.get(kind, "")
    rate_text = f"{currency} {rate}/h" if rate is not None else "NO RATE"
    text = f"{prefix}{label} — {hours_text(billed_centi)} @ {rate_text}"
    if raw_centi != billed_centi:
        text += f" ({hours_text(raw_centi)} worked)"
    text += f", {period_text(service_start, service_end)}"
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 1] + "…"
    return text
