"""QuickBooks name lists (the `qbo_catalog` frame) as lookups by name."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class CatalogRef:
    id: str
    name: str
    active: bool
    currency: str | None = None


class Catalog:
    """Lookups of Customer / Item / Class / Term by name (exact first, then case-insensitive)."""

    def __init__(self, frame: pd.DataFrame | None) -> None:
        self._by: dict[tuple[str, str], CatalogRef] = {}
        self._by_fold: dict[tuple[str, str], CatalogRef] = {}
        self._sku: dict[str, CatalogRef] = {}
        if frame is None or len(frame) == 0:
            return
        # deterministic when QBO returns several records of one name: active first, then lowest id
        rows = frame.assign(_active=frame["active"].astype(bool)).sort_values(
            ["entity", "name", "_active", "id"], ascending=[True, True, False, True], kind="stable"
        )
        for entity, id_, name, active, currency, sku in zip(
            rows["entity"], rows["id"], rows["name"], rows["_active"], rows.get("currency", [None] * len(rows)),
            rows.get("sku", [None] * len(rows)),
        ):
            if not isinstance(name, str):
                continue
            ref = CatalogRef(str(id_), name, bool(active), currency if isinstance(currency, str) and currency else None)
            self._by.setdefault((entity, name), ref)
            self._by_fold.setdefault((entity, name.casefold()), ref)
            if entity == "Item" and isinstance(sku, str) and sku:
                self._sku.setdefault(sku, ref)

    def find(self, entity: str, name: str) -> CatalogRef | None:
        return self._by.get((entity, name)) or self._by_fold.get((entity, name.casefold()))

    def find_item(self, name_or_sku: str) -> CatalogRef | None:
        return self.find("Item", name_or_sku) or self._sku.get(name_or_sku)

    def find_by_sku(self, sku: str) -> CatalogRef | None:
        """The Item whose `sku` field is exactly `sku`."""
        return self._sku.get(sku)

    def resolve(self, entity: str, name: str, what: str) -> tuple[CatalogRef | None, str | None]:
        """(ref, problem): unknown or inactive references are problems that hold the invoice."""
        ref = self.find(entity, name)
        if ref is None:
            return None, f"unknown QuickBooks {what} {name!r}"
        if not ref.active:
            return ref, f"QuickBooks {what} {name!r} is inactive"
        return ref, None
