"""Pydantic models for HubSpot CRM objects. Every property value is a string or null."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, field_validator


class CrmObject(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    properties: dict[str, str | None] = {}
    createdAt: str | None = None
    updatedAt: str | None = None
    archived: bool = False

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: object) -> object:
        # ids are numeric strings; accept a JSON integer but never a float or bool
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError(f"id must be a string, got {v!r}")
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("id is empty")
        return v

    @field_validator("properties", mode="before")
    @classmethod
    def _props_strings(cls, v: object) -> object:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("properties must be an object")
        for key, value in v.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"property {key!r} must be a string or null, got {type(value).__name__}")
        return v

    def prop(self, name: str) -> str | None:
        """The property value, with ``""`` normalised to None."""
        value = self.properties.get(name)
        return value if value not in (None, "") else None


class Deal(CrmObject):
    @property
    def dealname(self) -> str | None:
        return self.prop("dealname")

    @property
    def dealstage(self) -> str | None:
        return self.prop("dealstage")

    @property
    def hs_lastmodifieddate(self) -> str | None:
        return self.prop("hs_lastmodifieddate")


class Company(CrmObject):
    @property
    def name(self) -> str | None:
        return self.prop("name")


class LineItem(CrmObject):
    """A deal line item (``/crm/v3/objects/line_items``): ``name, hs_sku, price, quantity, amount,
    hs_product_id`` as strings. ``price`` and ``quantity``, when set, must be decimal text (a
    record with anything else is malformed and rejected with its raw payload)."""

    @field_validator("properties")
    @classmethod
    def _numbers(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for key in ("price", "quantity"):
            value = v.get(key)
            if value in (None, ""):
                continue
            try:
                d = Decimal(str(value).strip())
            except InvalidOperation:
                raise ValueError(f"property {key!r} is not a number: {value!r}") from None
            if not d.is_finite():
                raise ValueError(f"property {key!r} is not a finite number: {value!r}")
        return v

    @property
    def name(self) -> str | None:
        return self.prop("name")

    @property
    def sku(self) -> str | None:
        return self.prop("hs_sku")

    @property
    def price(self) -> str | None:
        return self.prop("price")

    @property
    def quantity(self) -> str | None:
        return self.prop("quantity")


class DealLineItem(BaseModel):
    """One line item of one deal (a line item belongs to one deal in HubSpot; if the API ever
    associates it with several, each pair is its own record)."""

    model_config = ConfigDict(frozen=True)

    deal_id: str
    line_item: LineItem
