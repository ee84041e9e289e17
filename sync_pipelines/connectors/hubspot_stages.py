"""When a deal entered a pipeline stage (HubSpot's stage calculated properties).

`hs_lastmodifieddate` changes on any update, our own write-back included, so it cannot identify
a trigger. HubSpot's stage calculated properties can: for every pipeline stage id it keeps
`hs_v2_date_entered_<stageId>` (the current generation) and `hs_date_entered_<stageId>` (the
older one, still populated), a datetime set each time the record enters that stage. A deal that
leaves and re-enters the stage gets a new value, i.e. a new trigger; a re-delivered webhook, a
re-polled search result or an unrelated edit keeps the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

V2_PREFIX = "hs_v2_date_entered_"
LEGACY_PREFIX = "hs_date_entered_"


def entered_properties(stage: str) -> list[str]:
    """The deal properties that say when a deal entered `stage` (newest first)."""
    return [V2_PREFIX + stage, LEGACY_PREFIX + stage]


def parse_hubspot_datetime(value: object) -> int | None:
    """A HubSpot datetime property (ISO-8601, or epoch milliseconds as text) as epoch ms; None
    when missing or unreadable."""
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    if s.isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // timedelta(milliseconds=1)  # exact integer arithmetic, no float seconds


def entered_ms(properties: Mapping[str, object], stage: str) -> int | None:
    """When the deal (its `properties`) last entered `stage`, in epoch ms; None if HubSpot has no date."""
    for name in entered_properties(stage):
        ms = parse_hubspot_datetime(properties.get(name))
        if ms is not None:
            return ms
    return None


def iso_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


