"""Billing periods: ``YYYY-MM`` months as date bounds."""

from __future__ import annotations

import calendar
import re
from datetime import date


def month_bounds(period: str) -> tuple[date, date]:
    """``"2026-10"`` -> ``(date(2026, 10, 1), date(2026, 10, 31))``."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    year, month = int(period[:4]), int(period[5:])
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
