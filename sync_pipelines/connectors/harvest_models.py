"""Pydantic models for the Harvest v2 records we read (hours and rates as Decimal).

Unknown fields are kept (``extra="allow"``) so nothing Harvest sends is lost; fields that some
Harvest responses omit (``client.currency``, ``project.code``, ``hours_without_timer`` ...) are
optional.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("binary float in a money/hours field (parse JSON with Decimal)")
    return value


class Ref(_Model):
    id: int
    name: str | None = None


class ClientRef(_Model):
    id: int
    name: str
    currency: str | None = None


class ProjectRef(_Model):
    id: int
    name: str
    code: str | None = None


class InvoiceRef(_Model):
    id: int
    number: str | None = None


class TimeEntry(_Model):
    id: int
    spent_date: date
    hours: Decimal
    rounded_hours: Decimal | None = None
    hours_without_timer: Decimal | None = None
    user: Ref
    client: ClientRef
    project: ProjectRef
    task: Ref
    notes: str | None = None
    billable: bool
    is_running: bool = False
    is_locked: bool = False
    locked_reason: str | None = None
    is_closed: bool = False
    is_billed: bool = False
    billable_rate: Decimal | None = None
    cost_rate: Decimal | None = None
    invoice: InvoiceRef | None = None
    started_time: str | None = None
    ended_time: str | None = None
    created_at: str | None = None
    updated_at: str

    _decimals = field_validator(
        "hours", "rounded_hours", "hours_without_timer", "billable_rate", "cost_rate", mode="before"
    )(_no_float)

    @field_validator("hours")
    @classmethod
    def _hours_sane(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v < 0:
            raise ValueError(f"hours must be a non-negative number, got {v}")
        return v


class Client(_Model):
    id: int
    name: str
    is_active: bool = True
    currency: str | None = None
    address: str | None = None
    statement_key: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Project(_Model):
    id: int
    name: str
    code: str | None = None
    is_active: bool = True
    is_billable: bool = True
    is_fixed_fee: bool = False
    bill_by: str | None = None
    hourly_rate: Decimal | None = None
    budget: Decimal | None = None
    budget_by: str | None = None
    fee: Decimal | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    client: ClientRef | None = None
    notes: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    _decimals = field_validator("hourly_rate", "budget", "fee", mode="before")(_no_float)
