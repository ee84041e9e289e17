"""Which entries are billable for a period, and why every other one is not (DESIGN §5 "Selection")."""

from __future__ import annotations

import calendar
import re
from datetime import date

import numpy as np
import pandas as pd

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
EPOCH = date(1970, 1, 1)
MAX_ENTRY_CENTIHOURS = 2400  # 24 h


def period_bounds(period: str) -> tuple[date, date]:
    m = _PERIOD.match(period or "")
    if not m:
        raise ValueError(f"period must be 'YYYY-MM', got {period!r}")
    y, mo = int(m.group(1)), int(m.group(2))
    return date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1])


def day_number(d: date) -> int:
    return (d - EPOCH).days


def day_numbers(col: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 as int64 for a column of `datetime.date` (or datetime64)."""
    if len(col) == 0:
        return np.zeros(0, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return col.to_numpy().astype("datetime64[D]").astype(np.int64)
    return pd.to_datetime(col).to_numpy().astype("datetime64[D]").astype(np.int64)


def base_reasons(
    entries: pd.DataFrame,
    client_codes: np.ndarray,
    days: np.ndarray,
    period: str,
    today: date | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exclusion reason per entry (None = billable so far) and the still-billable mask; first failing rule wins.

    `client_codes` is -1 for a Harvest client with no rules. The "already billed on another
    key" rule needs the invoice key, so it is applied later by the engine. `today` (in the
    firm's timezone) excludes entries dated after it; None skips that rule.
    """
    start, end = period_bounds(period)
    n = len(entries)
    reasons = np.full(n, None, dtype=object)
    open_ = np.ones(n, dtype=bool)

    unmapped = client_codes < 0
    if unmapped.any():
        ids = entries["client_id"].to_numpy()[unmapped]
        names = entries["client_name"].to_numpy()[unmapped]
        pairs = pd.DataFrame({"id": ids, "name": names}).drop_duplicates("id")
        text = {int(i): f"Harvest client {int(i)} {nm!r} has no billing rules" for i, nm in zip(pairs["id"], pairs["name"])}
        reasons[unmapped] = pd.Series(ids).map(text).to_numpy()
        open_ &= ~unmapped

    outside = open_ & ((days < day_number(start)) | (days > day_number(end)))
    reasons[outside] = f"spent_date outside {period}"
    open_ &= ~outside

    running = open_ & entries["is_running"].to_numpy(dtype=bool)
    reasons[running] = "timer still running"
    open_ &= ~running

    not_billable = open_ & ~entries["billable"].to_numpy(dtype=bool)
    reasons[not_billable] = "not billable in Harvest"
    open_ &= ~not_billable

    # Records that cannot be true are never billed: nobody works more than 24 h in a day, and
    # time cannot be spent after today (a typo in Harvest, or an import gone wrong).
    centi = entries["hours_centi"].to_numpy(dtype=np.int64)
    too_long = open_ & (centi > MAX_ENTRY_CENTIHOURS)
    if too_long.any():
        hours_text = entries["hours_text"].to_numpy(dtype=object)[too_long]
        reasons[too_long] = [f"{h} h in one entry is more than 24 h: not billed (correct it in Harvest)"
                             for h in hours_text]
        open_ &= ~too_long
    if today is not None:
        future = open_ & (days > day_number(today))
        reasons[future] = f"dated after today ({today.isoformat()}, firm timezone): not billed"
        open_ &= ~future
    return reasons, open_
