"""Pydantic models for the QuickBooks name-list entities we read (Customer, Item, Class, Term).

QuickBooks entities stay dicts at the client boundary (they are posted back and compared as
JSON); these models validate the catalog read so a malformed record is quarantined instead of
breaking the extract. Ids and SyncTokens are strings; amounts are Decimals.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, field_validator


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    Id: str
    SyncToken: str = "0"
    Active: bool = True

    @field_validator("Id", "SyncToken", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError(f"must be a string, got {v!r}")
        if isinstance(v, int):
            return str(v)
        return v


class Ref(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    value: str
    name: str | None = None


class Customer(_Entity):
    DisplayName: str
    CompanyName: str | None = None
    FullyQualifiedName: str | None = None
    CurrencyRef: Ref | None = None
    Balance: Decimal | None = None

    @property
    def name(self) -> str:
        return self.DisplayName

    @property
    def currency(self) -> str | None:
        return self.CurrencyRef.value if self.CurrencyRef else None


class Item(_Entity):
    Name: str
    FullyQualifiedName: str | None = None
    Type: str | None = None
    Sku: str | None = None
    UnitPrice: Decimal | None = None

    @property
    def name(self) -> str:
        return self.Name


class Class(_Entity):
    Name: str
    FullyQualifiedName: str | None = None
    SubClass: bool = False

    @property
    def name(self) -> str:
        if self.SubClass and self.FullyQualifiedName:
            return self.FullyQualifiedName
        return self.Name


class Term(_Entity):
    Name: str
    Type: str | None = None
    DueDays: int | None = None
    DayOfMonthDue: int | None = None

    @property
    def name(self) -> str:
        return self.Name


ENTITY_MODELS: dict[str, type[_Entity]] = {"Customer": Customer, "Item": Item, "Class": Class, "Term": Term}


class TaxRateRef(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    TaxRateRef: Ref
    TaxTypeApplicable: str | None = None
    TaxOrder: int | None = None


class TaxRateList(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    TaxRateDetail: list[TaxRateRef] = []


class TaxCode(_Entity):
    """A sales tax code; ``SalesTaxRateList`` points at the TaxRate entities it charges."""

    Name: str
    Taxable: bool | None = None
    TaxGroup: bool | None = None
    SalesTaxRateList: TaxRateList | None = None

    @property
    def name(self) -> str:
        return self.Name


class TaxRate(_Entity):
    """A tax rate; ``RateValue`` is a percentage (20 = 20 %), parsed as a Decimal."""

    Name: str
    RateValue: Decimal | None = None

    @field_validator("RateValue", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError(f"RateValue {v!r} arrived as a binary float")
        return v

    @property
    def name(self) -> str:
        return self.Name
