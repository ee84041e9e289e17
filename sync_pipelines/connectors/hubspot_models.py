"""Pydantic models for HubSpot CRM objects. Every property value is a string or null."""

from __future__ import annotations

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
