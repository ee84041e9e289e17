"""Invoice grouping keys (`group_by: client | project | po`), stable across runs."""

from __future__ import annotations

import hashlib
import re

NO_PO = "no-po"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def po_group_key(po_number: str | None) -> str:
    """``po-<number>``; characters outside [A-Za-z0-9._-] (the key uses ':' as separator) become
    '-', and a short hash keeps two such numbers apart."""
    if po_number is None:
        return NO_PO
    slug = _SAFE.sub("-", po_number).strip("-")
    if slug != po_number or not slug:
        slug = f"{slug}-{hashlib.sha256(po_number.encode()).hexdigest()[:6]}".lstrip("-")
    return f"po-{slug}"


def group_key(group_by: str, project_id: int, po_number: str | None) -> str:
    if group_by == "client":
        return "all"
    if group_by == "project":
        return f"project-{int(project_id)}"
    if group_by == "po":
        return po_group_key(po_number)
    raise ValueError(f"unknown group_by {group_by!r}")
