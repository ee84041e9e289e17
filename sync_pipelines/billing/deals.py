"""HubSpot deal properties that override a client's rules for one Harvest project (DESIGN §5 "Deals")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import pandas as pd

from sync_pipelines.billing.rules import RATE_MAX_DECIMALS


@dataclass(frozen=True)
class DealRate:
    deal_id: str
    rate: Decimal
    from_: date | None

    @property
    def rule(self) -> str:
        return f"deal {self.deal_id} billing_hourly_rate"


@dataclass
class ProjectTerms:
    """Everything the deals linked to one Harvest project say about billing it."""

    project_id: int
    rates: list[DealRate] = field(default_factory=list)
    discount_percent: Decimal | None = None
    discount_deal: str | None = None
    not_to_exceed: Decimal | None = None
    nte_deal: str | None = None
    po_number: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def splits_lines(self) -> bool:
        """Lines of this project are kept apart (its discount or cap needs its own subtotal)."""
        return self.discount_percent is not None or self.not_to_exceed is not None


def cell_text(v: object) -> str | None:
    """A frame cell as stripped text; missing (None, NA, NaN) or blank -> None."""
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    s = str(v).strip()
    return s or None


OVERRIDES = ("billing_hourly_rate", "billing_discount_percent", "billing_not_to_exceed")


def is_blank(v: object) -> bool:
    """A cell that holds text, but only whitespace (a missing cell is not blank)."""
    return isinstance(v, str) and not v.strip()


def cell_decimal(v: object) -> Decimal | None:
    """A frame cell as a finite Decimal (None when missing); anything else raises ValueError."""
    s = cell_text(v)
    if s is None:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(s) from None
    if not d.is_finite():
        raise ValueError(s)
    return d


def deal_date(value: object, tz: ZoneInfo) -> date | None:
    """A HubSpot date/datetime property as a date in the firm's time zone."""
    s = cell_text(value)
    if s is None:
        return None
    if s.isdigit():  # epoch milliseconds
        return datetime.fromtimestamp(int(s) / 1000, tz).date()  # noqa: DTZ006 - tz given
    try:
        if len(s) == 10:
            return date.fromisoformat(s)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.date()
    return dt.astimezone(tz).date()


def project_terms(deals: pd.DataFrame | None, timezone: str) -> dict[int, ProjectTerms]:
    """Per Harvest project id, the merged terms of the deals linked to it.

    Several deals on one project: each hourly rate is a dated row; for discount, not-to-exceed
    and PO the most recent deal (closedate, else createdate, then deal id) that sets it wins.
    """
    out: dict[int, ProjectTerms] = {}
    if deals is None or len(deals) == 0 or "harvest_project_id" not in deals:
        return out
    tz = ZoneInfo(timezone)
    linked = deals[deals["harvest_project_id"].notna()]
    records = []
    for rec in linked.to_dict("records"):
        when = deal_date(rec.get("closedate"), tz) or deal_date(rec.get("createdate"), tz)
        records.append((when or date.min, str(rec["deal_id"]), rec, when))
    records.sort(key=lambda r: (r[0], r[1]))
    for _, deal_id, rec, when in records:
        pid = int(rec["harvest_project_id"])
        t = out.setdefault(pid, ProjectTerms(pid))
        for name in OVERRIDES:
            # A property set to "" says "this deal overrides" without saying how: falling back to
            # the client's rules could bill at a rate nobody agreed, so the invoice waits.
            if is_blank(rec.get(name)):
                t.problems.append(f"deal {deal_id} {name} is empty (\"\"): set the value the deal means "
                                  "(the client's own rate, for instance) or remove the deal's project link")
        try:
            rate = cell_decimal(rec.get("billing_hourly_rate"))
            if rate is not None:
                if rate < 0 or -rate.as_tuple().exponent > RATE_MAX_DECIMALS:  # type: ignore[operator]
                    raise ValueError(str(rate))
                t.rates.append(DealRate(deal_id, rate, when))
        except ValueError as exc:
            t.problems.append(f"deal {deal_id} billing_hourly_rate {str(exc)!r} is not a valid rate")
        try:
            pct = cell_decimal(rec.get("billing_discount_percent"))
            if pct is not None:
                if not (0 <= pct <= 100):
                    raise ValueError(str(pct))
                t.discount_percent, t.discount_deal = pct, deal_id
        except ValueError as exc:
            t.problems.append(f"deal {deal_id} billing_discount_percent {str(exc)!r} is not a percent")
        try:
            nte = cell_decimal(rec.get("billing_not_to_exceed"))
            if nte is not None:
                if nte < 0:
                    raise ValueError(str(nte))
                t.not_to_exceed, t.nte_deal = nte, deal_id
        except ValueError as exc:
            t.problems.append(f"deal {deal_id} billing_not_to_exceed {str(exc)!r} is not an amount")
        po = cell_text(rec.get("po_number"))
        if po is not None:
            t.po_number = po
    # two deals with a rate from the same day: the later deal id wins (records are sorted)
    return out
