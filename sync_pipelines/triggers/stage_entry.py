"""A deal trigger: a deal that entered the ready-for-billing stage at a given time.

Its identity is (deal id, stage-entered time), never `hs_lastmodifieddate`, which every edit
moves (see `connectors/hubspot_stages.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sync_pipelines.connectors.hubspot_stages import entered_ms


@dataclass(frozen=True)
class StageEntry:
    """One trigger: a deal that entered the ready-for-billing stage at `entered_ms`."""

    deal_id: str
    entered_ms: int

    @property
    def run_key(self) -> str:
        # Dagster dedupes run keys per sensor: webhook and polling paths build the same key.
        return f"deal-{self.deal_id}-entered-{self.entered_ms}"

    def trigger_date(self, tz: str) -> date:
        """The trigger's day in the firm's time zone (time is billed up to and including it)."""
        return datetime.fromtimestamp(self.entered_ms / 1000, ZoneInfo(tz)).date()

    def period(self, tz: str) -> str:
        d = self.trigger_date(tz)
        return f"{d.year:04d}-{d.month:02d}"


def stage_entry(deal_id: str, properties: Mapping[str, object], stage: str) -> StageEntry | None:
    """The deal's trigger when it is in `stage` now and HubSpot says when it entered; else None
    (a deal that already left the stage is not billed)."""
    if (properties.get("dealstage") or "") != stage:
        return None
    ms = entered_ms(properties, stage)
    return None if ms is None else StageEntry(str(deal_id), ms)
