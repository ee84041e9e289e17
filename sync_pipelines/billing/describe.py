"""Human-readable notation shared by line descriptions (the descriptions themselves are built
column-wise in invoices.py)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

MAX_DESCRIPTION = 4000  # QBO Line.Description limit


@lru_cache(maxsize=65536)
def hours(centi: int) -> Decimal:
    """Centihours as an exact 2-dp Decimal (1.5 h -> Decimal('1.50')); Decimals are immutable."""
    return Decimal(int(centi)).scaleb(-2)
